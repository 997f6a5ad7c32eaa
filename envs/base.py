"""The env contract shared by every suite (DMC, Meta-World, CARLA, local driving).

An env is stepped with a PADDED action of size ``spec.max_action_dim`` (float32 in [-1, 1]);
only the first ``spec.native_action_dim`` entries reach the simulator, the rest must be zero.
``reset()`` and ``step(action)`` both return one observation dict:

    image        uint8 (R, R, 3)   rendered pixels, HWC, upright
    reward       float32 ()        reward summed over the action repeat (0.0 on reset)
    is_first     bool              True only for the observation returned by reset()
    is_last      bool              the episode ended (time limit or termination)
    is_terminal  bool              ended by a true terminal state (no bootstrap), False on time-outs
    log_*        any               metrics for logging only (e.g. log_success); never stored in replay

Envs never import torch, so that worker processes start fast.
"""
from __future__ import annotations

import dataclasses
import difflib

import numpy as np

REPLAY_KEYS = ("image", "reward", "is_first", "is_last", "is_terminal")


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    suite: str                # "dmc", "metaworld", "carla", "driving"
    task: str                 # e.g. "cartpole_balance"
    embodiment: str           # e.g. "cartpole"; used for padding / retrieval filters
    native_action_dim: int    # action dim of the simulator
    max_action_dim: int       # padded dim A shared by all embodiments
    episode_length: int       # agent steps per episode (after action repeat)
    action_repeat: int
    image_size: int = 64

    @property
    def action_mask(self) -> np.ndarray:
        """(A,) float32: 1 for native action dims, 0 for padding."""
        mask = np.zeros(self.max_action_dim, np.float32)
        mask[: self.native_action_dim] = 1.0
        return mask


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """One row of the task registry (``python -m envs.list``); known without building the env."""
    suite: str
    task: str
    embodiment: str
    native_action_dim: int
    episode_length: int       # agent steps per episode with the suite's default config
    action_repeat: int
    note: str = ""            # e.g. "custom", "hard", "source", "target"


def unpad_action(spec: EnvSpec, action) -> np.ndarray:
    """(A,) padded action -> (native,) float64 clipped to [-1, 1]; checks its size."""
    action = np.asarray(action, dtype=np.float64).reshape(-1)
    if action.shape[0] != spec.max_action_dim:
        raise ValueError(
            f"{spec.task}: expected a padded action of size {spec.max_action_dim}, got {action.shape[0]}")
    return np.clip(action[: spec.native_action_dim], -1.0, 1.0)


def make_obs(image, reward=0.0, is_first=False, is_last=False, is_terminal=False, **logs) -> dict:
    obs = dict(image=np.ascontiguousarray(image, dtype=np.uint8), reward=np.float32(reward),
               is_first=bool(is_first), is_last=bool(is_last), is_terminal=bool(is_terminal))
    obs.update({f"log_{k}": v for k, v in logs.items()})
    return obs


def did_you_mean(name: str, known) -> str:
    """" Did you mean 'x'?" for the closest known names (up to 3), or "" when none is close."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=3, cutoff=0.6)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
