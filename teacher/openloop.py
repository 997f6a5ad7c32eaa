"""Open-loop video prediction of a world model: observe `context` frames, then imagine the rest
from the recorded actions through the prior, and save a grid (truth row above model row per sample)
and a video (truth | prediction | error side by side over time, one row per sample)."""
from __future__ import annotations

import pathlib

import numpy as np
import torch

from core.world_model import WorldModel


@torch.no_grad()
def rollout(wm: WorldModel, batch: dict, context: int) -> dict:
    """batch leaves (B, T, ...) on wm's device -> model states {deter (B, T, D), stoch (B, T, S, C)}: posteriors for
    t < context, then the prior alone, driven by the recorded actions."""
    cond = wm.cond(batch)
    head = {k: batch[k][:, :context] for k in ("image", "action", "is_first")}  # (B, context, ...)
    if cond is not None:
        head["label"] = batch["label"]
    post, _ = wm.observe(head)
    state = {k: v[:, -1] for k, v in post.items()}
    deters, stochs = [post["deter"]], [post["stoch"]]
    for t in range(context, batch["action"].shape[1]):
        state = wm.rssm.img_step(state, batch["action"][:, t], cond)
        deters.append(state["deter"][:, None]), stochs.append(state["stoch"][:, None])
    return {"deter": torch.cat(deters, 1), "stoch": torch.cat(stochs, 1)}


@torch.no_grad()
def predict(wm: WorldModel, batch: dict, context: int) -> tuple[np.ndarray, np.ndarray]:
    """batch leaves (B, T, ...) on wm's device. Returns truth and prediction, uint8 (B, T, R, R, 3):
    posterior reconstructions for t < context, open-loop prior predictions after."""
    states = rollout(wm, batch, context)
    deter, stoch = states["deter"], states["stoch"]  # (B, T, D), (B, T, S, C)
    b, t = deter.shape[:2]
    image = wm.decoder.cnn(deter.flatten(0, 1), stoch.flatten(2).flatten(0, 1))  # (B*T, 3, R, R)
    image = image.reshape(b, t, *image.shape[1:]).permute(0, 1, 3, 4, 2)
    pred = ((image.float() + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    truth = batch["image"].cpu().numpy()
    return truth, pred


def error_per_step(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Mean squared pixel error (images in [-0.5, 0.5]) per time step of predict()'s output: (T,)."""
    diff = (truth.astype(np.float32) - pred.astype(np.float32)) / 255.0
    return (diff ** 2).mean((0, 2, 3, 4))


def save_grid(path, truth: np.ndarray, pred: np.ndarray, context: int, samples: int = 4) -> pathlib.Path:
    """Rows: truth / model for each of `samples` sequences; a red bar marks where imagination starts."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    rows = []
    for i in range(min(samples, len(truth))):
        for video in (truth[i], pred[i]):
            frames = [f.copy() for f in video]  # (R, R, 3) each
            if context < len(frames):
                frames[context][:, :2] = (255, 0, 0)
            rows.append(np.concatenate(frames, 1))  # (R, T*R, 3)
    grid = np.concatenate(rows, 0)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, grid)
    return path


def video_frames(truth: np.ndarray, pred: np.ndarray, context: int, samples: int = 4) -> np.ndarray:
    """predict()'s truth and prediction, uint8 (B, T, R, R, 3) -> video frames uint8 (T, n*R, 3*R, 3): per
    frame, one row per sequence (n = min(samples, B)) of truth | prediction | error (|truth - prediction|
    per channel); a red bar on the prediction's left edge from `context` on (imagined frames)."""
    n, t, r = min(samples, len(truth)), truth.shape[1], truth.shape[2]
    truth, pred = truth[:n], pred[:n].copy()  # (n, T, R, R, 3)
    error = np.abs(truth.astype(np.int16) - pred.astype(np.int16)).astype(np.uint8)  # (n, T, R, R, 3)
    pred[:, context:, :, :2] = (255, 0, 0)
    panels = np.concatenate([truth, pred, error], 3)  # (n, T, R, 3R, 3)
    return panels.transpose(1, 0, 2, 3, 4).reshape(t, n * r, 3 * r, 3)


def save_video(path, truth: np.ndarray, pred: np.ndarray, context: int, samples: int = 4, logger=None,
               step: int = 0, tag: str = "heldout/openloop") -> pathlib.Path:
    """video_frames() as an mp4 at path; with a core.logger.Logger also to its TensorBoard and wandb."""
    frames = video_frames(truth, pred, context, samples)  # (T, n*R, 3R, 3)
    if logger is not None:
        return logger.video(tag, path, frames, step)
    from core.video import write_video
    return write_video(path, frames)
