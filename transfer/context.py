"""What a method component (transfer/components.py) receives instead of the Trainer: a narrow `Context`.

A part's `attach(ctx)` reads its config slice (`method`), a few run-level settings (`run`), the env spec, run
directory, device, teacher, the agent's seams, the online replay and the artifacts of earlier parts, and switches
itself on through the registration seams below, which write into the Trainer (transfer/loop.py). A part keeps
no reference to the Trainer and reads no other part's attributes. student/ and teacher/ may not import transfer/,
so they use the Context duck-typed ("ctx: transfer's Context" in their docstrings).
"""
from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from core.agent import Agent
from core.replay import Replay
from envs.base import EnvSpec


@dataclass(frozen=True)
class RunSettings:
    """The run-level settings parts read (read-only; built from the run's config by the Trainer)."""
    seed: int
    task: str
    env: dict                  # the env config, resolved (for building an env of the target task)
    max_action_dim: int        # A, the padded action dim
    warmup: int                # trainer.warmup, env steps of random acting before updates start
    wm_opt: Any                # model.wm_opt, the world-model optimiser settings (the VAE's pretraining uses them)
    progress: bool             # logger.progress: show progress bars
    teacher: str | None        # the teacher file's path (cfg.teacher), None without one


@dataclass(frozen=True)
class Context:
    """One per Trainer, shared by its parts in attach order (what one part provides the next reads)."""
    method: Any                # cfg.method, the part's config slice (its switches and settings)
    run: RunSettings
    spec: EnvSpec              # the training envs' spec
    run_dir: pathlib.Path      # where the part caches what a resumed run must find again
    device: torch.device
    teacher: dict | None       # the teacher file's info (teacher.model.read_teacher), None without one
    resuming: bool             # the run dir holds a checkpoint: the Trainer restores state after attaching
    num_envs: int              # training envs acting in parallel (N)
    agent: Agent               # its seams: loss_terms, acting_observers, set_actor_input, attach, attach_actor,
                               # actor_update_hooks, wm, ac, act_dim
    replay: Replay             # the online replay (parts that sample online data read it)
    artifacts: dict            # {name: what an earlier part provides} (transfer/components.py)
    rng: Callable[[str, int], np.random.Generator]   # (name, seed) -> a stream the Trainer saves and restores
    add_acting_hook: Callable  # hook(obs list, actions (N, A) np, env step) -> executed actions (N, A)
    add_log_source: Callable   # source() -> {name: float}, merged into each train log row
    add_episode_source: Callable  # source(env index) -> {name: float}, merged into that env's finished episode's row
    log_once: Callable         # (row {name: float}) written once the logger exists (setup results)
    add_prior: Callable        # factory(num_envs) -> GuidedActing whose prior acts whole episodes (diagnostics)
    add_state: Callable        # (name, get () -> dict, load (dict) -> None): a part's counters, kept across a resume
    set_batch_source: Callable  # fn(B, T) -> world-model batch of numpy arrays, instead of replay.sample
    step: Callable[[], int]    # the loop's env step (frames) at call time
