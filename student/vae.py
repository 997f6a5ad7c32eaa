"""Vid2Act's action-replay model: a conditional VAE over source actions given a state feature (in the
student's feature space) and the source domain's one-hot.

    encoder [s, a, onehot_k] -> units -> units -> (mu, log_std clamped to [-4, 15])     z (Z,)
    decoder [s, z, onehot_k] -> units -> hidden (the "replay features") -> tanh -> a    (A,)
    loss = masked MSE(a_hat, a) + kl_scale * KL(N(mu, std) || N(0, 1))

At sampling time z ~ N(0, 1) clipped to [-0.5, 0.5] (the authors' choice); as a guidance prior the decoder
can instead act with z = 0, the prior's mean (`act(..., sample=False)`). Actions are padded to A
with a mask: dims outside the source's native action are excluded from the MSE; replayed actions are
zero outside the target's (this VAE's) mask.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ActionVAE(nn.Module):
    def __init__(self, feat_dim: int, action_mask, domains: int, units: int = 750, hidden: int = 50,
                 latent: int | None = None, kl_scale: float = 0.5):
        super().__init__()
        mask = torch.as_tensor(action_mask, dtype=torch.float32)
        self.register_buffer("mask", mask)  # (A,)
        a, self.domains, self.kl_scale = len(mask), domains, kl_scale
        self.latent = latent or 2 * a
        self.hidden_dim = hidden
        self.encoder = nn.Sequential(nn.Linear(feat_dim + a + domains, units), nn.ReLU(),
                                     nn.Linear(units, units), nn.ReLU(), nn.Linear(units, 2 * self.latent))
        self.decoder = nn.Sequential(nn.Linear(feat_dim + self.latent + domains, units), nn.ReLU(),
                                     nn.Linear(units, hidden), nn.ReLU())
        self.out = nn.Linear(hidden, a)

    def onehot(self, domain: torch.Tensor) -> torch.Tensor:
        """(...,) int64 -> (..., K) float."""
        return F.one_hot(domain.long(), self.domains).float()

    def prior_z(self, shape, device) -> torch.Tensor:
        return torch.randn(*shape, self.latent, device=device).clamp(-0.5, 0.5)

    def features(self, feat: torch.Tensor, domain: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's hidden layer: feat (..., F), domain (...,) -> (..., hidden). z: (..., Z) or sampled."""
        z = self.prior_z(feat.shape[:-1], feat.device) if z is None else z
        return self.decoder(torch.cat([feat, z.to(feat.dtype), self.onehot(domain).to(feat.dtype)], -1))

    def act(self, feat: torch.Tensor, domain: torch.Tensor, sample: bool = True) -> torch.Tensor:
        """Replayed action (..., A) in [-1, 1], padded dims zero; z sampled (clipped) or, sample=False, z = 0."""
        z = None if sample else torch.zeros(*feat.shape[:-1], self.latent, device=feat.device)
        return torch.tanh(self.out(self.features(feat, domain, z))) * self.mask

    def loss(self, feat: torch.Tensor, action: torch.Tensor, domain: torch.Tensor, valid: torch.Tensor | None = None,
             mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """feat (N, F), action (N, A) padded, domain (N,), valid (N,), mask (N, A) the source's native
        dims (default: this VAE's mask) -> scalar loss and metrics."""
        mask = self.mask.expand_as(action) if mask is None else mask.float()  # (N, A)
        onehot = self.onehot(domain)
        mu, log_std = self.encoder(torch.cat([feat, action * mask, onehot], -1)).chunk(2, -1)
        log_std = log_std.clamp(-4, 15)
        std = log_std.exp()
        z = mu + std * torch.randn_like(std)
        recon = torch.tanh(self.out(self.decoder(torch.cat([feat, z, onehot], -1))))
        mse = ((recon - action) ** 2 * mask).sum(-1) / mask.sum(-1).clamp(min=1)  # (N,) over native dims
        kl = 0.5 * (mu ** 2 + std ** 2 - 1 - 2 * log_std).mean(-1)  # (N,)
        valid = torch.ones_like(mse) if valid is None else valid.float()
        n = valid.sum().clamp(min=1)
        mse, kl = (mse * valid).sum() / n, (kl * valid).sum() / n
        return mse + self.kl_scale * kl, {"vae/mse": mse.detach(), "vae/kl": kl.detach()}
