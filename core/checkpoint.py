"""Atomic checkpoint files and RNG-state capture."""
from __future__ import annotations

import os
import pathlib
import random

import numpy as np
import torch


def rng_state() -> dict:
    state = dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state())
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path, payload: dict):
    """Write to a temp file then rename, so a kill never leaves a half-written checkpoint."""
    path = pathlib.Path(path)
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load(path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise RuntimeError(f"checkpoint {path} is unreadable ({e}). Move it away to start this run "
                           f"directory afresh, or pick another run_dir.") from e
