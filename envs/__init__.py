"""Env construction by suite name, and the task registry.

Every suite module (envs/dmc.py, envs/metaworld.py, envs/driving.py, envs/carla.py) provides
    make(env_cfg: dict, task: str, seed: int, max_action_dim: int) -> env   (the contract of envs/base.py)
    tasks(env_cfg: dict) -> list[TaskInfo]      static registry rows, no simulator started
and optionally
    prepare(env_cfg: dict) -> None              run once in the parent before workers start
                                                (e.g. pick the GL backend so workers inherit it)
    check_task(task: str) -> None               ValueError (closest names, valid names) for an unknown
                                                task, without starting a simulator.
    check_options(env_cfg: dict) -> None        ValueError for a bad option value (e.g. a camera name)
    OPTIONS (or DEFAULTS)                       the env config keys the suite reads; check_env refuses others
Suite modules are imported lazily, so importing envs stays cheap (no simulator, no GL, no torch).
"""
from __future__ import annotations

import functools
import importlib

from envs.base import REPLAY_KEYS, EnvSpec, TaskInfo, did_you_mean, make_obs, unpad_action

__all__ = ["REPLAY_KEYS", "EnvSpec", "TaskInfo", "make_obs", "unpad_action", "make_env", "env_fns",
           "suite_module", "check_task", "check_options", "check_env", "SUITES"]

SUITES = {"dmc": "envs.dmc", "metaworld": "envs.metaworld", "driving": "envs.driving", "carla": "envs.carla"}


def suite_module(suite: str):
    if suite not in SUITES:
        raise ValueError(f"unknown env suite {suite!r}; known suites: {', '.join(SUITES)}")
    return importlib.import_module(SUITES[suite])


def knows(suite: str, task: str) -> bool:
    """Does the suite know the task (by its check_task; no simulator starts)?"""
    check = getattr(suite_module(suite), "check_task", None)
    try:
        return check is not None and check(task) is None
    except ValueError:
        return False


def check_task(env_cfg: dict, task: str) -> None:
    """One clear ValueError, in this process, for a task the suite does not know: the closest names, or
    the suite to pick when another suite has the task (e.g. a Meta-World task with env=dmc)."""
    suite = env_cfg.get("suite")
    check = getattr(suite_module(suite), "check_task", None)
    if check is None:
        return
    try:
        check(task)
    except ValueError as err:
        other = next((s for s in SUITES if s != suite and knows(s, task)), None)
        if other is not None:
            raise ValueError(f"{task!r} is a {other} task, not a {suite} one: add env={other} "
                             f"(or pick a {suite} task)") from None
        if "Did you mean" not in str(err):  # no close name here: a close one in another suite?
            for other in (s for s in SUITES if s != suite):
                hint = did_you_mean(task, [row.task for row in suite_module(other).tasks({})])
                if hint:
                    raise ValueError(f"unknown {suite} task {task!r}.{hint[:-1]} with env={other}?") from None
        raise


POSITIVE = ("action_repeat", "image_size", "episode_frames")  # options every suite reads as ints >= 1


def check_options(env_cfg: dict) -> None:
    """One clear ValueError, in this process, for an env option the suite does not read (with the closest
    names) or a bad value (e.g. a camera the scene does not have); no simulator starts."""
    suite = env_cfg.get("suite")
    module = suite_module(suite)
    known = tuple(getattr(module, "OPTIONS", None) or getattr(module, "DEFAULTS", {}))
    for key in env_cfg:
        if key != "suite" and key not in known:
            raise ValueError(f"unknown env option {key!r} for the {suite} suite.{did_you_mean(key, known)} "
                             f"Options: {', '.join(known)}")
    for key in POSITIVE:
        value = env_cfg.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"env.{key} must be an integer >= 1; got {value!r}")
    check = getattr(module, "check_options", None)
    if check is not None:
        check(env_cfg)


def check_env(env_cfg: dict, task: str) -> None:
    """check_options then check_task: what env_fns does before any worker starts."""
    check_options(env_cfg)
    check_task(env_cfg, task)


def make_env(env_cfg: dict, task: str, seed: int, max_action_dim: int):
    """Builds one env of suite env_cfg["suite"]; missing optional keys take the suite defaults."""
    return suite_module(env_cfg.get("suite")).make(dict(env_cfg), task, seed, max_action_dim)


def env_fns(env_cfg: dict, task: str, seed: int, max_action_dim: int,
            count: int) -> list[functools.partial]:
    """`count` picklable env builders with seeds seed, seed+1, ... (for envs.workers.EnvPool)."""
    cfg = dict(env_cfg)
    check_env(cfg, task)  # here, before any worker starts: one line instead of a worker's traceback
    prepare = getattr(suite_module(cfg.get("suite")), "prepare", None)
    if prepare is not None:
        prepare(cfg)
    return [functools.partial(make_env, cfg, task, seed + i, max_action_dim) for i in range(count)]
