"""Offline datasets on disk: the format and its reader, sampler and torch loader (OfflineDataset);
the writer is teacher/data/writer.py (DatasetWriter); docs/dataset.md has the details. A dataset is a movable folder ROOT:
    ROOT/shards/<name>.h5  immutable HDF5 files, one group per trajectory (group name = trajectory id):
                           image (L, R, R, 3) uint8, chunked along time, lzf/gzip-compressed
                           action (L, native A) float32, action[t] = the action that LED to obs t, action[0] = 0
                           is_terminal (L,) bool;  reward (L,) float32 only if recorded
    ROOT/manifest.jsonl    one JSON row per trajectory (MANIFEST_FIELDS), appended once its shard is on disk
L = observations = transitions + 1. Reward is "marked" (evaluation only): returned only if with_reward.
"""
from __future__ import annotations

import collections
import copy
import json
import os
import pathlib
import warnings
import zlib

import h5py
import numpy as np

MANIFEST = "manifest.jsonl"
SHARDS = "shards"
MANIFEST_FIELDS = ("id", "shard", "length", "suite", "task", "embodiment", "action_dim", "policy",
                   "noise", "seed", "has_reward", "job", "source")
REQUIRED_META = ("suite", "task", "embodiment", "policy")
ROW_KEYS = ("id", "shard", "length", "action_dim")  # a manifest row has at least these
HOW_TO_CREATE = ("create one with `python -m teacher.data.collect ...` (roll out policies in the envs) or "
                 "`python -m teacher.data.importers {gsa,dreamer} SRC DATASET_ROOT` (import npz files)")
TIME_CHUNK = 32          # image chunks hold this many frames
OPEN_FILES = 32          # open shard handles kept per process (LRU)
CHUNK_CACHE = 1 << 20    # bytes of h5py chunk cache per open dataset


def read_manifest(root) -> list[dict]:
    """The rows of ROOT/manifest.jsonl in order; an unparsable line (a killed writer) is skipped, warning."""
    path = pathlib.Path(root) / MANIFEST
    if not path.is_file():
        return []
    rows = []
    with open(path, "rb") as f:
        for number, line in ((n, line) for n, line in enumerate(f, 1) if line.strip()):
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or not all(k in row for k in ROW_KEYS):
                    raise ValueError(f"not a manifest row (needs {ROW_KEYS})")
            except ValueError as e:
                warnings.warn(f"{path}:{number}: skipping an unparsable manifest line (a killed writer?): {e}")
                continue
            rows.append(row)
    return rows


def _sorted_values(values) -> list:
    return sorted(set(values), key=lambda v: (type(v).__name__, v))  # types may mix (e.g. None and str)


