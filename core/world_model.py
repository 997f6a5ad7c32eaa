"""World model: encoder, RSSM, decoder and (optional) reward / continue heads.

Batches are dicts of tensors with leading (B, T): image uint8 (B, T, R, R, 3), action (B, T, A)
(the action that led to obs t, zero on is_first), reward (B, T), is_first / is_terminal (B, T),
optional reward_mask (B, T) (1 where the reward is a real label, e.g. online data only),
label (B,) int64 when the model is label-conditioned (cfg.labels = K > 0: Vid2Act's mixture teacher).
"""
from __future__ import annotations

import torch
from torch import nn

from core.nets import Decoder, Encoder, mlp, zero_last
from core.ops import TwoHot
from core.rssm import RSSM


def preprocess(batch: dict, obs_keys) -> dict:
    """uint8 HWC images -> float CHW in [-0.5, 0.5]; other keys -> float. Leading dims kept."""
    out = {}
    for k in obs_keys:
        v = batch[k]
        if v.dtype == torch.uint8:
            v = v.permute(*range(v.dim() - 3), -1, -3, -2).float() / 255.0 - 0.5
        out[k] = v.float()
    return out


class WorldModel(nn.Module):
    def __init__(self, obs_shapes: dict, act_dim: int, cfg):
        super().__init__()
        self.obs_shapes = {k: tuple(v) for k, v in obs_shapes.items()}
        self.cfg, self.act_dim = cfg, act_dim
        self.labels = int(cfg.get("labels", 0) or 0)  # K: one-hot task-label conditioning (0: none)
        self.encoder = Encoder(self.obs_shapes, cfg.cnn_depth, cfg.cnn_mults, cfg.mlp_layers, cfg.units, self.labels)
        self.rssm = RSSM(cfg.deter, cfg.stoch, cfg.classes, cfg.hidden, cfg.blocks, act_dim,
                         self.encoder.out_dim, cfg.unimix, self.labels)
        self.decoder = Decoder(self.obs_shapes, cfg.deter, self.rssm.stoch_dim, cfg.blocks,
                               cfg.cnn_depth, cfg.cnn_mults, cfg.mlp_layers, cfg.units)
        feat = self.rssm.feat_dim
        self.twohot = TwoHot(cfg.bins)
        self.reward = zero_last(mlp(feat, cfg.bins, cfg.mlp_layers, cfg.units)) if cfg.reward_head else None
        self.cont = mlp(feat, 1, cfg.mlp_layers, cfg.units) if cfg.cont_head else None

    def pretrained_modules(self) -> nn.ModuleDict:
        """What reward-free pretraining learns (and what parameter counts refer to)."""
        return nn.ModuleDict(dict(encoder=self.encoder, rssm=self.rssm, decoder=self.decoder))

    def cond(self, batch: dict) -> torch.Tensor | None:
        """(B, K) one-hot label of a label-conditioned model, else None."""
        if not self.labels:
            return None
        if "label" not in batch:
            raise ValueError(f"this world model is conditioned on {self.labels} task labels: the batch needs 'label' (B,)")
        return nn.functional.one_hot(batch["label"].long(), self.labels).float()

    def embed(self, obs: dict, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Preprocessed obs with leading (B, T), cond (B, K) -> (B, T, E)."""
        b, t = next(iter(obs.values())).shape[:2]
        flat_cond = None if cond is None else cond[:, None].expand(b, t, cond.shape[-1]).flatten(0, 1)  # (B*T, K)
        return self.encoder({k: v.flatten(0, 1) for k, v in obs.items()}, flat_cond).reshape(b, t, -1)

    def observe(self, batch: dict, state: dict | None = None, obs: dict | None = None) -> tuple[dict, torch.Tensor]:
        """Posterior states (B, T, ...) and prior log-probs (B, T, S, C) of a batch (obs: preprocessed, if done)."""
        obs = preprocess(batch, self.obs_shapes) if obs is None else obs
        cond = self.cond(batch)
        return self.rssm.observe(self.embed(obs, cond), batch["action"], batch["is_first"], state, cond)

    def loss(self, batch: dict, state: dict | None = None) -> tuple[dict, dict, dict]:
        """Returns per-step losses {name: (B, T)} (unscaled except KL), posterior states, metrics."""
        obs = preprocess(batch, self.obs_shapes)
        post, prior_logits = self.observe(batch, state, obs)
        b, t = batch["is_first"].shape
        deter, stoch = post["deter"].flatten(0, 1), post["stoch"].flatten(2).flatten(0, 1)
        flat_obs = {k: v.flatten(0, 1) for k, v in obs.items()}
        losses = {f"rec_{k}": v.reshape(b, t) for k, v in self.decoder.loss(deter, stoch, flat_obs).items()}
        c = self.cfg
        losses["kl"], metrics = self.rssm.kl_loss(post["logits"], prior_logits, c.free_nats, c.dyn_scale, c.rep_scale)
        feat = self.rssm.feat(post)  # (B, T, F)
        if self.reward is not None:
            mask = batch.get("reward_mask", torch.ones_like(batch["reward"]))  # (B, T) 1: a real reward label
            # mean over labelled steps only (e.g. the online rows of a rehearsal batch)
            losses["reward"] = self.twohot.loss(self.reward(feat), batch["reward"]) * mask / mask.mean().clamp(min=1e-6)
        if self.cont is not None:
            target = 1.0 - batch["is_terminal"].float()
            losses["cont"] = nn.functional.binary_cross_entropy_with_logits(
                self.cont(feat).squeeze(-1), target, reduction="none")
        return losses, post, metrics

    def predict_reward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.twohot.decode(self.reward(feat))

    def predict_cont(self, feat: torch.Tensor) -> torch.Tensor | None:
        return None if self.cont is None else torch.sigmoid(self.cont(feat).squeeze(-1))
