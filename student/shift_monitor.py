"""Distribution-shift analysis (GSA Fig. 2): Wasserstein distances between the world model's features
of online data, retrieved offline data and the full offline dataset, logged during fine-tuning.

Features are posterior RSSM features (deter + stoch) of sampled sequences. The distance between two
feature clouds (N, F) is the sliced 1-Wasserstein distance: the mean over `projections` fixed random
unit directions of scipy.stats.wasserstein_distance between the projected samples.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.stats import wasserstein_distance


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, directions: np.ndarray) -> float:
    """a (N, F), b (M, F), directions (P, F) unit rows -> mean 1-D W1 over the P projections."""
    pa, pb = a @ directions.T, b @ directions.T  # (N, P), (M, P)
    return float(np.mean([wasserstein_distance(pa[:, j], pb[:, j]) for j in range(len(directions))]))


class ShiftMonitor:
    """A log source: every `every` env steps, distances between online / retrieved / offline.
    ctx: transfer's Context (its agent, device, replay, step and rng are read)."""

    def __init__(self, ctx, retrieved, offline, every: int, batch: int, length: int,
                 projections: int = 64, seed: int = 0):
        self.wm, self.device, self.replay, self.step = ctx.agent.wm, ctx.device, ctx.replay, ctx.step
        self.retrieved, self.offline = retrieved, offline
        self.every, self.batch, self.length = every, batch, length
        self.rng = ctx.rng("shift", seed)  # saved in checkpoints
        feat_dim = self.wm.rssm.feat_dim
        d = np.random.default_rng(seed).normal(size=(projections, feat_dim))
        self.directions = d / np.linalg.norm(d, axis=1, keepdims=True)  # (P, F)
        self.next = every

    @torch.no_grad()
    def features(self, batch: dict) -> np.ndarray:
        """Posterior features of a batch {key: (B, T, ...)} -> (B*T, F)."""
        wm, device = self.wm, self.device
        keys = ("image", "action", "is_first")
        post, _ = wm.observe({k: torch.as_tensor(batch[k]).to(device) for k in keys})
        return wm.rssm.feat(post).flatten(0, 1).float().cpu().numpy()

    def distances(self) -> dict:
        online = self.features(self.replay.sample(self.batch, self.length))
        retrieved = self.features(self.retrieved.sample(self.batch, self.length, self.rng))
        offline = self.features(self.offline.sample(self.batch, self.length, self.rng))
        w = lambda a, b: sliced_wasserstein(a, b, self.directions)  # noqa: E731
        return {"shift/online_retrieved": w(online, retrieved), "shift/online_offline": w(online, offline),
                "shift/retrieved_offline": w(retrieved, offline)}

    def __call__(self) -> dict:
        step = self.step()
        if not self.every or step < self.next:
            return {}
        self.next = (step // self.every + 1) * self.every
        return self.distances()


def attach(ctx) -> None:
    """The `shift_monitor` part (ctx: transfer's Context): logs the distances every method.shift.every env steps."""
    s, got = ctx.method.shift, ctx.artifacts["retrieved"]
    ctx.add_log_source(ShiftMonitor(ctx, got.subset, got.dataset, s.every, s.batch, s.length, seed=ctx.run.seed))
