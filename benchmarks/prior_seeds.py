"""Is GSA's BC prior steady across training seeds? (issue 18: on box-close the same recipe and data gave a prior that
succeeded alone in 5/10 episodes twice, then 0/10 twice on another machine.)

    python -m benchmarks.prior_seeds --dataset runs/noncurated34/data --task box-close --seeds 0 1 2 3 \
        [--checkpoints 1000 2000] [--episodes 20] [--out benchmarks/results/prior_seeds.json]

Per seed: the prior (student/bc.py: GSA's network, batch 256, lr 1e-4) trained on the task's own trajectories in
the dataset (as benchmarks.targets does), acting alone for --episodes episodes at each checkpoint (the same
evaluation env seeds for every prior), and so does an EMA of its weights (decay EMA_DECAY, method.bc.ema). Then the
mean-action ensembles of all seeds' final priors and of their EMAs. Each seed's weights are kept in --weights
(<task>_seed<k>[_ema].pt, not for the repo), so a killed run redoes only the missing seeds and --ensemble-only
evaluates the ensembles of what exists. Results are merged into --out (JSON) by (task, seed).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np
import torch
from torch import nn

from benchmarks.targets import A, policy_alone, task_mask
from student.bc import BCData, BCPolicy, train_bc, weight_ema
from teacher.data.dataset import OfflineDataset

EMA_DECAY = 0.995  # time constant 200 updates (GSA's recipe: 2,000)


class MeanPolicy(nn.Module):
    """The mean action of several BC priors with the same frames and action mask: (B, 3k, R, R) -> (B, A)."""

    def __init__(self, policies: list[BCPolicy]):
        super().__init__()
        self.members = nn.ModuleList(policies)
        self.frames, self.action_dim = policies[0].frames, policies[0].action_dim
        self.register_buffer("action_mask", policies[0].action_mask.clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([p(images) for p in self.members]).mean(0)

    @torch.no_grad()
    def act(self, stacks: np.ndarray) -> np.ndarray:
        return self(torch.as_tensor(np.asarray(stacks))).float().numpy()


def one_seed(data: BCData, mask, task: str, seed: int, checkpoints: list[int], episodes: int, weights, **env) -> dict:
    torch.manual_seed(seed)
    policy, rng = BCPolicy(mask), np.random.default_rng(seed)
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-4)
    average = weight_ema(policy, EMA_DECAY)
    row, done, start = {"task": task, "seed": seed, "checkpoints": {}}, 0, time.time()
    for step in checkpoints:
        losses = train_bc(policy, data, None, step - done, rng=rng, optimizer=optimizer, average=average)
        done, trained = step, round(time.time() - start, 1)
        alone = policy_alone(policy, "metaworld", task, episodes, **env)
        averaged = policy_alone(average.module.eval(), "metaworld", task, episodes, **env)
        averaged = {f"ema_{k}": v for k, v in averaged.items()}
        row["checkpoints"][str(step)] = dict(alone, **averaged, loss=float(np.mean(losses[-20:])),
                                             train_seconds=trained)
        print(json.dumps({"seed": seed, "step": step, **row["checkpoints"][str(step)]}), flush=True)
    torch.save(policy.state_dict(), weights)
    torch.save(average.module.state_dict(), str(weights).replace(".pt", "_ema.pt"))
    return row


def merge(out: pathlib.Path, key: tuple, row: dict):
    rows = json.loads(out.read_text()) if out.exists() else []
    rows = [r for r in rows if (r["task"], r["seed"]) != key] + [row]
    out.write_text(json.dumps(rows, indent=1) + "\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--checkpoints", type=int, nargs="+", default=[1000, 2000], help="updates at which to evaluate")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--episode-frames", type=int, default=0, help="frames per evaluation episode (0: the suite's, 200)")
    p.add_argument("--ensemble-only", action="store_true", help="only evaluate the ensemble of the saved priors")
    p.add_argument("--out", default="benchmarks/results/prior_seeds.json")
    p.add_argument("--weights", default="runs/prior_seeds", help="folder for each seed's trained prior")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = pathlib.Path(a.out)
    folder = pathlib.Path(a.weights)
    folder.mkdir(parents=True, exist_ok=True)
    dataset = OfflineDataset(a.dataset, max_action_dim=A)
    indices = [i for i, r in enumerate(dataset.meta) if r["task"] == a.task]
    if not indices:
        raise SystemExit(f"{a.dataset} holds no trajectories of {a.task!r}")
    mask = task_mask(dataset, indices)
    env = {"episode_frames": a.episode_frames} if a.episode_frames else {}
    if not a.ensemble_only:
        data = BCData(dataset, indices)
        for seed in a.seeds:
            weights = folder / f"{a.task}_seed{seed}.pt"
            if not weights.exists():
                row = one_seed(data, mask, a.task, seed, sorted(a.checkpoints), a.episodes, weights, **env)
                merge(out, (a.task, seed), row)
    for kind in ("", "_ema"):  # the mean action of the final priors, and of their weight averages
        members = []
        for seed in a.seeds:
            weights = folder / f"{a.task}_seed{seed}{kind}.pt"
            if weights.exists():
                policy = BCPolicy(mask)
                policy.load_state_dict(torch.load(weights))
                members.append(policy.eval())
        if len(members) > 1:
            name = f"ensemble{len(members)}{kind}"
            alone = policy_alone(MeanPolicy(members), "metaworld", a.task, a.episodes, **env)
            print(json.dumps({"seed": name, **alone}), flush=True)
            merge(out, (a.task, name), {"task": a.task, "seed": name, **alone})
    return json.loads(out.read_text()) if out.exists() else []


if __name__ == "__main__":
    main()
