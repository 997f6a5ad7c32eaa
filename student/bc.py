"""The behaviour-cloned prior of GSA's execution guidance: a deterministic pixel policy on 3 stacked
frames, trained by masked MSE on (retrieved) offline trajectories.

Owns: `BCPolicy` (conv encoder [32, 64, 128, 256] + MLP 512-LayerNorm-ELU x 2 -> tanh, padded
action dims forced to exactly 0), `random_shift` (pad-and-crop augmentation, from core/ops.py), frame stacking
(`frame_indices`, `stack_frames`, `to_channels`), `masked_mse`, `BCData` (the trajectories BC
trains on, held in memory) and `train_bc` (Adam loop returning the per-update losses).

Conventions (docs/dataset.md): `action[t]` LED TO observation t, so the action the behaviour policy
took AFTER seeing frame t is `action[t + 1]`; that is the BC target for the stack of frames
t-2, t-1, t (frame 0 repeated before an episode start). Stacks are channels-first, oldest frame
first: (3k, R, R) with channels [3j, 3j + 3) = frame t - (k - 1) + j.
"""
from __future__ import annotations

import sys

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from core.ops import random_shift


# ---- frame stacking ---------------------------------------------------------------------------
def frame_indices(t, frames: int = 3) -> np.ndarray:
    """Frame indices of the stacks ending at t: (..., frames) = t - frames + 1 .. t, clipped at 0 (the
    first frame repeats at an episode start)."""
    t = np.asarray(t, np.int64)
    return np.clip(t[..., None] + np.arange(1 - frames, 1), 0, None)


def to_channels(stack: np.ndarray) -> np.ndarray:
    """(..., k, R, R, 3) uint8 HWC frames -> (..., 3k, R, R) channels-first, oldest frame first."""
    *lead, k, h, w, c = stack.shape
    moved = np.moveaxis(stack, -1, -3)  # (..., k, 3, R, R)
    return np.ascontiguousarray(moved).reshape(*lead, k * c, h, w)


def stack_frames(images: np.ndarray, t, frames: int = 3) -> np.ndarray:
    """Stacks of one episode's images (L, R, R, 3) ending at t (int or array of shape S):
    (3k, R, R) or (*S, 3k, R, R) uint8, frame 0 repeated before the start."""
    return to_channels(images[frame_indices(t, frames)])  # images[...]: (*S, k, R, R, 3)


# ---- loss ---------------------------------------------------------------------------------------
def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the per-sample MSE over native dims only. pred, target, mask: (B, A);
    padded dims (mask 0) never count, whatever pred holds there."""
    mask = mask.to(pred.dtype)
    err = ((pred - target) ** 2 * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)  # (B,)
    return err.mean()


# ---- the policy -------------------------------------------------------------------------------
class SpatialSoftmax(nn.Module):
    """(B, C, H, W) feature maps -> (B, 2C) expected (x, y) of each channel's softmax over positions, in
    [-1, 1] (Levine et al. 2016's keypoints), with one learned temperature."""

    def __init__(self):
        super().__init__()
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        b, c, h, w = maps.shape
        probs = torch.softmax(maps.float().reshape(b, c, h * w) / self.log_temperature.exp(), -1)  # (B, C, HW)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, device=maps.device),
                                torch.linspace(-1, 1, w, device=maps.device), indexing="ij")
        grid = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)  # (HW, 2)
        return (probs @ grid).reshape(b, 2 * c)  # (B, 2C): x, y of channel 0, then channel 1, ...


