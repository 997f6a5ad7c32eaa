"""The `gsa` component (method=gsa): retrieval at the start of fine-tuning, experience rehearsal and
execution guidance, attached to a transfer.loop.Trainer through its seams (batch_source,
acting_hooks, log_sources). Ablations are the config switches method.rehearsal / method.guidance.

Cached in the run directory so that a resumed run keeps its choices: `retrieved.json` (trajectory
ids), `retrieval.png` (query frames above the retrieved first frames) and `bc_prior.pt`.
"""
from __future__ import annotations

import json
import logging

import numpy as np
import torch

from envs import make_env
from student.bc import BCPolicy, train_bc
from student.guidance import GuidedActing, install
from student.rehearsal import Rehearsal
from student.shift import ShiftMonitor
from teacher.dataset import OfflineDataset
from teacher.model import build_teacher

log = logging.getLogger(__name__)


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


def attach(trainer) -> None:
    cfg, m = trainer.cfg, trainer.cfg.method
    if not (m.rehearsal or m.guidance or "vid2act" in m.components):
        return  # both off: this is method=finetune (the hybrid's VAE still learns from the retrieved data)
    root = m.dataset or trainer.teacher["dataset"]["root"]
    dataset = OfflineDataset(root, max_action_dim=cfg.max_action_dim)
    indices = retrieved_indices(trainer, dataset)
    retrieved = dataset.subset(indices)
    trainer.retrieval = (root, indices)  # for the vid2act component of method=hybrid
    if m.rehearsal:
        trainer.batch_source = Rehearsal(trainer.replay, retrieved, m.offline_share,
                                         seed=trainer.rng("rehearsal", cfg.seed))
    if m.shift.every:  # GSA Fig. 2: Wasserstein distances online / retrieved / offline
        trainer.log_sources.append(ShiftMonitor(trainer, retrieved, dataset, m.shift.every, m.shift.batch,
                                                m.shift.length, seed=cfg.seed))
    if m.guidance and m.get("prior", "bc") == "bc":  # prior=vae: the vid2act component guides
        prior = bc_prior(trainer, dataset, indices)
        install(trainer, lambda schedule, n: GuidedActing(prior, schedule, n))