class OfflineDataset:
    """Reads a dataset folder: trajectory metadata, full trajectories, and uniform (B, T) windows with
    actions zero-padded to max_action_dim. Memory stays flat as the dataset grows: only the manifest
    rows are held; shard handles live in a small LRU and h5py's chunk cache is bounded."""

    def __init__(self, root, max_action_dim: int | None = None, where: dict | None = None, label_key: str = "task"):
        self.root = pathlib.Path(root)
        rows = read_manifest(self.root)
        if not rows:
            state = "does not exist" if not self.root.exists() else "holds no trajectories (no or empty manifest.jsonl)"
            raise FileNotFoundError(f"offline dataset {self.root} {state}; {HOW_TO_CREATE}")
        rows = self._filter(rows, where or {})
        rows, self.skipped = self._readable(rows)  # skipped: number of unreadable shards
        if not rows:
            raise FileNotFoundError(f"all {self.skipped} shards of {self.root} are unreadable; {HOW_TO_CREATE}")
        dims = [int(r["action_dim"]) for r in rows]
        self.action_dim = max(dims) if max_action_dim is None else int(max_action_dim)  # A
        for r in rows:
            if r["action_dim"] > self.action_dim:
                raise ValueError(f"trajectory {r['id']} ({r.get('embodiment')}) has action dim {r['action_dim']} > "
                                 f"max_action_dim={self.action_dim}; use max_action_dim >= {max(dims)}")
        if any(label_key not in r for r in rows):
            raise ValueError(f"label_key {label_key!r} is not a field of every manifest row; fields: {sorted(rows[0])}")
        self.label_key = label_key
        self._use(rows, _sorted_values(r[label_key] for r in rows))

    def _use(self, rows: list[dict], labels: list):
        """Hold these manifest rows; labels are given, so that subsets keep their parent's label indices."""
        self.meta, self.labels = rows, labels
        index = {v: k for k, v in enumerate(labels)}
        self.label = np.array([index[r[self.label_key]] for r in rows], np.int64)  # (N,) label index
        self.lengths = np.array([r["length"] for r in rows], np.int64)             # (N,) observations
        self.transitions = int((self.lengths - 1).sum())
        self.too_short = 0  # trajectories too short for the last sampled length (never drawn)
        self.skipped_trajectories = 0  # trajectories found unreadable while sampling
        self._bad, self._pools = set(), {}  # unreadable trajectories, {(T, with_reward): drawable indices}
        self._files, self._pid = collections.OrderedDict(), os.getpid()  # shard -> open h5py.File (LRU)
        return self

    def __len__(self) -> int:
        return len(self.meta)

    def subset(self, indices) -> OfflineDataset:
        """A view of trajectories `indices` (e.g. retrieved ones) with the same labels and action dim."""
        return copy.copy(self)._use([self.meta[int(i)] for i in indices], self.labels)

    def with_labels(self, key: str, labels: list | None = None) -> OfflineDataset:
        """A view of the same trajectories labelled by manifest field `key`, with label k = labels[k]
        (default: the values present, sorted), e.g. a teacher's label order or the retrieved domains."""
        if any(key not in r for r in self.meta):
            raise ValueError(f"label key {key!r} is not a field of every manifest row; fields: {sorted(self.meta[0])}")
        present = _sorted_values(r[key] for r in self.meta)
        labels = present if labels is None else list(labels)
        unknown = sorted(set(present) - set(labels), key=str)
        if unknown:
            raise ValueError(f"{self.root} has {key} values {unknown} outside the labels {labels}; filter them "
                             f"out or use a teacher pretrained on them")
        view = copy.copy(self)
        view.label_key = key
        return view._use(self.meta, labels)

    def split(self, fraction: float, seed: int = 0) -> tuple[OfflineDataset, OfflineDataset]:
        """(train, heldout) with the same labels and action dim: a trajectory is held out when a hash of
        (seed, id) is below fraction, so its side never changes as the dataset grows (at least one held)."""
        u = np.array([zlib.crc32(f"{seed}:{r['id']}".encode()) for r in self.meta]) / 2**32  # (N,) in [0, 1)
        held = u < fraction
        held[np.argmin(u)] |= fraction > 0  # at least one
        if held.all():
            raise ValueError(f"holding out {fraction} of {len(self)} trajectories leaves none to train on")
        return self.subset(np.flatnonzero(~held)), self.subset(np.flatnonzero(held))

    def _filter(self, rows: list[dict], where: dict) -> list[dict]:
        for key, allowed in where.items():
            allowed = set(allowed) if isinstance(allowed, (list, tuple, set, frozenset)) else {allowed}
            values = _sorted_values(r.get(key) for r in rows)
            rows = [r for r in rows if r.get(key) in allowed]
            if not rows:
                raise ValueError(f"no trajectory in {self.root} matches where[{key!r}] = {sorted(allowed, key=str)}; "
                                 f"values present: {values[:20]}")
        return rows

    def _readable(self, rows: list[dict]) -> tuple[list[dict], int]:
        """Drop the rows of shards that cannot be opened or do not hold what the manifest says."""
        by_shard = collections.defaultdict(list)
        for r in rows:
            by_shard[r["shard"]].append(r)
        bad = set()
        for shard, members in by_shard.items():
            try:
                with h5py.File(self.root / shard, "r") as f:
                    for r in members:
                        group = f[r["id"]]
                        if group["image"].len() != r["length"] or group["action"].shape[1] != r["action_dim"]:
                            raise ValueError(f"trajectory {r['id']} does not match its manifest row")
            except Exception as e:  # h5py raises OSError, KeyError, ValueError, ... for damaged files
                warnings.warn(f"skipping unreadable shard {self.root / shard} ({len(members)} trajectories): {e}")
                bad.add(shard)
        return [r for r in rows if r["shard"] not in bad], len(bad)

    def _group(self, i: int):
        """The h5py group of trajectory i, through a per-process LRU of open shard files."""
        if self._pid != os.getpid():  # a forked worker: never reuse the parent's handles
            self._files, self._pid = collections.OrderedDict(), os.getpid()
        shard = self.meta[i]["shard"]
        f = self._files.pop(shard, None)
        if f is None:
            f = h5py.File(self.root / shard, "r", rdcc_nbytes=CHUNK_CACHE)
            while len(self._files) >= OPEN_FILES:
                self._files.popitem(last=False)[1].close()
        self._files[shard] = f
        return f[self.meta[i]["id"]]

    def close(self):
        """Close the open shard handles (they reopen on demand)."""
        for f in self._files.values() if self._pid == os.getpid() else []:  # never a parent's handles
            f.close()
        self._files = collections.OrderedDict()

    def __getstate__(self):  # pickling (spawned loader workers): no file handles
        return dict(self.__dict__, _files=collections.OrderedDict())

    def _need_reward(self, i: int):
        if not self.meta[i].get("has_reward"):
            raise ValueError(f"trajectory {self.meta[i]['id']} has no reward; use where={{'has_reward': [True]}}")

    def read(self, i: int, with_reward: bool = False) -> dict:
        """Full unpadded arrays of trajectory i: image (L, R, R, 3) uint8, action (L, native A) float32,
        is_terminal (L,) bool, and reward (L,) float32 if with_reward."""
        if with_reward:
            self._need_reward(i)
        group = self._group(i)
        keys = ["image", "action", "is_terminal"] + (["reward"] if with_reward else [])
        return {k: group[k][()] for k in keys}

    def first_frames(self, indices) -> np.ndarray:
        """First observation of each listed trajectory: (N, R, R, 3) uint8."""
        return np.stack([self._group(int(i))["image"][0] for i in indices])

    def _pool(self, length: int, with_reward: bool) -> np.ndarray:
        """Indices of the trajectories a (length, with_reward) window can be drawn from."""
        key = (length, with_reward)
        if key not in self._pools:
            long_enough = self.lengths >= length
            self.too_short = int((~long_enough).sum())
            if self.too_short:  # once per (length, with_reward): pools are cached
                warnings.warn(f"{self.too_short} of {len(self)} trajectories in {self.root} are shorter than "
                              f"{length} observations and are never drawn")
            pool = np.array([i for i in np.flatnonzero(long_enough) if i not in self._bad], np.int64)
            if len(pool) == 0:
                raise ValueError(f"no readable trajectory in {self.root} has {length} observations (longest: "
                                 f"{self.lengths.max()}); sample shorter windows")
            for i in pool if with_reward else []:
                self._need_reward(int(i))
            self._pools[key] = pool
        return self._pools[key]

    def sample(self, batch: int, length: int, rng: np.random.Generator, with_reward: bool = False) -> dict:
        """B windows of T = length steps: a trajectory uniformly among those with >= T observations,
        then a uniform window start. Returns numpy arrays: image (B, T, R, R, 3) uint8, action (B, T, A)
        float32 zero-padded, action_mask (B, A) float32, is_first (B, T) bool, is_terminal (B, T) bool,
        label (B,) int64, traj (B,) int64, and reward (B, T) float32 if with_reward."""
        a = self.action_dim
        out = dict(action=np.zeros((batch, length, a), np.float32), action_mask=np.zeros((batch, a), np.float32),
                   is_first=np.zeros((batch, length), bool), is_terminal=np.zeros((batch, length), bool),
                   label=np.zeros(batch, np.int64), traj=np.zeros(batch, np.int64))
        if with_reward:
            out["reward"] = np.zeros((batch, length), np.float32)
        keys = ["image", "action", "is_terminal"] + (["reward"] if with_reward else [])
        b = 0
        while b < batch:
            i = int(rng.choice(self._pool(length, with_reward)))  # uniform over drawable trajectories
            start = int(rng.integers(self.lengths[i] - length + 1))
            try:
                group, window = self._group(i), slice(start, start + length)
                steps = {k: group[k][window] for k in keys}  # image (T, R, R, 3), action (T, native A), ...
            except Exception as e:  # damaged chunk: drop this trajectory from now on and draw again
                warnings.warn(f"skipping unreadable trajectory {self.meta[i]['id']} ({self.meta[i]['shard']}): {e}")
                self._bad.add(i)
                self._pools.clear()
                self.skipped_trajectories += 1
                continue
            frame = steps["image"].shape[1:]  # (R, R, 3)
            if "image" not in out:
                out["image"] = np.empty((batch, length, *frame), np.uint8)
            if frame != out["image"].shape[2:]:
                raise ValueError(f"trajectory {self.meta[i]['id']} has {frame} frames, others "
                                 f"{out['image'].shape[2:]}; keep one image size with `where`")
            d = steps["action"].shape[1]
            out["action"][b, :, :d] = steps.pop("action")  # dims d..A stay 0
            out["action_mask"][b, :d] = 1
            for key, value in steps.items():  # image, is_terminal, [reward]
                out[key][b] = value
            out["label"][b], out["traj"][b] = self.label[i], i
            b += 1
        out["is_first"][:, 0] = True  # every window starts at a trajectory start or cuts into one
        return out

    def loader(self, batch: int, length: int, workers: int = 0, seed: int = 0, with_reward: bool = False):
        """Endless iterator of sample() batches as torch tensors (a DataLoader over an IterableDataset,
        batch_size=None); each worker opens its own shard handles and seeds its rng with (seed, worker)."""
        import torch

        self._pool(length, with_reward)  # fail here, in the main process, with a clear error
        self.close()  # workers must not inherit open HDF5 handles
        stream = _torch_stream(self, batch, length, seed, with_reward)
        return iter(torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers))


def _torch_stream(dataset: OfflineDataset, batch: int, length: int, seed: int, with_reward: bool):
    """A torch IterableDataset yielding dataset.sample() batches as tensors, forever."""
    import torch

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            rng = np.random.default_rng([seed, getattr(torch.utils.data.get_worker_info(), "id", -1) + 1])
            while True:
                yield {k: torch.from_numpy(v) for k, v in dataset.sample(batch, length, rng, with_reward).items()}

        def __reduce__(self):  # the class is local: rebuild it by name in spawned workers
            return _torch_stream, (dataset, batch, length, seed, with_reward)

    return Stream()
