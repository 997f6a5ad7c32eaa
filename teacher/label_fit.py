"""How well does a mixture teacher model target-task episodes under each of its source labels?

    python -m teacher.label_fit TEACHER EPISODES [--max-episodes 20] [--json OUT]

EPISODES: an offline dataset folder (teacher.data.collect) or a run directory (or its `replay/` folder);
the first --max-episodes complete episodes are read and cropped to the shortest one. For each label k
the frozen teacher filters every episode with its own state and label k (as the Vid2Act distillation does)
and reports, per step:
image reconstruction loss, KL (posterior to prior), and the open-loop image error of a 5-step prediction
from the posterior. Lower means the source's dynamics/visual model fits the target better. It is a
student-free reference for the learned domain weights (distill/weight_*), which it does not have to match.
"""
from __future__ import annotations

import argparse
import itertools
import json
import pathlib

import numpy as np
import torch

from core.world_model import preprocess
from teacher.data.dataset import OfflineDataset
from teacher.data.explore import replay_episodes
from teacher.model import build_teacher, read_teacher


def read_episodes(folder: pathlib.Path, limit: int) -> list[tuple]:
    """(image, action, is_first) of the first `limit` episodes of an offline dataset or of a run's replay
    (run directory or its replay/ folder; complete episodes, joined across replay files)."""
    if (folder / "manifest.jsonl").exists():
        data = OfflineDataset(folder)
        eps = [data.read(i) for i in range(min(limit, len(data)))]
        return [(e["image"], e["action"], np.arange(len(e["action"])) == 0) for e in eps]
    run_dir = folder.parent if folder.name == "replay" else folder
    eps = [(e["image"], e["action"], e["is_first"]) for _, e in itertools.islice(replay_episodes(run_dir), limit)]
    if not eps:
        raise FileNotFoundError(f"{folder}: neither an offline dataset (manifest.jsonl) nor a run directory "
                                f"whose replay/ holds a complete episode")
    return eps


def load_episodes(folder: pathlib.Path, limit: int, act_dim: int) -> dict:
    """The first `limit` episodes, cropped to the shortest, as one batch: image (B, T, R, R, 3) uint8,
    action (B, T, act_dim) zero-padded, is_first (B, T)."""
    eps = []
    for image, action, is_first in read_episodes(folder, limit):
        action = np.asarray(action, np.float32)  # (T, A)
        if action.shape[1] > act_dim and np.any(action[:, act_dim:]):
            raise ValueError(f"{folder}: actions use {action.shape[1]} dims, the teacher only {act_dim}")
        pad = np.zeros((len(action), act_dim), np.float32)
        pad[:, :min(act_dim, action.shape[1])] = action[:, :act_dim]
        eps.append((image, pad, is_first))
    t = min(len(e[0]) for e in eps)
    return {key: torch.as_tensor(np.stack([e[i][:t] for e in eps])) for i, key in enumerate(("image", "action", "is_first"))}


@torch.no_grad()
def fit(teacher, batch: dict, label: int, horizon: int = 5, every: int = 10) -> dict:
    """Mean per-step losses of the teacher on the batch under one label."""
    b, t = batch["is_first"].shape
    batch = {**batch, "label": torch.full((b,), label)}
    losses, post, _ = teacher.loss(batch)  # per-step (B, T)
    # open loop: from the posterior at every `every`-th step, predict `horizon` steps with the prior
    image = preprocess(batch, teacher.obs_shapes)["image"]  # (B, T, 3, R, R)
    starts = torch.arange(0, t - horizon, every)
    state = {k: v[:, starts].flatten(0, 1) for k, v in post.items()}  # (B*S, ...)
    cond = teacher.cond(batch).repeat_interleave(len(starts), 0)  # (B*S, K)
    for h in range(1, horizon + 1):
        state = teacher.rssm.img_step(state, batch["action"][:, starts + h].flatten(0, 1), cond)
    pred = teacher.decoder.cnn(state["deter"], state["stoch"].flatten(1))  # (B*S, 3, R, R) in [-0.5, 0.5]
    truth = image[:, starts + horizon].flatten(0, 1)
    return {"rec_image": losses["rec_image"].mean().item(), "kl": losses["kl"].mean().item(),
            "openloop_mse": ((pred - truth) ** 2).mean().item()}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("teacher")
    p.add_argument("episodes")
    p.add_argument("--max-episodes", type=int, default=20)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    info = read_teacher(a.teacher)
    if not info["labels"]:
        raise ValueError(f"{a.teacher} is a {info['kind']} teacher without labels: label_fit needs a mixture teacher")
    teacher = build_teacher(info)
    batch = load_episodes(pathlib.Path(a.episodes), a.max_episodes, info["act_dim"])
    result = {str(name): fit(teacher, batch, k) for k, name in enumerate(info["labels"])}
    print(f"{len(batch['image'])} episodes of {a.episodes}; per-step means (lower: the source fits better)")
    print(f"{'label':24s} {'rec_image':>10s} {'kl':>8s} {'openloop_mse':>13s}")
    for name, r in sorted(result.items(), key=lambda x: x[1]["rec_image"]):
        print(f"{name:24s} {r['rec_image']:10.2f} {r['kl']:8.3f} {r['openloop_mse']:13.5f}")
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
