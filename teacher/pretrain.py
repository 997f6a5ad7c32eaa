"""`python -m teacher.pretrain dataset=DIR [kind=generalist|mixture] [model=small] [steps=N] ...`

Reward-free pretraining of a teacher world model (encoder + RSSM + decoder; no reward or continue
head) on an offline dataset (teacher/data/dataset.py), with padded + masked actions:
- kind=generalist (GSA/WPT): no labels;
- kind=mixture (Vid2Act): conditioned on the one-hot source-task label (`label_key`, default task) as
  extra image channels of the encoder and as input to the transition.

One code path for one process and for many: under `torchrun --nproc_per_node N -m teacher.pretrain`
every process samples its own batches (seed + rank; `batch_size` is per process) and DDP averages
gradients (gloo on CPU, nccl on CUDA). Rank 0 logs (JSONL, TensorBoard, wandb), evaluates on held-out
trajectories (reconstruction, KL, open-loop error) and saves open-loop prediction grids
(RUN_DIR/openloop/step*.png) and videos (step*.mp4, logger.video; also to TensorBoard / wandb), a
resumable checkpoint (RUN_DIR/checkpoint.pt) and the teacher file (RUN_DIR/teacher.pt, see teacher/model.py).
Rerunning with the same run_dir resumes.
"""
from __future__ import annotations

import gc
import logging
import os
import pathlib
import time

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import distributed as dist
from torch import nn

from core import checkpoint
from core.logger import Logger, plot
from core.optim import Optimizer
from core.runtime import bf16_autocast, resolve_bf16, resolve_device, tune_malloc
from core.world_model import WorldModel
from teacher import openloop
from teacher.data.dataset import OfflineDataset
from teacher.model import save_teacher

log = logging.getLogger(__name__)
STEP_KEYS = ("image", "action", "is_first", "is_terminal")
LOSSES = {"train/loss": dict(lw=1), "heldout/loss": dict(marker="o"), "heldout/rec_image": dict(marker="."),
          "heldout/kl": dict(marker="x")}  # losses.png: line options per metric


class WorldModelLoss(nn.Module):
    """forward(batch) -> (scalar loss, metrics): the module DDP wraps, so gradients are all-reduced."""

    def __init__(self, wm: WorldModel, scales: dict):
        super().__init__()
        self.wm, self.scales = wm, dict(scales)

    def forward(self, batch: dict):
        losses, _, metrics = self.wm.loss(batch)  # {name: (B, T)}
        total = sum(self.scales.get(k, 1.0) * v.mean() for k, v in losses.items())
        metrics.update({f"loss_{k}": v.mean().detach() for k, v in losses.items()})
        return total, metrics