class BCPolicy(nn.Module):
    """Deterministic BC prior: (B, 3k, R, R) stacked frames -> (B, A) padded actions in [-1, 1].

    Encoder `flat` (GSA's): len(channels) x (Conv 4x4 stride 2, no padding, ELU) (64 -> 31 -> 14 -> 6 -> 2 for
    the default 4 layers), flattened. Encoder `keypoints`: Conv 4x4 stride 2 (64 -> 31), then
    len(channels) - 1 x Conv 3x3 stride 1 padding 1, ELU between, and a spatial softmax over the last maps:
    (B, 2 * channels[-1]) image coordinates, the visuomotor-imitation encoder that localises small objects
    from few demonstrations (channels default: (32, 64, 128, 256) flat, (32, 32, 32) keypoints).
    Head: `layers` x (Linear hidden -> LayerNorm -> ELU), Linear A, tanh, times the action mask, so that padded
    dims are exactly 0."""

    def __init__(self, action_mask, image_size: int = 64, frames: int = 3,
                 channels=None, hidden: int = 512, layers: int = 2, encoder: str = "flat"):
        super().__init__()
        mask = torch.as_tensor(np.asarray(action_mask, np.float32)).reshape(-1)  # (A,)
        self.register_buffer("action_mask", mask)
        self.frames, self.image_size, self.action_dim = frames, image_size, mask.shape[0]
        if encoder not in ("flat", "keypoints"):
            raise ValueError(f"method.bc.encoder={encoder!r}: use flat (GSA's) or keypoints (spatial softmax)")
        channels = channels or ((32, 64, 128, 256) if encoder == "flat" else (32, 32, 32))
        convs, inp, size = [], 3 * frames, image_size
        for j, out in enumerate(channels):
            if encoder == "flat" or j == 0:
                convs += [nn.Conv2d(inp, out, 4, stride=2), nn.ELU()]
                inp, size = out, (size - 4) // 2 + 1
            else:
                convs += [nn.Conv2d(inp, out, 3, padding=1), nn.ELU()]
                inp = out
        if size < 1:
            raise ValueError(f"image_size {image_size} is too small for the {encoder} encoder's stride-2 4x4 convolutions")
        if encoder == "keypoints":
            convs[-1] = SpatialSoftmax()  # softmax over the last conv's raw maps
            width = 2 * inp
        else:
            convs.append(nn.Flatten())
            width = inp * size * size
        self.encoder = nn.Sequential(*convs)  # (B, width)
        head = []
        for _ in range(layers):
            head += [nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.ELU()]
            width = hidden
        head.append(nn.Linear(width, self.action_dim))
        self.head = nn.Sequential(*head)
        for m in self.modules():  # DrQ-style init: orthogonal weights, zero biases
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.orthogonal_(m.weight, nn.init.calculate_gain("relu") if isinstance(m, nn.Conv2d) else 1.0)
                nn.init.zeros_(m.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3k, R, R), uint8 in [0, 255] or float in [-0.5, 0.5]. Returns (B, A)."""
        if images.dtype == torch.uint8:
            images = images.float().div_(255.0).sub_(0.5)
        images = images.contiguous(memory_format=torch.channels_last)  # ~2x faster first conv on CPU
        return torch.tanh(self.head(self.encoder(images))) * self.action_mask

    @torch.no_grad()
    def act(self, stacks: np.ndarray) -> np.ndarray:
        """(n, 3k, R, R) uint8 stacks -> (n, A) float32 padded actions (no grad, one batched forward)."""
        device = self.action_mask.device
        return self(torch.as_tensor(np.asarray(stacks), device=device)).float().cpu().numpy()


# ---- training data ----------------------------------------------------------------------------
class BCData:
    """The trajectories of an OfflineDataset (or anything with `read(i)` and `action_dim`) that
    BC trains on, read once and held in memory: images (N, R, R, 3) uint8 concatenated over
    trajectories (12 KB per 64x64 frame: 500 DMC trajectories of 501 frames are ~3 GB), padded
    actions (N, A) and per-trajectory action masks (n, A). Sampling is uniform over trajectories,
    then uniform over the L - 1 stacks of a trajectory that have a next action."""

    def __init__(self, dataset, indices=None, frames: int = 3):
        indices = range(len(dataset)) if indices is None else [int(i) for i in indices]
        self.frames, self.action_dim = frames, int(dataset.action_dim)  # k, A
        images, actions, masks, lengths, kept = [], [], [], [], []
        for i in indices:
            traj = dataset.read(i)
            length, dim = len(traj["image"]), traj["action"].shape[1]
            if length < 2:  # no transition: nothing to imitate
                continue
            padded = np.zeros((length, self.action_dim), np.float32)  # (L, A)
            padded[:, :dim] = traj["action"]
            mask = np.zeros(self.action_dim, np.float32)
            mask[:dim] = 1.0
            images.append(traj["image"]), actions.append(padded), masks.append(mask)
            lengths.append(length), kept.append(i)
        if not kept:
            raise ValueError("no trajectory with at least 2 observations among the given indices")
        self.images = np.concatenate(images)             # (N, R, R, 3) uint8
        self.actions = np.concatenate(actions)           # (N, A) float32, padded with zeros
        self.masks = np.stack(masks)                     # (n, A) float32
        self.lengths = np.array(lengths, np.int64)       # (n,) observations per trajectory
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]])  # (n,) first row of each
        self.indices = np.array(kept, np.int64)          # (n,) dataset indices held

    def __len__(self) -> int:
        return len(self.lengths)

    def sample(self, batch: int, rng: np.random.Generator) -> dict:
        """B stacks and their next actions: image (B, 3k, R, R) uint8, action (B, A) float32 =
        action[t + 1] padded, mask (B, A) float32, traj (B,) position in `indices`, t (B,) frame."""
        traj = rng.integers(len(self.lengths), size=batch)                       # (B,)
        t = (rng.random(batch) * (self.lengths[traj] - 1)).astype(np.int64)     # (B,) in [0, L - 2]
        rows = self.offsets[traj, None] + frame_indices(t, self.frames)         # (B, k)
        return dict(image=to_channels(self.images[rows]), action=self.actions[self.offsets[traj] + t + 1],
                    mask=self.masks[traj], traj=traj, t=t)


def check_masks(policy: BCPolicy, data: BCData):
    """Every trajectory's native dims must be dims the policy can output."""
    if data.action_dim != policy.action_dim:
        raise ValueError(f"dataset actions are padded to {data.action_dim}, the policy outputs {policy.action_dim}")
    outside = (data.masks > 0) & (policy.action_mask.cpu().numpy() == 0)  # (n, A)
    if outside.any():
        bad = int(data.indices[outside.any(1)][0])
        raise ValueError(f"trajectory {bad} has action dims the policy's action_mask zeroes; "
                         "train on trajectories of the task's embodiment only")


