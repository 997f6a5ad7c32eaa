"""Reward-free exploration data: one ensemble-disagreement agent (method=explore, teacher/data/explore.py)
per DMC task, trained through the one training loop, its replay appended to an offline dataset.

    python -m transfer.explore --dataset ROOT --tasks walker_walk cheetah_run ... | all [--episodes 10]
        [--seed 0] [--env-config key=value ...] [--run-config key=value ...]

Each task trains in ROOT/explore_runs/<task>-seed<S> (resumable: rerunning the command continues a
killed run) for --episodes episodes' worth of frames, then every complete episode of its replay not yet
in the dataset is imported (policy "explore", native actions, action[0] = 0). --env-config overrides
configs/env/dmc.yaml, --run-config the training run (default model=tiny trainer=quick).
"""
from __future__ import annotations

import argparse
import logging
import pathlib
import sys

from teacher.data.explore import import_replay

log = logging.getLogger(__name__)


def explore_config(task: str, seed: int, frames: int, run_dir: str, overrides: list[str]):
    """The transfer.run config of one exploration run (method=explore; model=tiny, trainer=quick unless overridden)."""
    from hydra import compose, initialize_config_dir
    root = pathlib.Path(__file__).resolve().parents[1] / "configs"
    with initialize_config_dir(config_dir=str(root), version_base=None):
        return compose("config", overrides=["method=explore", "env=dmc", "model=tiny", "trainer=quick", f"task={task}",
                                            f"seed={seed}", f"trainer.steps={frames}", f"run_dir={run_dir}",
                                            "trainer.final_eval_episodes=1", *overrides])


def collect(args, writer) -> None:
    """One exploration run per task in args.tasks, each imported into `writer` (a DatasetWriter)."""
    from transfer.build import build_trainer
    overrides = list(args.run_config or []) + [f"env.{kv}" for kv in (args.env_config or [])]
    for task in args.tasks:
        run_dir = pathlib.Path(args.dataset) / "explore_runs" / f"{task}-seed{args.seed}"
        cfg = explore_config(task, args.seed, 0, str(run_dir), overrides)
        frames = args.episodes * cfg.env.episode_frames + cfg.env.action_repeat  # +1 step stores the last obs
        cfg.trainer.steps = frames
        trainer = build_trainer(cfg, run_dir)
        try:
            if trainer.step < frames:
                log.info("exploring %s for %d frames in %s", task, frames, run_dir)
                trainer.run()
        finally:
            trainer.close()
        spec = trainer.spec
        meta = dict(suite="dmc", task=task, embodiment=spec.embodiment, policy="explore", noise=None, seed=args.seed)
        n, steps = import_replay(run_dir, writer, meta, spec.native_action_dim)
        log.info("%s: imported %d exploration episodes (%d transitions)", task, n, steps)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m transfer.explore", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="dataset folder (created if missing; appended to)")
    p.add_argument("--tasks", nargs="+", required=True, help="DMC task names, or 'all' (python -m envs.list --suite dmc)")
    p.add_argument("--episodes", type=int, default=10, help="episodes per task")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--env-config", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of configs/env/dmc.yaml")
    p.add_argument("--run-config", nargs="*", default=[], metavar="KEY=VALUE",
                   help="transfer.run overrides of the exploration runs, e.g. model=small trainer.train_ratio=512")
    p.add_argument("--shard-mb", type=float, default=256, help="dataset shard size")
    args = p.parse_args(argv)
    if args.episodes < 1:
        p.error("--episodes must be >= 1")
    from envs import suite_module
    from teacher.data.collect import parse_overrides, suite_env_config
    from teacher.data.writer import DatasetWriter
    try:
        env_cfg = parse_overrides(args.env_config, suite_env_config("dmc"))
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    if args.tasks == ["all"]:
        args.tasks = [row.task for row in suite_module("dmc").tasks(env_cfg)]
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with DatasetWriter(args.dataset, shard_mb=args.shard_mb) as writer:
        collect(args, writer)


if __name__ == "__main__":
    sys.exit(main())