def distributed() -> tuple[int, int]:
    """(rank, world size); initialises the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


class Pretrainer:
    def __init__(self, cfg, run_dir, rank: int = 0, world: int = 1):
        self.cfg, self.rank, self.world = cfg, rank, world
        self.dir = pathlib.Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda" and world > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        self.bf16 = resolve_bf16(cfg.model.bf16, self.device)
        if cfg.kind not in ("generalist", "mixture"):
            raise ValueError(f"kind={cfg.kind!r}: use generalist (label-free) or mixture (label-conditioned)")
        where = OmegaConf.to_container(cfg.where, resolve=True) if cfg.where else None
        data = OfflineDataset(cfg.dataset, max_action_dim=cfg.max_action_dim, where=where, label_key=cfg.label_key)
        self.data, self.heldout = data.split(cfg.heldout, seed=0)
        self.labels = list(data.labels) if cfg.kind == "mixture" else []
        wm_cfg = OmegaConf.merge(cfg.model.wm, {"reward_head": False, "cont_head": False, "labels": len(self.labels)})
        size = data.first_frames([0]).shape[1]
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.wm = WorldModel({"image": (size, size, 3)}, cfg.max_action_dim, wm_cfg).to(self.device)
        self.loss_fn = WorldModelLoss(self.wm, cfg.model.loss_scales)
        if world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.loss_fn = nn.parallel.DistributedDataParallel(self.loss_fn, device_ids=ids)
        self.opt = Optimizer(self.wm.parameters(), cfg.model.wm_opt)
        self.step, self.wandb_id = 0, None
        self.ckpt = self.dir / "checkpoint.pt"
        if self.ckpt.exists():
            self._resume()
        torch.manual_seed(cfg.seed * 1000 + rank + self.step)  # per-rank sampling noise
        self.dataset_info = dict(root=str(pathlib.Path(cfg.dataset).resolve()), trajectories=len(data),
                                 transitions=int(data.transitions))

    # ---- one update ------------------------------------------------------------------------------
    def autocast(self):
        return bf16_autocast(self.device, self.bf16)

    def to_device(self, batch: dict) -> dict:
        keys = STEP_KEYS + (("label",) if self.labels else ())
        return {k: torch.as_tensor(batch[k]).to(self.device, non_blocking=True) for k in keys}

    def grads(self, batch: dict) -> dict:
        """Zero, forward, backward (DDP all-reduces here). Leaves averaged grads in the parameters."""
        self.opt.opt.zero_grad(set_to_none=True)
        with self.autocast():
            loss, metrics = self.loss_fn(self.to_device(batch))
        loss.backward()
        metrics["loss"] = loss.detach()
        return metrics

    def update(self, batch: dict) -> dict:
        metrics = self.grads(batch)
        metrics["grad_norm"] = self.opt.apply()
        self.step += 1
        return {k: float(v) for k, v in metrics.items()}

    # ---- evaluation ------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, logger: Logger | None = None) -> dict:
        """Held-out reconstruction, KL and open-loop error on the same held-out batches every time; the
        first batch's open-loop grid (and video, logger.video; to TensorBoard / wandb through `logger`)."""
        c, rng = self.cfg, np.random.default_rng(12345)
        rows = []
        self.wm.eval()
        for i in range(c.eval_batches):
            batch = self.to_device(self.heldout.sample(c.batch_size, c.batch_length, rng))
            with self.autocast():
                losses, _, metrics = self.wm.loss(batch)
            truth, pred = openloop.predict(self.wm, batch, c.openloop.context)
            err = openloop.error_per_step(truth, pred)  # (T,)
            rows.append(dict(rec_image=float(losses["rec_image"].mean()), kl=float(metrics["kl"]),
                             loss=float(sum(v.mean() for v in losses.values())),
                             openloop_mse=float(err[c.openloop.context:].mean())))
            if i == 0:
                openloop.save_grid(self.dir / "openloop" / f"step{self.step:07d}.png", truth, pred,
                                   c.openloop.context, c.openloop.samples)
                if c.logger.get("video", False):
                    openloop.save_video(self.dir / "openloop" / f"step{self.step:07d}.mp4", truth, pred,
                                        c.openloop.context, c.openloop.samples, logger, self.step)
        self.wm.train()
        return {f"heldout/{k}": float(np.mean([r[k] for r in rows])) for k in rows[0]}

    # ---- persistence -----------------------------------------------------------------------------
    def save(self):
        config = OmegaConf.to_container(self.cfg, resolve=True)
        checkpoint.save(self.ckpt, dict(wm=self.wm.state_dict(), opt=self.opt.state_dict(), step=self.step,
                                        rng=checkpoint.rng_state(), wandb_id=self.wandb_id, config=config))
        save_teacher(self.dir / "teacher.pt", self.wm, self.cfg.kind, self.labels, self.cfg.label_key,
                     self.dataset_info, self.step, config)
        self.last_save = time.time()

    def _resume(self):
        state = checkpoint.load(self.ckpt)
        old = state["config"]
        for key in ("kind", "max_action_dim", "label_key"):
            if old[key] != self.cfg[key]:
                raise ValueError(f"{self.ckpt} was trained with {key}={old[key]} but this run asks for "
                                 f"{key}={self.cfg[key]}; use another run_dir or the same settings")
        try:
            self.wm.load_state_dict(state["wm"])
        except RuntimeError as e:
            raise ValueError(f"{self.ckpt} holds a different architecture than model.wm now asks for; "
                             f"use another run_dir or the same model settings ({str(e).splitlines()[0]})") from e
        self.opt.load_state_dict(state["opt"])
        self.step, self.wandb_id = state["step"], state["wandb_id"]
        checkpoint.set_rng_state(state["rng"])
        log.info("resumed from %s at update %d", self.ckpt, self.step)

    def close(self):
        """Leave the process group cleanly. The DDP wrapper holds the group: if it were freed only at
        interpreter exit, gloo's threads could be torn down in the wrong order and abort the process
        (SIGABRT, 'terminate called without an active exception'). So: wait for every rank, free the
        wrapper, then destroy the group."""
        if self.world > 1 and dist.is_initialized():
            dist.barrier()
            self.loss_fn = self.loss_fn.module  # the wrapped loss, without the DDP reducer
            gc.collect()
            dist.destroy_process_group()

    # ---- loop ------------------------------------------------------------------------------------
    def run(self) -> dict:
        c, main = self.cfg, self.rank == 0
        logger = Logger(self.dir, c.logger, OmegaConf.to_container(c, resolve=True), c.steps, self.step,
                        self.wandb_id) if main else None
        if main:
            self.wandb_id = logger.wandb_id
            log.info("pretraining a %s teacher on %d trajectories (%d held out), %d transitions; %d process(es)",
                     c.kind, len(self.data), len(self.heldout), self.data.transitions, self.world)
        batches = self.data.loader(c.batch_size, c.batch_length, workers=c.workers,
                                   seed=c.seed * 1000 + 100 * self.rank + self.step)
        self.last_save, window, t0, result = time.time(), [], time.time(), {}
        if main and self.step == 0 and c.eval_every:  # the untrained model's held-out losses: the curve's start
            logger.write(0, self.evaluate(logger))
        try:
            while self.step < c.steps:
                window.append(self.update(next(batches)))
                if main:
                    logger.progress(self.step)
                    if self.step % c.log_every == 0 or self.step == c.steps:
                        rate = len(window) / (time.time() - t0)
                        row = {f"train/{k}": float(np.mean([m[k] for m in window])) for k in window[0]}
                        row.update({"perf/updates_per_s": rate,
                                    "perf/frames_per_s": rate * c.batch_size * c.batch_length * self.world})
                        logger.write(self.step, row)
                        window, t0 = [], time.time()
                    if self.step % c.eval_every == 0 or self.step == c.steps:
                        result = self.evaluate(logger)
                        logger.write(self.step, result)
                        log.info("update %d %s", self.step, " ".join(f"{k}={v:.4g}" for k, v in result.items()))
                    if time.time() - self.last_save > 60 * c.checkpoint_minutes:
                        self.save()
        finally:
            if main:
                self.save()
                logger.close()
        return result


@hydra.main(config_path="../configs", config_name="pretrain", version_base=None)
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    rank, world = distributed()
    trainer = Pretrainer(cfg, HydraConfig.get().runtime.output_dir, rank, world)
    result = trainer.run()
    if rank == 0:
        curves = plot(trainer.dir, LOSSES, "losses.png", "updates", "loss (sum over pixels + KL)", log_y=True)
        log.info("done: teacher at %s, curves in %s %s", trainer.dir / "teacher.pt", curves, result)
    trainer.close()


if __name__ == "__main__":
    if "WORLD_SIZE" not in os.environ:  # torchrun children inherit the launcher's environment
        tune_malloc("teacher.pretrain")
    main()
