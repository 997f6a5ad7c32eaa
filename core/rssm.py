"""Recurrent state-space model of DreamerV3: block-diagonal GRU, discrete latents (S x C) with
1% unimix and straight-through gradients, KL with free bits.

A state is a dict: deter (N, D) float, stoch (N, S, C) one-hot, logits (N, S, C) log-probs.
Optional conditioning `cond` (N, K) (the mixture teacher's one-hot task label) is concatenated to the
action at every transition; it is never reset by is_first.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from core.nets import BlockLinear


def dense(inp: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, out, bias=False), nn.LayerNorm(out), nn.SiLU())


class RSSM(nn.Module):
    def __init__(self, deter: int, stoch: int, classes: int, hidden: int, blocks: int,
                 act_dim: int, embed_dim: int, unimix: float = 0.01, cond_dim: int = 0):
        super().__init__()
        assert deter % blocks == 0, "deter must divide into GRU blocks"
        self.deter, self.stoch, self.classes, self.blocks, self.unimix = deter, stoch, classes, blocks, unimix
        self.stoch_dim = stoch * classes
        self.feat_dim = deter + self.stoch_dim
        g = deter // blocks
        self.in_deter, self.in_stoch, self.in_action = dense(deter, hidden), dense(self.stoch_dim, hidden), dense(act_dim + cond_dim, hidden)
        self.cond_dim = cond_dim
        self.gru_hidden = BlockLinear(blocks, 3 * hidden + g, g, bias=False)
        self.gru_norm = nn.LayerNorm(g)
        self.gru_gates = BlockLinear(blocks, g, 3 * g)
        self.prior = nn.Sequential(dense(deter, hidden), nn.Linear(hidden, self.stoch_dim))
        self.post_deter = nn.Linear(deter, hidden, bias=False)
        self.post_embed = nn.Linear(embed_dim, hidden, bias=False)
        self.post_out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, self.stoch_dim))

    # ---- state helpers -------------------------------------------------------------------------
    def initial(self, n: int, device) -> dict:
        z = torch.zeros(n, self.stoch, self.classes, device=device)
        return dict(deter=torch.zeros(n, self.deter, device=device), stoch=z, logits=z.clone())

    @staticmethod
    def feat(state: dict) -> torch.Tensor:
        """(..., D + S*C) features used by every head."""
        return torch.cat([state["deter"], state["stoch"].flatten(-2)], -1)

    def _dist(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw logits (N, S*C) -> (one-hot sample with straight-through grads, log-probs), both (N, S, C)."""
        logits = logits.reshape(*logits.shape[:-1], self.stoch, self.classes).float()
        probs = (1 - self.unimix) * torch.softmax(logits, -1) + self.unimix / self.classes
        logp = probs.log()
        gumbel = -torch.log(-torch.log(torch.rand_like(logp).clamp_(1e-20, 1.0)))
        onehot = F.one_hot((logp + gumbel).argmax(-1), self.classes).to(probs.dtype)
        return onehot + probs - probs.detach(), logp

    # ---- transitions ---------------------------------------------------------------------------
    def _gru(self, deter: torch.Tensor, stoch: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Block-diagonal GRU step: deter (N, D), stoch (N, S*C), action (N, A) -> deter (N, D)."""
        n, g = deter.shape[0], self.deter // self.blocks
        x = torch.cat([self.in_deter(deter), self.in_stoch(stoch), self.in_action(action)], -1)  # (N, 3H)
        x = torch.cat([x[:, None].expand(n, self.blocks, x.shape[-1]), deter.reshape(n, self.blocks, g)], -1)
        x = F.silu(self.gru_norm(self.gru_hidden(x.reshape(n, -1)).reshape(n, self.blocks, g)))
        gates = self.gru_gates(x.reshape(n, -1)).reshape(n, self.blocks, 3, g)
        reset, cand, update = torch.sigmoid(gates[:, :, 0]), gates[:, :, 1], gates[:, :, 2]
        cand = torch.tanh(reset * cand)
        update = torch.sigmoid(update - 1)
        return (update * cand + (1 - update) * deter.reshape(n, self.blocks, g)).reshape(n, -1)

    @staticmethod
    def _with_cond(action: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """action (..., A), cond (N, K) -> (..., A + K); cond broadcast over any time dim."""
        if cond is None:
            return action
        cond = cond.to(action.dtype).reshape(cond.shape[0], *[1] * (action.dim() - 2), cond.shape[-1])
        return torch.cat([action, cond.expand(*action.shape[:-1], cond.shape[-1])], -1)

    def img_step(self, state: dict, action: torch.Tensor, cond: torch.Tensor | None = None) -> dict:
        """Prior step: s_{t-1}, a_t (N, A) -> s_t sampled from the prior."""
        deter = self._gru(state["deter"], state["stoch"].flatten(1), self._with_cond(action, cond))
        stoch, logits = self._dist(self.prior(deter))
        return dict(deter=deter, stoch=stoch, logits=logits)

    def obs_step(self, state: dict, action: torch.Tensor, embed: torch.Tensor, is_first: torch.Tensor,
                 cond: torch.Tensor | None = None) -> dict:
        """Posterior step for acting: embed (N, E), is_first (N,) resets state and action."""
        keep = (~is_first.bool()).float()
        state = {k: v * keep.reshape(-1, *[1] * (v.dim() - 1)) for k, v in state.items()}
        deter = self._gru(state["deter"], state["stoch"].flatten(1), self._with_cond(action * keep[:, None], cond))
        stoch, logits = self._dist(self.post_out(self.post_deter(deter) + self.post_embed(embed)))
        return dict(deter=deter, stoch=stoch, logits=logits)

    def observe(self, embed: torch.Tensor, action: torch.Tensor, is_first: torch.Tensor,
                state: dict | None = None, cond: torch.Tensor | None = None) -> tuple[dict, torch.Tensor]:
        """Posterior states over a sequence.

        embed (B, T, E), action (B, T, A) = action that led to obs t, is_first (B, T), cond (B, K).
        Returns posterior states with (B, T, ...) leaves and prior log-probs (B, T, S, C).
        """
        b, t = embed.shape[:2]
        state = state or self.initial(b, embed.device)
        keep = (~is_first.bool()).float()  # (B, T)
        action = self._with_cond(action * keep[..., None], cond)  # (B, T, A + K)
        embed_part = self.post_embed(embed)  # (B, T, hidden), one batched matmul for all steps
        deters, stochs, logits = [], [], []
        for i in range(t):
            k = keep[:, i, None]
            deter = self._gru(state["deter"] * k, state["stoch"].flatten(1) * k, action[:, i])
            stoch, logit = self._dist(self.post_out(self.post_deter(deter) + embed_part[:, i]))
            state = dict(deter=deter, stoch=stoch, logits=logit)
            deters.append(deter), stochs.append(stoch), logits.append(logit)
        post = dict(deter=torch.stack(deters, 1), stoch=torch.stack(stochs, 1), logits=torch.stack(logits, 1))
        _, prior_logits = self._dist(self.prior(post["deter"]))  # (B, T, S, C), batched over T
        return post, prior_logits

    def kl_loss(self, post_logits: torch.Tensor, prior_logits: torch.Tensor, free: float,
                dyn_scale: float, rep_scale: float) -> tuple[torch.Tensor, dict]:
        """(B, T, S, C) log-probs -> per-step loss (B, T) and metrics."""
        def kl(p, q):
            return (p.exp() * (p - q)).sum((-2, -1))
        dyn = kl(post_logits.detach(), prior_logits)
        rep = kl(post_logits, prior_logits.detach())
        loss = dyn_scale * dyn.clamp(min=free) + rep_scale * rep.clamp(min=free)
        return loss, dict(kl=dyn.mean().detach())
