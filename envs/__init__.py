"""Env construction by suite name: make_env() builds one env, env_fns() picklable builders for
EnvPool. Suite modules are imported lazily, so importing envs stays cheap (no simulator, no GL).
"""
from __future__ import annotations

import functools

from envs.base import REPLAY_KEYS, EnvSpec, make_obs, unpad_action

__all__ = ["REPLAY_KEYS", "EnvSpec", "make_obs", "unpad_action", "make_env", "env_fns"]

SUITES = ("dmc",)


def make_env(env_cfg: dict, task: str, seed: int, max_action_dim: int):
    """Builds one env of suite env_cfg["suite"]; missing optional keys take the suite defaults."""
    suite = env_cfg.get("suite")
    if suite == "dmc":
        from envs.dmc import DMCEnv  # noqa: PLC0415
        keys = ("action_repeat", "image_size", "episode_frames", "camera")
        kwargs = {k: env_cfg[k] for k in keys if env_cfg.get(k) is not None}
        return DMCEnv(task, seed, max_action_dim, **kwargs)
    raise ValueError(f"unknown env suite {suite!r}; known suites: {', '.join(SUITES)}")


def env_fns(env_cfg: dict, task: str, seed: int, max_action_dim: int,
            count: int) -> list[functools.partial]:
    """`count` picklable env builders with seeds seed, seed+1, ... (for envs.workers.EnvPool)."""
    if env_cfg.get("suite") == "dmc":
        from envs.gl import setup_gl  # noqa: PLC0415
        setup_gl()  # probe GL once here; the workers inherit MUJOCO_GL
    cfg = dict(env_cfg)
    return [functools.partial(make_env, cfg, task, seed + i, max_action_dim) for i in range(count)]
