"""Pessimism in imagination: an uncertainty penalty on imagined rewards (MOPO-style; method.pessimism.scale > 0).

Why: on Meta-World box-close the actor learns to steer imagination into states where the reward head pays far
more than the real env does (imagined return of its own policy 1.7-4.5x the real one, while the model's open-loop
prediction along the real actions stays within 0.6-1.5x; docs/results/noncurated_mw/session17/NOTES.md). The
model is roughly right where the data is and wrong where the actor goes; the actor's objective should count that.

How (method.pessimism.kind), each ensemble trained with the world model as a loss term:
- dynamics: K next-state predictors (teacher.data.explore.Disagreement, as Plan2Explore's) guess, for each imagined
  transition (feat_t, a_t), K next stochastic states; the reward head scores each with the imagined next
  deterministic state: spread_t = std_k r^(deter_{t+1}, stoch^k_{t+1}).
- reward: K reward heads fitted to the labelled rewards: spread_t = std_k r^k(feat_{t+1}).
The spread is in reward units; the penalty is subtracted from what the actor and critic see:

    r~_t = r^(feat_{t+1}) - scale * spread_t                                               (relative=false)
    r~_t = r^(feat_{t+1}) - scale * |r|_ref * relu(spread_t / spread_ref - 1)               (relative=true)

relative: spread_ref and |r|_ref are EMAs of the spread on the world-model batch's real transitions and of its mean
|labelled reward| (Reference): no penalty where imagination is as certain as the data, and a penalty in units of a
typical reward per unit of excess relative uncertainty, so that one scale means the same on every task.
Where the data pins the transition down the heads agree and nothing changes; where the actor leaves the data they
disagree and the imagined reward shrinks. scale 0 switches the part off. Logs train/pessimism_spread (mean std
over heads) and train/pessimism_share (the penalty over the mean |imagined reward|).
"""
from __future__ import annotations

import torch
from torch import nn

from core.nets import mlp
from teacher.data.explore import Disagreement


