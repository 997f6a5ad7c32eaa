"""GSA's own parts (transfer/components.py): `retrieval` (the offline trajectories nearest to the target's
reset frames, provided as the `retrieved` artifact), `task_data` (instead of retrieval, the target task's own
trajectories from the manifest, as GSA gave its baselines; method=jsrl) and `bc_prior` (a behaviour-cloned
policy on them, provided as the guidance `prior`). Rehearsal (student/rehearsal.py), the shift monitor (student/shift_monitor.py)
and guidance (student/guidance.py) are parts of their own; method=gsa lists all five.

Each attach function takes ctx: transfer's Context (transfer/context.py). Cached in the run directory so
that a resumed run keeps its choices: `retrieved.json` (trajectory ids), `retrieval.png` (query frames above
the retrieved first frames) and `bc_prior.pt`.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from envs import make_env
from student.bc import BCPolicy, train_bc, weight_ema
from student.guidance import GuidedActing
from teacher.data.dataset import OfflineDataset
from teacher.model import build_teacher

log = logging.getLogger(__name__)


@dataclass
class Retrieved:
    """The `retrieved` artifact: the offline dataset and the retrieved trajectories in it."""
    dataset: OfflineDataset      # the whole offline dataset
    indices: list[int]           # positions of the retrieved trajectories in `dataset`

    @cached_property
    def subset(self) -> OfflineDataset:
        """The retrieved trajectories alone (one view, shared by the parts that read them)."""
        return self.dataset.subset(self.indices)


def query_frames(env_cfg: dict, task: str, seed: int, max_action_dim: int, count: int) -> np.ndarray:
    """(Q, R, R, 3) uint8 reset observations of `task`, GSA's retrieval queries, from a fresh env on seed
    `seed` + 50,000 (distinct from training's); benchmarks.targets measures retrieval with the same frames."""
    env = make_env(env_cfg, task, seed + 50_000, max_action_dim)
    try:
        return np.stack([env.reset()["image"] for _ in range(count)])
    finally:
        env.close()


def reset_frames(ctx, count: int) -> np.ndarray:
    """The run's query frames (query_frames of its task and seed). ctx: transfer's Context."""
    run = ctx.run
    return query_frames(run.env, run.task, run.seed, run.max_action_dim, count)


def retrieved_indices(ctx, dataset: OfflineDataset) -> list[int]:
    """Indices of the retrieved trajectories: from the run directory, or retrieved now (and saved)."""
    from student.retrieval import retrieve
    m, path = ctx.method, ctx.run_dir / "retrieved.json"
    position = {row["id"]: i for i, row in enumerate(dataset.meta)}
    if path.exists():
        ids = json.loads(path.read_text())
        missing = [i for i in ids if i not in position]
        if missing:
            raise ValueError(f"{path} names {len(missing)} trajectories the dataset no longer holds (e.g. {missing[0]}); "
                             f"use the same dataset or a new run_dir")
        return [position[i] for i in ids]
    r = m.retrieval
    teacher = build_teacher(ctx.teacher, ctx.device)
    got = retrieve(dataset, teacher, ctx.run.teacher, reset_frames(ctx, r.queries), ctx.spec.native_action_dim,
                   k=r.k, index_type=r.index, metric=r.metric, max_rounds=r.max_rounds, allow_fewer=r.allow_fewer,
                   device=str(ctx.device), pca=r.get("pca"))
    log.info("retrieval: %s", got.describe())
    got.save_grid(ctx.run_dir / "retrieval.png", dataset)
    path.write_text(json.dumps([dataset.meta[int(i)]["id"] for i in got.indices]))
    ctx.log_once(got.metrics())
    return [int(i) for i in got.indices]


def bc_prior(ctx, dataset: OfflineDataset, indices: list[int]) -> BCPolicy:
    """The behaviour-cloned prior, trained once on the retrieved trajectories and kept in the run dir."""
    c, path = ctx.method.bc, ctx.run_dir / "bc_prior.pt"
    policy = BCPolicy(ctx.spec.action_mask, image_size=ctx.spec.image_size, encoder=c.get("encoder", "flat")).to(ctx.device)
    if path.exists():
        policy.load_state_dict(torch.load(path, map_location=ctx.device))
        return policy
    log.info("training the BC prior on %d retrieved trajectories for %d updates", len(indices), c.steps)
    average = weight_ema(policy, c.ema) if c.get("ema") else None
    losses = train_bc(policy, dataset, indices, c.steps, batch=c.batch, lr=c.lr, device=ctx.device,
                      rng=np.random.default_rng(ctx.run.seed), progress=ctx.run.progress, average=average)
    if average is not None:  # the prior that acts is the average of the weights (method.bc.ema)
        policy.load_state_dict(average.module.state_dict())
    ctx.log_once({"bc/first_loss": losses[0], "bc/final_loss": float(np.mean(losses[-10:]))})
    torch.save(policy.state_dict(), path)
    return policy


def attach_retrieval(ctx) -> None:
    """Retrieve (or read back) the trajectories for this run; provides ctx.artifacts["retrieved"]."""
    root = ctx.method.dataset or ctx.teacher["dataset"]["root"]
    dataset = OfflineDataset(root, max_action_dim=ctx.run.max_action_dim)
    indices = retrieved_indices(ctx, dataset)
    ctx.artifacts["retrieved"] = Retrieved(dataset, indices)


def attach_task_data(ctx) -> None:
    """The `task_data` part (JSRL-BC and GSA's other baselines): the target task's own trajectories, selected
    from the dataset manifest (no retrieval, no teacher needed); provides ctx.artifacts["retrieved"]."""
    m, task = ctx.method, ctx.run.task
    root = m.get("dataset") or (ctx.teacher or {}).get("dataset", {}).get("root")
    if not root:
        raise ValueError(f"method={m.name} needs offline data of the target task: pass method.dataset=DIR (a dataset "
                         f"from `python -m teacher.data.collect` holding {task} trajectories)")
    dataset = OfflineDataset(root, max_action_dim=ctx.run.max_action_dim)
    indices = [i for i, row in enumerate(dataset.meta) if row["task"] == task]
    if not indices:
        raise ValueError(f"{root} holds no trajectories of task {task!r}; collect some (python -m teacher.data.collect "
                         f"--dataset {root} --tasks {task} ...) or pass another method.dataset")
    log.info("task data: %d trajectories of %s in %s", len(indices), task, root)
    ctx.log_once({"task_data/trajectories": float(len(indices))})
    ctx.artifacts["retrieved"] = Retrieved(dataset, indices)


def attach_bc_prior(ctx) -> None:
    """The BC prior on the retrieved trajectories; provides ctx.artifacts["prior"]."""
    got = ctx.artifacts["retrieved"]
    prior = bc_prior(ctx, got.dataset, got.indices)
    ctx.artifacts["prior"] = lambda schedule, n: GuidedActing(prior, schedule, n)
