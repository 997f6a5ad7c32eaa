"""DreamerV3 machinery, method-agnostic: networks, distributions, RSSM, world model, actor-critic,
replay, checkpointing and logging. Knows nothing of teachers, retrieval or guidance."""
