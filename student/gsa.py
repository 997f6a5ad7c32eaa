"""GSA's own parts (transfer/components.py): `retrieval` (the offline trajectories nearest to the target's
reset frames, provided as the `retrieved` artifact), `task_data` (instead of retrieval, the target task's own
trajectories from the manifest, as GSA gave its baselines; method=jsrl) and `bc_prior` (a behaviour-cloned
policy on them, provided as the guidance `prior`). Rehearsal (student/rehearsal.py), the shift monitor (student/shift_monitor.py)
and guidance (student/guidance.py) are parts of their own; method=gsa lists all five.

Cached in the run directory so that a resumed run keeps its choices: `retrieved.json` (trajectory
ids), `retrieval.png` (query frames above the retrieved first frames) and `bc_prior.pt`.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from envs import make_env
from student.bc import BCPolicy, train_bc
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


def reset_frames(trainer, count: int) -> np.ndarray:
    """(Q, R, R, 3) uint8 reset observations of the target task (seeds distinct from training)."""
    from omegaconf import OmegaConf
    cfg = trainer.cfg
    env = make_env(OmegaConf.to_container(cfg.env, resolve=True), cfg.task, cfg.seed + 50_000, cfg.max_action_dim)
    try:
        return np.stack([env.reset()["image"] for _ in range(count)])
    finally:
        env.close()


def retrieved_indices(trainer, dataset: OfflineDataset) -> list[int]:
    """Indices of the retrieved trajectories: from the run directory, or retrieved now (and saved)."""
    from student.retrieval import retrieve
    m, path = trainer.cfg.method, trainer.dir / "retrieved.json"
    position = {row["id"]: i for i, row in enumerate(dataset.meta)}
    if path.exists():
        ids = json.loads(path.read_text())
        missing = [i for i in ids if i not in position]
        if missing:
            raise ValueError(f"{path} names {len(missing)} trajectories the dataset no longer holds (e.g. {missing[0]}); "
                             f"use the same dataset or a new run_dir")
        return [position[i] for i in ids]
    r = m.retrieval
    teacher = build_teacher(trainer.teacher, trainer.device)
    got = retrieve(dataset, teacher, trainer.cfg.teacher, reset_frames(trainer, r.queries), trainer.spec.native_action_dim,
                   k=r.k, index_type=r.index, metric=r.metric, max_rounds=r.max_rounds, allow_fewer=r.allow_fewer,
                   device=str(trainer.device))
    log.info("retrieval: %s", got.describe())
    got.save_grid(trainer.dir / "retrieval.png", dataset)
    path.write_text(json.dumps([dataset.meta[int(i)]["id"] for i in got.indices]))
    trainer.logger_rows.append(got.metrics())
    return [int(i) for i in got.indices]


def bc_prior(trainer, dataset: OfflineDataset, indices: list[int]) -> BCPolicy:
    """The behaviour-cloned prior, trained once on the retrieved trajectories and kept in the run dir."""
    c, path = trainer.cfg.method.bc, trainer.dir / "bc_prior.pt"
    policy = BCPolicy(trainer.spec.action_mask, image_size=trainer.spec.image_size).to(trainer.device)
    if path.exists():
        policy.load_state_dict(torch.load(path, map_location=trainer.device))
        return policy
    log.info("training the BC prior on %d retrieved trajectories for %d updates", len(indices), c.steps)
    losses = train_bc(policy, dataset, indices, c.steps, batch=c.batch, lr=c.lr, device=trainer.device,
                      rng=np.random.default_rng(trainer.cfg.seed), progress=trainer.cfg.logger.progress)
    trainer.logger_rows.append({"bc/first_loss": losses[0], "bc/final_loss": float(np.mean(losses[-10:]))})
    torch.save(policy.state_dict(), path)
    return policy


def attach_retrieval(trainer) -> None:
    """Retrieve (or read back) the trajectories for this run; provides trainer.artifacts["retrieved"]."""
    cfg, m = trainer.cfg, trainer.cfg.method
    root = m.dataset or trainer.teacher["dataset"]["root"]
    dataset = OfflineDataset(root, max_action_dim=cfg.max_action_dim)
    indices = retrieved_indices(trainer, dataset)
    trainer.artifacts["retrieved"] = Retrieved(dataset, indices)


def attach_task_data(trainer) -> None:
    """The `task_data` part (JSRL-BC and GSA's other baselines): the target task's own trajectories, selected
    from the dataset manifest (no retrieval, no teacher needed); provides trainer.artifacts["retrieved"]."""
    cfg, m = trainer.cfg, trainer.cfg.method
    root = m.get("dataset") or (trainer.teacher or {}).get("dataset", {}).get("root")
    if not root:
        raise ValueError(f"method={m.name} needs offline data of the target task: pass method.dataset=DIR (a dataset "
                         f"from `python -m teacher.data.collect` holding {cfg.task} trajectories)")
    dataset = OfflineDataset(root, max_action_dim=cfg.max_action_dim)
    indices = [i for i, row in enumerate(dataset.meta) if row["task"] == cfg.task]
    if not indices:
        raise ValueError(f"{root} holds no trajectories of task {cfg.task!r}; collect some (python -m teacher.data.collect "
                         f"--dataset {root} --tasks {cfg.task} ...) or pass another method.dataset")
    log.info("task data: %d trajectories of %s in %s", len(indices), cfg.task, root)
    trainer.logger_rows.append({"task_data/trajectories": float(len(indices))})
    trainer.artifacts["retrieved"] = Retrieved(dataset, indices)


def attach_bc_prior(trainer) -> None:
    """The BC prior on the retrieved trajectories; provides trainer.artifacts["prior"]."""
    got = trainer.artifacts["retrieved"]
    prior = bc_prior(trainer, got.dataset, got.indices)
    trainer.artifacts["prior"] = lambda schedule, n: GuidedActing(prior, schedule, n)