def weight_ema(policy: BCPolicy, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of the policy's weights (torch.optim.swa_utils; `average` of train_bc):
    its first update copies the weights, each later one moves them by (1 - decay) towards the policy's."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    if not 0.0 < decay < 1.0:
        raise ValueError(f"an EMA decay must lie in (0, 1), got {decay}")
    return AveragedModel(policy, multi_avg_fn=get_ema_multi_avg_fn(decay))


def train_bc(policy: BCPolicy, dataset, indices, steps: int, batch: int = 256, lr: float = 1e-4,
             device="cpu", rng: np.random.Generator | None = None, pad: int = 3,
             optimizer: torch.optim.Optimizer | None = None, progress: bool = False,
             average: torch.optim.swa_utils.AveragedModel | None = None) -> list[float]:
    """`steps` Adam updates of the masked MSE between policy(random_shift(stack)) and the next action,
    on batches drawn from the trajectories `indices` of `dataset` (an OfflineDataset; or a prebuilt
    BCData, then indices must be None). `average` (e.g. an EMA of the weights, torch.optim.swa_utils) is
    updated after every update. Returns the loss of every update (floats)."""
    rng = np.random.default_rng() if rng is None else rng
    data = dataset if isinstance(dataset, BCData) else BCData(dataset, indices, policy.frames)
    if isinstance(dataset, BCData) and indices is not None:
        raise ValueError("indices are for an OfflineDataset; a BCData already holds its trajectories")
    check_masks(policy, data)
    device = torch.device(device)
    policy.to(device).train()
    optimizer = optimizer or torch.optim.Adam(policy.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))  # shifts follow rng too
    losses = []
    bar = tqdm(range(steps), desc="BC prior", unit="update", dynamic_ncols=True, disable=not progress, file=sys.stderr,
               mininterval=0.5 if sys.stderr.isatty() else 30)
    for _ in bar:
        b = data.sample(batch, rng)
        images = random_shift(torch.as_tensor(b["image"], device=device), pad, generator)  # (B, 3k, R, R) uint8
        target = torch.as_tensor(b["action"], device=device)                       # (B, A)
        mask = torch.as_tensor(b["mask"], device=device)                           # (B, A)
        loss = masked_mse(policy(images), target, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if average is not None:
            average.update_parameters(policy)
        losses.append(float(loss.detach()))
        if len(losses) % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    policy.eval()
    return losses
