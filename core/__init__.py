"""DreamerV3 machinery, method-agnostic: networks, distributions, RSSM, world model, actor-critic,
replay, checkpointing and logging; and the model-free DrQ-v2 agent (drqv2.py) with the same interface.
Knows nothing of teachers, retrieval or guidance."""
