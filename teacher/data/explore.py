"""Reward-free exploration for offline-data collection (Plan2Explore-style ensemble disagreement).

Component `disagreement` (method=explore): an ensemble of K MLP heads predicts the next posterior
stochastic state from (feature_t, action_{t+1}); it trains with the world model (loss term), and
the actor maximises, in imagination, the ensemble's disagreement (variance across heads, mean over
dims) instead of the task reward. Rewards are still recorded by the env, but never drive behaviour.

`replay_episodes` / `import_replay` turn a run's replay into dataset episodes; `python -m transfer.explore`
trains one such agent per task through the one training loop and imports what it saw.
"""
from __future__ import annotations

import pathlib

import numpy as np
import torch
from torch import nn

from core.nets import mlp


class Disagreement(nn.Module):
    def __init__(self, feat_dim: int, act_dim: int, target_dim: int, heads: int, layers: int, units: int):
        super().__init__()
        self.heads = nn.ModuleList(mlp(feat_dim + act_dim, target_dim, layers, units) for _ in range(heads))

    def predict(self, feat: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """feat (..., F), action (..., A) -> (K, ..., S*C) predictions of the next stochastic state."""
        x = torch.cat([feat, action], -1)
        return torch.stack([h(x) for h in self.heads])

    def loss(self, agent, batch: dict, post: dict) -> dict:
        """Loss term: every head regresses the next posterior stoch; (B, T) with the last step zero."""
        feat = agent.wm.rssm.feat(post).detach()                          # (B, T, F)
        target = post["stoch"].flatten(-2).detach()                       # (B, T, S*C)
        pred = self.predict(feat[:, :-1], batch["action"][:, 1:])         # (K, B, T-1, S*C)
        err = ((pred - target[:, 1:]) ** 2).sum(-1).mean(0)               # (B, T-1)
        err = err * (~batch["is_first"][:, 1:].bool()).float()            # no target across a reset
        return {"disagreement": torch.cat([err, torch.zeros_like(err[:, :1])], 1)}

    def reward(self, wm, feats: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Intrinsic reward of imagined transitions: feats (H+1, N, F), actions (H, N, A) -> (H, N)."""
        with torch.no_grad():
            return self.predict(feats[:-1], actions).var(0).mean(-1)


def attach(ctx) -> None:
    """The `disagreement` part (ctx: transfer's Context): switch the agent to reward-free exploration."""
    agent, c = ctx.agent, ctx.method.explore
    rssm = agent.wm.rssm
    module = Disagreement(rssm.feat_dim, agent.act_dim, rssm.stoch_dim, c.heads, c.layers, c.units)
    agent.attach("disagreement", module)
    agent.loss_terms.append(module.loss)
    agent.ac.reward_fn = module.reward


KEYS = ("image", "action", "reward", "is_first", "is_last", "is_terminal")


def replay_episodes(run_dir: pathlib.Path):
    """Complete episodes of a run's replay, in order, per env stream: yields (job id, {key: (L, ...)}).
    Replay files split an episode at checkpoints, so a partial episode is carried into the next file;
    an episode still running at the end (no is_last) is left out."""
    files = sorted((run_dir / "replay").glob("s*.npz"))
    for stream in sorted({f.name[:3] for f in files}):
        carry, carry_id = None, None
        for path in (f for f in files if f.name.startswith(stream)):
            with np.load(path) as f:
                data = {k: f[k] for k in KEYS}
            starts = list(np.flatnonzero(data["is_first"]))
            bounds = [0, *starts] if not starts or starts[0] != 0 else starts
            for a, b in zip(bounds, bounds[1:] + [len(data["reward"])]):
                piece = {k: v[a:b] for k, v in data.items()}
                if piece["is_first"][0]:
                    carry, carry_id = piece, f"{run_dir.name}/{path.name}:{a}"
                elif carry is not None:  # the continuation of the carried episode
                    carry = {k: np.concatenate([carry[k], piece[k]]) for k in KEYS}
                if carry is not None and carry["is_last"][-1]:
                    yield carry_id, carry
                    carry = None


def import_replay(run_dir: pathlib.Path, writer, meta: dict, native_dim: int) -> tuple[int, int]:
    """Append every complete, not-yet-imported episode of a run's replay; returns (episodes, transitions)."""
    episodes = transitions = 0
    done = writer.done_jobs
    for job, ep in replay_episodes(run_dir):
        if job in done or len(ep["reward"]) < 2:
            continue
        traj = dict(image=ep["image"], action=ep["action"][:, :native_dim].copy(), reward=ep["reward"],
                    is_terminal=ep["is_terminal"])
        traj["action"][0] = 0.0
        writer.add(traj, {**meta, "source": job.split(":")[0], "job": job})
        episodes, transitions = episodes + 1, transitions + len(ep["reward"]) - 1
    writer.flush()
    return episodes, transitions
