"""Actor-critic trained in imagination (DreamerV3): bounded-normal actor over PADDED actions,
symlog two-hot critic with a slow EMA target, lambda-returns, percentile return normalisation.

Padded action dims are zeroed by the mask for every action the actor produces (imagination and
acting), and excluded from entropy and log-probs.
"""
from __future__ import annotations

import contextlib
import copy
import math

import torch
from torch import nn

from core.nets import mlp, zero_last
from core.ops import ReturnNorm, TwoHot, lambda_returns


@contextlib.contextmanager
def frozen(module: nn.Module):
    """Let gradients flow THROUGH a module without accumulating into its parameters."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)


class Actor(nn.Module):
    """feat (..., F) -> bounded normal over A padded dims; mean in [-1, 1], std in [min, max]."""

    def __init__(self, inp: int, action_mask: torch.Tensor, layers: int, units: int,
                 min_std: float = 0.1, max_std: float = 1.0):
        super().__init__()
        self.register_buffer("mask", action_mask.float())  # (A,)
        self.net = mlp(inp, 2 * len(action_mask), layers, units)
        self.min_std, self.max_std = min_std, max_std

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, std = self.net(feat).float().chunk(2, -1)
        std = (self.max_std - self.min_std) * torch.sigmoid(std + 2.0) + self.min_std
        return torch.tanh(mean), std

    def sample(self, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """Reparameterised sample clipped to [-1, 1] (straight-through), padded dims zero. (..., A)"""
        return self.draw(mean, std)[0]

    def draw(self, mean: torch.Tensor, std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(clipped action as in sample(), raw unclipped sample), both (..., A). REINFORCE needs the
        raw sample: the log-prob of a clipped action under the unclipped normal is biased and, with
        mean near the bounds, collapses the policy's std (measured: entropy 1.3 -> -0.4 in 600
        actor updates, against 1.3 -> 0.5 with the raw sample)."""
        raw = mean + std * torch.randn_like(mean)
        a = raw + (raw.clamp(-1, 1) - raw).detach()
        return a * self.mask, raw * self.mask

    def mode(self, mean: torch.Tensor) -> torch.Tensor:
        return mean * self.mask

    def entropy(self, std: torch.Tensor) -> torch.Tensor:
        """(..., A) -> (...) entropy over native dims only."""
        return ((torch.log(std) + 0.5 * math.log(2 * math.pi * math.e)) * self.mask).sum(-1)

    def log_prob(self, action: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        z = (action - mean) / std
        return ((-0.5 * z ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)) * self.mask).sum(-1)