class NextStateSpread(Disagreement):
    """kind=dynamics: K next-state guesses (Disagreement's heads on (feat_t, a_t), its loss term), each scored by
    the reward head with the imagined next deterministic state; the spread of those K rewards."""

    def spread(self, wm, feats: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """feats (H+1, N, F), actions (H, N, A) -> (H, N)."""
        guesses = self.predict(feats[:-1], actions)                                 # (K, H, N, S*C)
        deter = feats[1:, ..., :wm.rssm.deter]                                      # (H, N, D)
        heads = torch.cat([deter.expand(len(guesses), *deter.shape), guesses.to(deter.dtype)], -1)  # (K, H, N, F)
        return wm.predict_reward(heads).std(0)


class RewardSpread(nn.Module):
    """kind=reward: K reward heads (the reward head's two-hot output, randomly initialised, unlike the zeroed main
    head, so that they differ where no data pins them down) fitted to the labelled rewards on the posterior
    features; the spread of their predictions at the imagined next states."""

    def __init__(self, feat_dim: int, bins: int, heads: int, layers: int, units: int):
        super().__init__()
        self.heads = nn.ModuleList(mlp(feat_dim, bins, layers, units) for _ in range(heads))

    def loss(self, agent, batch: dict, post: dict) -> dict:
        wm = agent.wm
        feat = wm.rssm.feat(post).detach()                                           # (B, T, F)
        mask = batch.get("reward_mask", torch.ones_like(batch["reward"]))            # (B, T) 1: a real reward label
        err = torch.stack([wm.twohot.loss(h(feat), batch["reward"]) for h in self.heads]).sum(0)  # (B, T)
        return {"reward_ensemble": err * mask / mask.mean().clamp(min=1e-6)}

    def spread(self, wm, feats: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """feats (H+1, N, F), actions (H, N, A) -> (H, N)."""
        return torch.stack([wm.twohot.decode(h(feats[1:])) for h in self.heads]).std(0)


class Reference(nn.Module):
    """relative=true: EMAs of the ensemble's spread on the batch's real (posterior) transitions and of the mean
    |labelled reward|, the yardsticks that make the penalty unit-free. Kept in checkpoints (buffers)."""

    def __init__(self, decay: float):
        super().__init__()
        self.decay = decay
        self.register_buffer("spread", torch.zeros(()))
        self.register_buffer("reward", torch.zeros(()))
        self.register_buffer("seen", torch.zeros(()))   # updates so far

    @torch.no_grad()
    def update(self, spread: torch.Tensor, reward: torch.Tensor) -> None:
        """spread, reward: 0-dim batch means. The weight of a new value is max(1 / updates, 1 - decay): a plain mean
        over the first 1 / (1 - decay) updates, then the EMA. (A plain EMA started from the first batch keeps the
        spread's yardstick near zero for hundreds of updates, because the zero-initialised reward head makes every
        guess score the same at first: measured ratio 57 and a penalty 1e5 x the reward 1k frames after warm-up.)
        No host sync (CUDA graphs)."""
        self.seen.add_(1.0)
        weight = torch.clamp(1.0 / self.seen, min=1.0 - self.decay)
        for ema, new in ((self.spread, spread), (self.reward, reward)):
            ema.lerp_(new.float(), weight)


class Pessimism:
    """The penalised reward (ac.reward_fn) and the ensemble's loss term (with `reference`, it also updates the
    yardsticks on each world-model batch)."""

    def __init__(self, ensemble: NextStateSpread | RewardSpread, scale: float, reference: Reference | None = None):
        self.ensemble, self.scale, self.reference = ensemble, float(scale), reference

    def loss(self, agent, batch: dict, post: dict) -> dict:
        if self.reference is not None:
            with torch.no_grad():
                feats = agent.wm.rssm.feat(post).transpose(0, 1)                       # (T, B, F)
                actions = batch["action"][:, 1:].transpose(0, 1)                       # (T-1, B, A)
                keep = ~batch["is_first"][:, 1:].bool().transpose(0, 1)               # (T-1, B) no reset inside
                spread = self.ensemble.spread(agent.wm, feats, actions)                # (T-1, B)
                mask = batch.get("reward_mask", torch.ones_like(batch["reward"]))     # (B, T)
                self.reference.update((spread * keep).sum() / keep.sum().clamp(min=1),
                                      (batch["reward"].abs() * mask).sum() / mask.sum().clamp(min=1))
        return self.ensemble.loss(agent, batch, post)

    def penalty(self, spread: torch.Tensor) -> torch.Tensor:
        """spread (H, N) -> penalty (H, N): scale x spread (absolute), or scale x the mean |reward| x the spread's
        excess over its level on real transitions, relu(spread / reference - 1) (relative)."""
        if self.reference is None:
            return self.scale * spread
        ref = self.reference
        return self.scale * ref.reward * torch.relu(spread / ref.spread.clamp(min=1e-8) - 1.0)

    def reward(self, wm, feats: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """feats (H+1, N, F), actions (H, N, A) -> penalised rewards (H, N) and metrics {pessimism_spread: mean
        std over heads, pessimism_share: the penalty over the mean |imagined reward|} (0-dim tensors). Gradients
        reach the actions (and states) through the frozen world model like the reward head's own: with dynamics
        backprop the actor is pushed away from uncertain transitions, not only paid less for them."""
        reward = wm.predict_reward(feats[1:])                                       # (H, N)
        spread = self.ensemble.spread(wm, feats, actions)                           # (H, N)
        penalty = self.penalty(spread)                                              # (H, N)
        metrics = {"pessimism_spread": spread.mean().detach(),
                   "pessimism_share": penalty.mean().detach() / reward.abs().mean().detach().clamp(min=1e-6)}
        if self.reference is not None:
            metrics["pessimism_ratio"] = metrics["pessimism_spread"] / self.reference.spread.clamp(min=1e-8)
        return reward - penalty, metrics


def attach(ctx) -> None:
    """The `pessimism` part (ctx: transfer's Context): the ensemble (a world-model loss term, kept in checkpoints)
    and the penalised imagined reward."""
    agent, c = ctx.agent, ctx.method.pessimism
    if not hasattr(agent, "wm"):
        raise ValueError("method.pessimism penalises a world model's imagination; this method's agent has none "
                         "(set method.pessimism.scale=0)")
    if agent.ac.reward_fn is not None:
        raise ValueError("method.pessimism: another component already replaces the imagined reward "
                         "(e.g. method=explore's disagreement); use one of them")
    if agent.wm.reward is None:
        raise ValueError("method.pessimism needs the world model's reward head (model.wm.reward_head=true)")
    rssm, kind = agent.wm.rssm, c.get("kind", "dynamics")
    if kind == "dynamics":
        ensemble = NextStateSpread(rssm.feat_dim, agent.act_dim, rssm.stoch_dim, c.heads, c.layers, c.units)
    elif kind == "reward":
        ensemble = RewardSpread(rssm.feat_dim, len(agent.wm.twohot.bins), c.heads, c.layers, c.units)
    else:
        raise ValueError(f"method.pessimism.kind={kind!r}: use dynamics (next-state guesses) or reward (reward heads)")
    reference = None
    if c.get("relative", False):  # the yardsticks ride in the ensemble's state (checkpoints)
        reference = Reference(float(c.get("decay", 0.99)))
        ensemble.add_module("reference", reference)
    agent.attach("pessimism", ensemble)
    part = Pessimism(ensemble, c.scale, reference)
    agent.loss_terms.append(part.loss)
    agent.ac.reward_fn = part.reward
