"""Evaluate a run's last checkpoint again, e.g. under the other evaluation policy:

    python -m transfer.evaluate RUN_DIR [RUN_DIR ...] [--policy sample|mode] [--episodes 10]

The run is rebuilt from its own config (RUN_DIR/hydra/config.yaml) and resumed from its checkpoint (`rebuild`),
exactly as training would resume, then evaluated for --episodes episodes on the evaluation envs with
actions sampled from the actor (`sample`, DreamerV3's protocol and trainer.eval_policy's default) or
its mean (`mode`). The result is appended to RUN_DIR/metrics.jsonl as a `final/*` row at the
checkpoint's step with `final/sampled` (1: sampled actions), so `transfer.report` scores the run by
the latest evaluation; the earlier rows stay in the file. Nothing is trained.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

from omegaconf import OmegaConf, open_dict


# keys added after some runs were made -> the behaviour those runs had (filled in when they are rebuilt)
ADDED_KEYS = {"trainer.eval_policy": "mode", "trainer.overlap": False}
# method.components of runs made before the parts were split (2026-11-30) -> the same parts today
RENAMED_COMPONENTS = {("gsa",): ["retrieval", "rehearsal", "shift_monitor", "bc_prior", "guidance"],
                      ("vid2act",): ["distillation", "action_replay"],
                      ("gsa", "vid2act"): ["retrieval", "rehearsal", "shift_monitor", "bc_prior", "distillation",
                                           "action_replay", "vae_prior", "guidance"]}


def rebuild(run_dir, **overrides):
    """A finished (or checkpointed) run's Trainer, rebuilt from its own composed config (hydra/config.yaml,
    else the one saved in its checkpoint) and resumed from its checkpoint, exactly as training would
    resume; `overrides` are dotted keys set on the config (e.g. trainer.eval_policy="sample"). wandb is
    off, so the run's wandb history is not rewritten. Close it when done."""
    from core import checkpoint
    from transfer.build import build_trainer
    run_dir = pathlib.Path(run_dir)
    config = run_dir / "hydra" / "config.yaml"
    if not (run_dir / "checkpoint.pt").exists():
        raise SystemExit(f"{run_dir}: no checkpoint.pt; give a run directory of transfer.run")
    cfg = OmegaConf.load(config) if config.exists() else OmegaConf.create(checkpoint.load(run_dir / "checkpoint.pt")["config"])
    with open_dict(cfg):
        for key, value in {**ADDED_KEYS, **overrides}.items():
            if key in overrides or OmegaConf.select(cfg, key) is None:
                OmegaConf.update(cfg, key, value)
        cfg.logger.wandb = "disabled"
        old = tuple(cfg.method.get("components") or ())
        if old in RENAMED_COMPONENTS:
            cfg.method.components = RENAMED_COMPONENTS[old]
    return build_trainer(cfg, run_dir)


def evaluate_run(run_dir: pathlib.Path, policy: str, episodes: int) -> dict:
    trainer = rebuild(run_dir, **{"trainer.eval_policy": policy})
    try:
        return trainer.evaluate(episodes, final=True)
    finally:
        trainer.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m transfer.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--policy", choices=["sample", "mode"], default="sample")
    p.add_argument("--episodes", type=int, default=10)
    args = p.parse_args(argv)
    for run in map(pathlib.Path, args.run_dirs):
        result = evaluate_run(run, args.policy, args.episodes)
        print(json.dumps({"run": str(run), **result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
