"""Offline datasets and teacher pretraining: generalist (label-free) and mixture (label-conditioned) teachers."""
