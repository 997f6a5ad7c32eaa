"""Offline data for teachers: the dataset format and reader (dataset), writer, collection by rolling out
policies (collect, policies), importers of published npz data, reward-free exploration (explore) and
GSA's non-curated dataset (noncurated)."""
