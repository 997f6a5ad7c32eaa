"""Small numeric pieces: symlog, two-hot, lambda-returns, return normalisation (DreamerV3), DrQ's random shift
(augmentation of the BC prior and of DrQ-v2) and linear schedules."""
from __future__ import annotations

import torch
from torch import nn


def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(x.abs())


class TwoHot(nn.Module):
    """Symlog two-hot discretisation: 255 bins evenly spaced in symlog space over [low, high]."""

    def __init__(self, bins: int = 255, low: float = -20.0, high: float = 20.0):
        super().__init__()
        self.register_buffer("bins", torch.linspace(low, high, bins), persistent=False)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(...) raw values -> (..., bins) target probabilities."""
        bins = self.bins
        y = symlog(x.float()).clamp(bins[0], bins[-1])
        above = torch.bucketize(y, bins).clamp(max=len(bins) - 1)  # first bin >= y
        below = (above - 1).clamp(min=0)
        d_below = (y - bins[below]).abs()
        d_above = (bins[above] - y).abs()
        total = d_below + d_above
        same = total == 0
        w_below = torch.where(same, torch.ones_like(y), d_above / torch.where(same, 1.0, total))
        n = len(bins)
        return (nn.functional.one_hot(below, n) * w_below[..., None]
                + nn.functional.one_hot(above, n) * (1 - w_below)[..., None])

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """(..., bins) logits -> (...) expected value in raw space."""
        probs = torch.softmax(logits.float(), -1)
        return symexp((probs * self.bins).sum(-1))

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(..., bins) logits, (...) raw target -> (...) cross-entropy."""
        return -(self.encode(target.detach()) * torch.log_softmax(logits.float(), -1)).sum(-1)


def lambda_returns(reward: torch.Tensor, disc: torch.Tensor, value: torch.Tensor, lam: float) -> torch.Tensor:
    """TD(lambda) returns along dim 0.

    reward, disc: (H, N) for the transition t -> t+1 (disc = gamma * continue);
    value: (H+1, N) = V(s_t) for t = 0..H. Returns (H, N):
    R_t = r_t + disc_t * ((1 - lam) * V_{t+1} + lam * R_{t+1}),  R_H = V_H.
    """
    out = []
    ret = value[-1]
    for t in reversed(range(reward.shape[0])):
        ret = reward[t] + disc[t] * ((1 - lam) * value[t + 1] + lam * ret)
        out.append(ret)
    return torch.stack(out[::-1])


class ReturnNorm(nn.Module):
    """Scale = max(1, EMA(P95) - EMA(P05)) of returns, as in DreamerV3."""

    def __init__(self, decay: float = 0.99, low: float = 0.05, high: float = 0.95):
        super().__init__()
        self.decay = decay
        self.register_buffer("q", torch.tensor([low, high]), persistent=False)  # on the device: no copy per update
        self.register_buffer("lo", torch.zeros(()))
        self.register_buffer("hi", torch.zeros(()))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def update(self, ret: torch.Tensor) -> torch.Tensor:
        flat = ret.detach().float().flatten()
        if flat.numel() > 1_000_000:  # torch.quantile limit; a random subset is plenty
            flat = flat[torch.randint(0, flat.numel(), (1_000_000,), device=flat.device)]
        lo, hi = torch.quantile(flat, self.q)
        d = torch.where(self.initialised, self.decay, 0.0)
        self.lo.copy_(d * self.lo + (1 - d) * lo)
        self.hi.copy_(d * self.hi + (1 - d) * hi)
        self.initialised.fill_(True)
        return self.scale()

    def scale(self) -> torch.Tensor:
        return torch.clamp(self.hi - self.lo, min=1.0)


def random_shift(images: torch.Tensor, pad: int = 3, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ-style random shift of (B, Ch, R, R) images (any dtype, uint8 included): replicate-pad by
    `pad` pixels and crop back to (R, R) at an offset drawn uniformly from [0, 2 * pad]^2 per sample;
    all channels of a sample (all its stacked frames) shift alike. Done as one gather with clamped
    indices, which equals padding with edge pixels then cropping. Returns (B, Ch, R, R)."""
    if pad <= 0:
        return images
    b, c, h, w = images.shape
    shift = torch.randint(-pad, pad + 1, (b, 2), generator=generator).to(images.device)  # (B, 2): dy, dx
    rows = (shift[:, :1] + torch.arange(h, device=images.device)).clamp(0, h - 1)  # (B, R) source rows
    cols = (shift[:, 1:] + torch.arange(w, device=images.device)).clamp(0, w - 1)  # (B, R) source cols
    index = (rows[:, :, None] * w + cols[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)  # (B, Ch, R*R)
    return images.reshape(b, c, h * w).gather(2, index).reshape(b, c, h, w)


def linear_schedule(initial: float, final: float, duration: int, step: int) -> float:
    """initial + (final - initial) * min(step / duration, 1); `final` from the start when duration is 0."""
    frac = 1.0 if duration == 0 else min(max(step, 0) / duration, 1.0)
    return initial + (final - initial) * frac