class ActorCritic(nn.Module):
    def __init__(self, feat_dim: int, action_mask: torch.Tensor, cfg):
        super().__init__()
        self.cfg = cfg
        self.actor = Actor(feat_dim, action_mask, cfg.layers, cfg.units, cfg.min_std, cfg.max_std)
        self.twohot = TwoHot(cfg.bins)
        self.critic = zero_last(mlp(feat_dim, cfg.bins, cfg.layers, cfg.units))
        self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.retnorm = ReturnNorm(cfg.retnorm_decay)
        # (wm, feats (H+1, N, F), actions (H, N, A)) -> (H, N), or ((H, N), {name: 0-dim tensor} logged with the
        # loss's metrics); None: the reward head
        self.reward_fn = None
        # Extra actor input (Vid2Act's action-replay features); a plain object, not a submodule:
        # .extra_dim, .imagined(feat (..., N, F)) -> (..., N, X), .acting(latent) -> (N, X) (Agent.policy)
        self.actor_input = None

    def set_actor_input(self, provider, feat_dim: int):
        """Widen the actor's input to [feat, provider features]; the actor is rebuilt (call before training)."""
        c, old = self.cfg, self.actor
        self.actor = Actor(feat_dim + provider.extra_dim, old.mask, c.layers, c.units, c.min_std, c.max_std).to(old.mask.device)
        self.actor_input = provider

    def actor_in(self, feat: torch.Tensor) -> torch.Tensor:
        """(..., N, F) imagined features -> the actor's input (..., N, F [+ E])."""
        if self.actor_input is None:
            return feat
        return torch.cat([feat, self.actor_input.imagined(feat)], -1)

    def value(self, feat: torch.Tensor, slow: bool = False) -> torch.Tensor:
        return self.twohot.decode((self.slow_critic if slow else self.critic)(feat))

    def imagine(self, wm, start: dict, horizon: int, with_dist: bool = False, mode: bool = False):
        """Roll the actor through the prior from N start states. Returns feats (H+1, N, F), the
        executed (clipped) actions (H, N, A) and the raw samples (H, N, A) for log-probs; with
        `with_dist` also the actor's mean and std at each step (H, N, A), computed with gradients to
        the actor's parameters even under no_grad (REINFORCE reuses them instead of running the actor
        again on the same states); the rollout itself stays off the graph. `mode`: the actor acts with its
        mean action instead of a sample (evaluation and diagnostics only)."""
        state, feats, actions, raws, means, stds = start, [wm.rssm.feat(start)], [], [], [], []
        for _ in range(horizon):
            with torch.enable_grad() if with_dist else contextlib.nullcontext():
                mean, std = self.actor(self.actor_in(feats[-1]))
            means.append(mean), stds.append(std)
            if mode:
                action = raw = self.actor.mode(mean)
            else:
                action, raw = self.actor.draw(mean.detach(), std.detach()) if with_dist else self.actor.draw(mean, std)
            state = wm.rssm.img_step(state, action)
            feats.append(wm.rssm.feat(state)), actions.append(action), raws.append(raw)
        out = torch.stack(feats), torch.stack(actions), torch.stack(raws)
        if not with_dist:
            return out
        with torch.enable_grad():  # stacking under no_grad would cut the graph
            return (*out, torch.stack(means), torch.stack(stds))

    def targets(self, feats: torch.Tensor, reward: torch.Tensor, cont: torch.Tensor, value: torch.Tensor | None = None):
        """feats (H+1, N, F), reward and cont (H, N) -> lambda-returns (H, N), the values they bootstrap
        from (H+1, N; `value` when given) and the step weights (H, N).

        DreamerV3 (ac.slow_target=false, ac.discount_weight=true): returns and the advantage baseline use
        the fast critic (the slow one only regularises it), and imagined step t is weighted by
        prod_{i<t} gamma * cont_i. The rule before 2026-11 (true / false): the slow critic, weights
        prod_{i<t} cont_i (1 everywhere without a continue head)."""
        c = self.cfg
        value = self.value(feats, slow=c.slow_target) if value is None else value  # (H+1, N)
        ret = lambda_returns(reward, c.discount * cont, value, c.lam)  # (H, N)
        step_disc = c.discount * cont if c.discount_weight else cont   # (H, N)
        weight = torch.cumprod(torch.cat([torch.ones_like(cont[:1]), step_disc[:-1]]), 0).detach()  # (H, N)
        return ret, value, weight

    def loss(self, wm, start: dict) -> tuple[torch.Tensor, dict]:
        """start: posterior states with (N, ...) leaves, detached. Returns actor+critic loss.

        Each network runs once per imagined state: with REINFORCE the actor's distributions from the
        rollout are reused for log-probs and entropy, and the fast critic's one forward pass gives both
        the values the returns bootstrap from (detached) and its own loss (with dynamics backprop the
        values must carry gradients to the states through a frozen critic, so the critic runs twice)."""
        c = self.cfg
        reinforce = c.grad != "dynamics"
        with frozen(wm), frozen(self.critic), torch.set_grad_enabled(not reinforce):
            feats, actions, raws, *dist = self.imagine(wm, start, c.horizon, with_dist=reinforce)
            extra = {}  # a reward_fn may return (reward, {name: 0-dim tensor}) to log alongside
            if self.reward_fn is None:
                reward = wm.predict_reward(feats[1:])                  # (H, N)
            else:
                reward = self.reward_fn(wm, feats, actions)            # (H, N)
                reward, extra = reward if isinstance(reward, tuple) else (reward, {})
            cont = wm.predict_cont(feats[1:])
            cont = torch.ones_like(reward) if cont is None else cont  # (H, N)
        shared = reinforce and not c.slow_target  # one fast-critic pass serves targets and critic loss
        logits = self.critic(feats.detach()) if shared else None      # (H+1, N, bins)
        with torch.set_grad_enabled(not reinforce), frozen(self.critic):
            ret, value, weight = self.targets(feats, reward, cont,
                                              self.twohot.decode(logits).detach() if shared else None)
        scale = self.retnorm.update(ret)
        adv = (ret - value[:-1].detach()) / scale
        mean, std = dist if reinforce else self.actor(self.actor_in(feats[:-1].detach()))  # (H, N, A)
        entropy = self.actor.entropy(std)
        if c.grad == "dynamics":
            actor_obj = adv
        else:
            actor_obj = self.actor.log_prob(raws.detach(), mean, std) * adv.detach()
        actor_loss = -(weight * (actor_obj + c.entropy * entropy)).mean()
        logits = logits[:-1] if shared else self.critic(feats[:-1].detach())  # (H, N, bins)
        critic_loss = self.twohot.loss(logits, ret.detach())
        critic_loss = critic_loss + c.slow_reg * self.twohot.loss(logits, self.value(feats[:-1].detach(), slow=True))
        critic_loss = (weight * critic_loss).mean()
        metrics = dict(actor_loss=actor_loss.detach(), critic_loss=critic_loss.detach(),
                       entropy=entropy.mean().detach(), imag_return=ret.mean().detach(),
                       imag_reward=reward.mean().detach(), return_scale=scale.detach(), **extra)
        return actor_loss + critic_loss, metrics

    @torch.no_grad()
    def update_slow(self):
        for slow, fast in zip(self.slow_critic.parameters(), self.critic.parameters()):
            slow.lerp_(fast, self.cfg.slow_fraction)
