"""How well does a finished run's reward head fit the rewards in its own replay?

    python docs/results/drawer_close_vid2act/analysis/reward_fit.py RUN_DIR [RUN_DIR ...]

For each run (checkpoint.pt + replay/ + hydra/config.yaml; Meta-World, 4 native action dims): the world
model filters 20 random replay episodes and the 15 with the highest return; prints the reward head's R^2
on the random ones and its mean predicted reward against the real mean on the best ones.
"""
import glob
import json
import pathlib
import sys

import numpy as np
import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[4]))
from core import checkpoint  # noqa: E402
from transfer.diagnose import predicted_rewards, world_model_agent  # noqa: E402


def rewards(agent, episodes):
    """(real, predicted) rewards of whole episodes, flattened."""
    b = {k: torch.as_tensor(np.stack([e[k][:100] for e in episodes])) for k in ("image", "action", "reward", "is_first")}
    return b["reward"].float().flatten().numpy(), predicted_rewards(agent, b).flatten()


def main(run: str) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(f"{run}/hydra/config.yaml"))
    mask = np.zeros(cfg["max_action_dim"], np.float32)
    mask[:4] = 1
    agent = world_model_agent(checkpoint.load(f"{run}/checkpoint.pt"), cfg, mask)
    episodes = [dict(np.load(f)) for f in sorted(glob.glob(f"{run}/replay/*.npz"))]
    episodes = [e for e in episodes if e["image"].shape[0] >= 100]
    torch.manual_seed(0)
    picked = np.random.default_rng(0).permutation(len(episodes))[:20]
    real, pred = rewards(agent, [episodes[i] for i in picked])
    best = sorted(episodes, key=lambda e: -e["reward"].sum())[:15]
    real_b, pred_b = rewards(agent, best)
    return {"run": pathlib.Path(run).name, "episodes": len(episodes),
            "r2_random_20": round(float(1 - ((real - pred) ** 2).mean() / real.var()), 3),
            "best_15_real_mean": round(float(real_b.mean()), 2), "best_15_predicted_mean": round(float(pred_b.mean()), 2)}


if __name__ == "__main__":
    torch.set_num_threads(1)
    for path in sys.argv[1:]:
        print(json.dumps(main(path)), flush=True)
