"""Statistics of finished runs, read from their run directories (what `python -m transfer.run` writes):

    python -m transfer.report.replay_stats actions RUN_DIR [RUN_DIR ...]
    python -m transfer.report.replay_stats training-success RUN_DIR [RUN_DIR ...]
    python -m transfer.report.replay_stats reward-fit RUN_DIR [RUN_DIR ...]

- actions: the executed actions in RUN_DIR/replay/*.npz per block of 10 episodes (Meta-World's 4 native
  dims dx, dy, dz, gripper): mean and standard deviation per dim and the fraction of saturated actions
  (|a| > 0.95). A guidance prior that replays near-constant actions shows as a standard deviation near 0
  in the first blocks.
- training-success: training-episode success rate / mean return per 4k-frame block of the first 20k
  frames, from RUN_DIR/metrics.jsonl.
- reward-fit: how well the run's reward head fits the rewards in its own replay (checkpoint.pt, replay/
  and hydra/config.yaml; Meta-World, 4 native action dims). The world model filters 20 random replay
  episodes and the 15 with the highest return; one JSON line per run gives the reward head's R^2 on the
  random ones and its mean predicted reward against the real mean on the best ones.

The replay and checkpoint are not kept in docs/results (its runs.jsonl.gz archives hold metrics only), so
these read runs on the machine that made them.
"""
from __future__ import annotations

import argparse
import glob
import json
import pathlib
import sys

import numpy as np

from core.logger import read_rows

DIMS = 4                          # Meta-World's native action dims
BLOCK_EPISODES = 10
BLOCK_FRAMES, FRAMES = 4000, 20000
NEEDS = {"actions": ["replay"], "training-success": ["metrics.jsonl"],
         "reward-fit": ["checkpoint.pt", "replay", "hydra/config.yaml"]}


def replay_files(run) -> list[str]:
    return sorted(glob.glob(f"{run}/replay/*.npz"))


def action_blocks(run) -> list[tuple[int, np.ndarray, np.ndarray, float]]:
    """(first episode, mean, std, saturated fraction) per block of 10 replay episodes of 99+ actions;
    each episode's first row (the reset, no action) and the padded dims past the 4th are left out."""
    episodes = [np.load(f)["action"][1:, :DIMS] for f in replay_files(run)]
    episodes = [e for e in episodes if len(e) >= 99]
    blocks = []
    for i in range(0, len(episodes), BLOCK_EPISODES):
        a = np.concatenate(episodes[i:i + BLOCK_EPISODES])
        blocks.append((i, a.mean(0), a.std(0), float((np.abs(a) > 0.95).mean())))
    return blocks


def actions(runs) -> None:
    for run in runs:
        print(pathlib.Path(run).name)
        for i, mean, std, saturated in action_blocks(run):
            print(f"   episodes {i:3d}-{i + BLOCK_EPISODES - 1:3d}  mean {np.round(mean, 2)}  std {np.round(std, 2)}  "
                  f"saturated {saturated:.2f}")


def training_blocks(run) -> list[tuple[float, float] | None]:
    """(success rate, mean return) of the training episodes ending in each 4k-frame block; None: none."""
    rows = read_rows(run)   # a resumed run's redone episodes once
    episodes = [(r["step"], r["train/success"], r["train/return"]) for r in rows if "train/success" in r]
    cells = []
    for start in range(0, FRAMES, BLOCK_FRAMES):
        block = [(s, ret) for step, s, ret in episodes if start < step <= start + BLOCK_FRAMES]
        cells.append((float(np.mean([s for s, _ in block])), float(np.mean([r for _, r in block]))) if block else None)
    return cells


def training_success(runs) -> None:
    print(f"{'run':28s}" + "".join(f"{f'{a // 1000}-{(a + BLOCK_FRAMES) // 1000}k':>14s}"
                                   for a in range(0, FRAMES, BLOCK_FRAMES)))
    for run in runs:
        cells = [f"{c[0]:.2f} / {c[1]:5.0f}" if c else "-" for c in training_blocks(run)]
        print(f"{pathlib.Path(run).name:28s}" + "".join(f"{c:>14s}" for c in cells))


def episode_rewards(agent, episodes) -> tuple[np.ndarray, np.ndarray]:
    """(real, predicted) rewards of the episodes' first 100 steps, flattened."""
    import torch
    from transfer.diagnose import predicted_rewards
    b = {k: torch.as_tensor(np.stack([e[k][:100] for e in episodes])) for k in ("image", "action", "reward", "is_first")}
    return b["reward"].float().flatten().numpy(), predicted_rewards(agent, b).flatten()


def reward_fit(run) -> dict:
    """The reward head's R^2 on 20 random replay episodes (of 100+ frames) and its mean predicted reward
    against the real one on the 15 best, for one run directory."""
    import torch
    from omegaconf import OmegaConf
    from core import checkpoint
    from transfer.diagnose import world_model_agent
    cfg = OmegaConf.to_container(OmegaConf.load(f"{run}/hydra/config.yaml"))
    mask = np.zeros(cfg["max_action_dim"], np.float32)
    mask[:DIMS] = 1
    agent = world_model_agent(checkpoint.load(f"{run}/checkpoint.pt"), cfg, mask)
    episodes = [dict(np.load(f)) for f in replay_files(run)]
    episodes = [e for e in episodes if e["image"].shape[0] >= 100]
    torch.manual_seed(0)
    picked = np.random.default_rng(0).permutation(len(episodes))[:20]
    real, pred = episode_rewards(agent, [episodes[i] for i in picked])
    best = sorted(episodes, key=lambda e: -e["reward"].sum())[:15]
    real_b, pred_b = episode_rewards(agent, best)
    return {"run": pathlib.Path(run).name, "episodes": len(episodes),
            "r2_random_20": round(float(1 - ((real - pred) ** 2).mean() / real.var()), 3),
            "best_15_real_mean": round(float(real_b.mean()), 2), "best_15_predicted_mean": round(float(pred_b.mean()), 2)}


def reward_fits(runs) -> None:
    import torch
    torch.set_num_threads(1)
    for run in runs:
        print(json.dumps(reward_fit(run)), flush=True)


COMMANDS = {"actions": actions, "training-success": training_success, "reward-fit": reward_fits}


def missing(run: str, command: str) -> str | None:
    """Why `run` cannot be read by `command`, or None."""
    path = pathlib.Path(run)
    if not path.is_dir():
        return f"{run}: no such run directory"
    absent = [name for name in NEEDS[command] if not (path / name).exists()]
    return f"{run}: no {', '.join(absent)} in this run directory" if absent else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m transfer.report.replay_stats", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("actions", "executed actions per block of 10 replay episodes"),
                       ("training-success", "training success / return per 4k-frame block"),
                       ("reward-fit", "the reward head's fit to the run's own replay")):
        sub.add_parser(name, help=text, description=text).add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    args = parser.parse_args(argv)
    for run in args.run_dirs:
        if (why := missing(run, args.command)):
            print(f"error: {why} (`{args.command}` reads {', '.join(NEEDS[args.command])})", file=sys.stderr)
            return 1
    COMMANDS[args.command](args.run_dirs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
