"""Network building blocks: MLP, block-diagonal linear, conv and MLP encoders/decoders.

Images inside models are float in [-0.5, 0.5], CHW; vector observations go through symlog.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from core.ops import symlog


def mlp(inp: int, out: int | None, layers: int, units: int) -> nn.Sequential:
    """`layers` x (Linear -> LayerNorm -> SiLU), then an optional Linear to `out`."""
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Linear(inp if i == 0 else units, units, bias=False), nn.LayerNorm(units), nn.SiLU()]
    if out is not None:
        mods.append(nn.Linear(units if layers else inp, out))
    return nn.Sequential(*mods)


def zero_last(module: nn.Sequential) -> nn.Sequential:
    """Zero the output layer (DreamerV3 does this for reward and critic heads)."""
    last = module[-1]
    nn.init.zeros_(last.weight)
    if last.bias is not None:
        nn.init.zeros_(last.bias)
    return module


class BlockLinear(nn.Module):
    """Block-diagonal linear: (..., G * inp) -> (..., G * out), G independent blocks."""

    def __init__(self, blocks: int, inp: int, out: int, bias: bool = True):
        super().__init__()
        self.blocks, self.inp, self.out = blocks, inp, out
        self.weight = nn.Parameter(torch.empty(blocks, inp, out))
        self.bias = nn.Parameter(torch.zeros(blocks * out)) if bias else None
        bound = 1 / math.sqrt(inp)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x = x.reshape(-1, self.blocks, self.inp).transpose(0, 1)  # (G, N, inp)
        y = torch.bmm(x, self.weight).transpose(0, 1).reshape(*lead, self.blocks * self.out)
        return y if self.bias is None else y + self.bias


class ChannelNorm(nn.LayerNorm):
    """LayerNorm over the channel dim of (N, Ch, R, R)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def conv_channels(depth: int, mults) -> list[int]:
    return [depth * m for m in mults]


class ConvEncoder(nn.Module):
    """(N, 3 + K, 64, 64) -> (N, 4 * 4 * C_last); stride-2 4x4 convs, ChannelNorm, SiLU.
    K = cond_dim extra input channels (a tiled one-hot label for the mixture teacher, else 0)."""

    def __init__(self, depth: int, mults, image_size: int = 64, cond_dim: int = 0):
        super().__init__()
        chans = conv_channels(depth, mults)
        mods, inp = [], 3 + cond_dim
        for c in chans:
            mods += [nn.Conv2d(inp, c, 4, 2, 1, bias=False), ChannelNorm(c), nn.SiLU()]
            inp = c
        self.net = nn.Sequential(*mods)
        self.minres = image_size // 2 ** len(chans)
        self.out_dim = chans[-1] * self.minres ** 2
        self.channels_last = False  # set_channels_last(): NHWC activations and weights

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        return self.net(image).flatten(1)  # (N, C*h*w) in NCHW order either way


class ConvDecoder(nn.Module):
    """(deter (N, D), stoch (N, S*C)) -> image (N, 3, 64, 64).

    The first projection is dense from the stochastic part and block-diagonal from the deterministic
    part (one block per GRU block), which keeps large models affordable.
    """

    def __init__(self, deter: int, stoch: int, blocks: int, depth: int, mults, image_size: int = 64):
        super().__init__()
        chans = conv_channels(depth, mults)[::-1]
        self.minres = image_size // 2 ** len(chans)
        self.shape = (chans[0], self.minres, self.minres)
        flat = chans[0] * self.minres ** 2
        assert flat % blocks == 0 and deter % blocks == 0, "decoder width must split into GRU blocks"
        self.from_stoch = nn.Linear(stoch, flat)
        self.from_deter = BlockLinear(blocks, deter // blocks, flat // blocks, bias=False)
        self.norm = ChannelNorm(chans[0])
        mods = []
        for i, c in enumerate(chans):
            last = i == len(chans) - 1
            out = 3 if last else chans[i + 1]
            mods.append(nn.ConvTranspose2d(c, out, 4, 2, 1, bias=last))
            if not last:
                mods += [ChannelNorm(out), nn.SiLU()]
        self.net = nn.Sequential(*mods)
        self.channels_last = False  # set_channels_last(): NHWC activations and weights

    def forward(self, deter: torch.Tensor, stoch: torch.Tensor) -> torch.Tensor:
        x = self.from_stoch(stoch) + self.from_deter(deter)  # (N, C*h*w)
        x = torch.nn.functional.silu(self.norm(x.reshape(-1, *self.shape)))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)  # (N, 3, R, R)


