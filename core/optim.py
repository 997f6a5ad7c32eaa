"""Optimisers (Adam or LaProp) with gradient-norm clipping, built from config."""
from __future__ import annotations

import torch


class LaProp(torch.optim.Optimizer):
    """LaProp (Ziyin et al. 2020): momentum over RMS-normalised gradients."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                st = self.state[p]
                if not st:
                    st["step"], st["m"], st["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                st["step"] += 1
                st["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
                v_hat = st["v"] / (1 - b2 ** st["step"])
                st["m"].mul_(b1).add_(g / (v_hat.sqrt() + group["eps"]), alpha=1 - b1)
                p.add_(st["m"], alpha=-group["lr"] / (1 - b1 ** st["step"]))


class Optimizer:
    """One optimiser over a module's parameters plus clipping; returns the grad norm."""

    def __init__(self, params, cfg):
        self.params = [p for p in params if p.requires_grad]
        kw = dict(lr=cfg.lr, eps=cfg.eps, weight_decay=cfg.weight_decay)
        if cfg.name == "adam":
            self.opt = torch.optim.Adam(self.params, **kw)
        elif cfg.name == "laprop":
            self.opt = LaProp(self.params, **kw)
        else:
            raise ValueError(f"unknown optimizer {cfg.name!r}: use adam or laprop")
        self.clip = cfg.clip

    def step(self, loss: torch.Tensor) -> torch.Tensor:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        return self.apply()

    def apply(self) -> torch.Tensor:
        """Clip and step with gradients already accumulated."""
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return norm

    def make_capturable(self):
        """Let a CUDA graph capture step() (core/graphs.py): Adam's step counts become device tensors, so the
        bias correction is computed on the device at every replay instead of baked in at capture."""
        if not isinstance(self.opt, torch.optim.Adam):
            raise ValueError(f"CUDA graphs need optimizer name=adam (capturable); {type(self.opt).__name__} keeps "
                             f"its step count on the host")
        for group in self.opt.param_groups:
            group["capturable"] = True
        for p, state in self.opt.state.items():
            if "step" in state:
                state["step"] = torch.as_tensor(state["step"], dtype=torch.float32, device=p.device)

    def state_dict(self):
        return self.opt.state_dict()

    def load_state_dict(self, state):
        self.opt.load_state_dict(state)
