"""The hybrid's VAE guidance prior acting alone, with a sampled latent and with z = 0 (its mean action):

    python -m benchmarks.vae_prior RUN_DIR [RUN_DIR ...] [--episodes 20] [--kl 0.5 4 25] [--windows cold warm]

RUN_DIR is a hybrid run (method=hybrid, prior=vae) with a checkpoint; it is copied to a temporary directory and
rebuilt from there, so a run that is still training is not touched. For each run:
- its own VAE, as the checkpoint holds it, acts alone for --episodes episodes on the eval envs (the same env seeds
  for every row), once with z ~ N(0, 1) clipped to +-0.5 (Vid2Act's replay) and once with z = 0;
- then, for each --kl and --windows, a fresh VAE (seed --seed) is trained for --updates updates (batch 256) on the
  frozen teacher's features of the run's retrieved trajectories, and acts alone the same two ways. `cold` windows
  filter 16 steps from a cold state, as the run's VAE batches do; `warm` filters whole episodes, as acting does.
Rows go to --out (JSON) as they come; the prior's MSE to the data's actions is logged alongside (train set).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import tempfile
import time

import numpy as np
import torch

from student.distill import teacher_features
from transfer.evaluate import rebuild


def features(replay, windows: str, chunk: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The distilled teacher features at t (N, F), the action taken there (N, A, padded) and the domain (N,)
    of every retrieved trajectory; `cold`: each `chunk`-step window filtered from a cold state."""
    d, src, a_dim = replay.d, replay.d.source, len(replay.vae.mask)
    feats, acts, doms = [], [], []
    with torch.no_grad():
        for i in range(len(src)):
            r = src.read(i)
            n = len(r["action"])
            action = np.zeros((n, a_dim), np.float32)
            action[:, :r["action"].shape[1]] = r["action"]
            batch = {"image": torch.as_tensor(r["image"][None]), "action": torch.as_tensor(action[None]),
                     "is_first": torch.zeros(1, n, dtype=torch.bool)}
            step, label, parts = (chunk if windows == "cold" else n), int(src.label[i]), []
            for s in range(0, n, step):
                part = {k: v[:, s:s + step].clone() for k, v in batch.items()}
                part["is_first"][:, 0] = True
                parts.append(d.distiller.distilled(teacher_features(d.teacher, part))[0, :, label])  # (T, F)
            f = torch.cat(parts)
            feats.append(f[:-1]), acts.append(torch.as_tensor(action[1:]))
            doms.append(torch.full((n - 1,), label, dtype=torch.long))
    return torch.cat(feats), torch.cat(acts), torch.cat(doms)


def retrain(vae, x, y, dom, kl: float, updates: int, seed: int) -> float:
    """A fresh VAE (same architecture) trained on (x, y, dom); returns its last reconstruction MSE."""
    torch.manual_seed(seed)
    for layer in [*vae.encoder, *vae.decoder, vae.out]:
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
    vae.kl_scale = kl
    opt = torch.optim.Adam(vae.parameters(), lr=1e-4, eps=1e-5)
    g = torch.Generator().manual_seed(seed)
    for _ in range(updates):
        idx = torch.randint(len(x), (256,), generator=g)
        loss, m = vae.loss(x[idx], y[idx], dom[idx])
        opt.zero_grad(), loss.backward(), opt.step()
    return float(m["vae/mse"])


def act_mse(vae, x, y, dom, sample: bool) -> float:
    with torch.no_grad():
        p = vae.act(x, dom, sample)
    return float((((p - y) ** 2) * vae.mask).sum(-1).mean() / vae.mask.sum())


def evaluate(trainer, replay, episodes: int, label: dict, data, rows: list, out: pathlib.Path):
    for prior_z in ("sample", "zero"):
        replay.prior_sample = prior_z == "sample"
        t0 = time.time()
        res = trainer.evaluate_prior(episodes)
        row = {**label, "prior_z": prior_z, "success_final": res["prior/success_final"],
               "success_any": res["prior/success"], "return": res["prior/return"], "episodes": episodes,
               "action_mse": act_mse(replay.vae, *data, sample=prior_z == "sample")}
        rows.append(row)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}),
              f"({time.time() - t0:.0f} s)", flush=True)
        out.write_text(json.dumps(rows, indent=1))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=pathlib.Path)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--kl", type=float, nargs="*", default=[0.5], help="KL scales of the retrained VAEs")
    p.add_argument("--windows", nargs="*", default=["cold"], choices=["cold", "warm"])
    p.add_argument("--updates", type=int, default=2000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("benchmarks/results/vae_prior.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for run in args.runs:
        with tempfile.TemporaryDirectory() as tmp:
            copy = pathlib.Path(tmp) / run.name
            shutil.copytree(run, copy, ignore=shutil.ignore_patterns("tensorboard", "videos"))
            trainer = rebuild(copy)
            try:
                replay = trainer.artifacts.get("action_replay")
                if replay is None or not trainer.priors:
                    raise SystemExit(f"{run}: not a run with a VAE guidance prior (method=hybrid, method.prior=vae)")
                task = trainer.cfg.task
                for windows in args.windows:
                    data = features(replay, windows)
                    if windows == args.windows[0]:
                        evaluate(trainer, replay, args.episodes, {"run": str(run), "task": task, "vae": "the run's",
                                                                  "windows": windows}, data, rows, args.out)
                    for kl in args.kl:
                        mse = retrain(replay.vae, *data, kl, args.updates, args.seed)
                        evaluate(trainer, replay, args.episodes, {"run": str(run), "task": task, "vae": "retrained",
                                                                  "windows": windows, "kl": kl, "train_recon_mse": mse},
                                 data, rows, args.out)
            finally:
                trainer.close()
    return rows


if __name__ == "__main__":
    main()