def set_channels_last(module: nn.Module, on: bool = True) -> nn.Module:
    """Every ConvEncoder / ConvDecoder in `module` runs its convolutions in channels_last (NHWC) memory
    format: weights converted in place, inputs converted in forward. Same values, other strides."""
    fmt = torch.channels_last if on else torch.contiguous_format
    for m in module.modules():
        if isinstance(m, (ConvEncoder, ConvDecoder)):
            m.channels_last = on
            for conv in m.net:
                if isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)):
                    conv.weight.data = conv.weight.data.contiguous(memory_format=fmt)
    return module


class Encoder(nn.Module):
    """Observation dict -> embedding (N, E). 3-d keys (R, R, 3) use the CNN, 1-d keys an MLP."""

    def __init__(self, obs_shapes: dict, cnn_depth: int, cnn_mults, mlp_layers: int, mlp_units: int,
                 cond_dim: int = 0):
        super().__init__()
        self.cond_dim = cond_dim
        self.image_keys = [k for k, s in obs_shapes.items() if len(s) == 3]
        self.vector_keys = [k for k, s in obs_shapes.items() if len(s) == 1]
        self.out_dim = 0
        if self.image_keys:
            size = obs_shapes[self.image_keys[0]][0]
            channels = sum(obs_shapes[k][-1] for k in self.image_keys)
            assert channels == 3, "one RGB image per step is supported"
            self.cnn = ConvEncoder(cnn_depth, cnn_mults, size, cond_dim)
            self.out_dim += self.cnn.out_dim
        if self.vector_keys:
            dim = sum(obs_shapes[k][0] for k in self.vector_keys)
            self.mlp = mlp(dim, None, mlp_layers, mlp_units)
            self.out_dim += mlp_units

    def forward(self, obs: dict, cond: torch.Tensor | None = None) -> torch.Tensor:
        """obs values (N, ...) already preprocessed (images CHW float) -> (N, E).
        cond (N, K): tiled as K extra image channels (Vid2Act's task-label conditioning)."""
        parts = []
        if self.image_keys:
            image = obs[self.image_keys[0]]  # (N, 3, R, R)
            if self.cond_dim:
                tiled = cond[:, :, None, None].expand(-1, -1, *image.shape[-2:])  # (N, K, R, R)
                image = torch.cat([image, tiled.to(image.dtype)], 1)
            parts.append(self.cnn(image))
        if self.vector_keys:
            parts.append(self.mlp(symlog(torch.cat([obs[k] for k in self.vector_keys], -1))))
        return torch.cat(parts, -1)


class Decoder(nn.Module):
    """Latent (deter, stoch) -> reconstruction of every observation key; MSE losses."""

    def __init__(self, obs_shapes: dict, deter: int, stoch: int, blocks: int,
                 cnn_depth: int, cnn_mults, mlp_layers: int, mlp_units: int):
        super().__init__()
        self.image_keys = [k for k, s in obs_shapes.items() if len(s) == 3]
        self.vector_shapes = {k: s for k, s in obs_shapes.items() if len(s) == 1}
        if self.image_keys:
            size = obs_shapes[self.image_keys[0]][0]
            self.cnn = ConvDecoder(deter, stoch, blocks, cnn_depth, cnn_mults, size)
        self.mlps = nn.ModuleDict({k: mlp(deter + stoch, s[0], mlp_layers, mlp_units)
                                   for k, s in self.vector_shapes.items()})

    def loss(self, deter: torch.Tensor, stoch: torch.Tensor, obs: dict) -> dict:
        """Sum of squared errors per step. deter (N, D), stoch (N, S*C) -> {key: (N,)}."""
        out = {}
        if self.image_keys:
            key = self.image_keys[0]
            out[key] = ((self.cnn(deter, stoch) - obs[key]) ** 2).flatten(1).sum(-1)
        feat = torch.cat([deter, stoch], -1) if self.mlps else None
        for k, net in self.mlps.items():
            out[k] = ((net(feat) - symlog(obs[k])) ** 2).sum(-1)
        return out
