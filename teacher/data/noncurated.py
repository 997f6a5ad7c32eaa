"""GSA's non-curated offline dataset at a scale that fits 2 CPU cores, built by one command.

    python -m teacher.data.noncurated --dataset runs/noncurated/data [--mw-tasks all] [--noise 0.1 0.3 0.5 1.0 2.0]
        [--mw-episodes 2 | --mw-episodes 10 10 10 2 2] [--dmc-tasks walker_walk cheetah_run ...] [--dmc-episodes 6] [--workers 2]

What it holds (GSA, Sec. 4: noisy experts of all 50 Meta-World tasks at sigma in {0.1, 0.3, 0.5, 1.0, 2.0}
plus unsupervised DMC data on several bodies; reward-free for pretraining as always):
- Meta-World: the scripted expert of every task with Gaussian action noise sigma, `--mw-episodes`
  episodes per (task, sigma), in the env settings of configs/env/metaworld.yaml (200 frames, action
  repeat 2, corner2 camera), so the targets' own noisy experts are in it; one count for every sigma, or
  one count per sigma (e.g. `--mw-episodes 10 10 10 2 2`: more low-noise episodes, as GSA's prior needs);
- DMC: uniform-random episodes on `--dmc-tasks` (one per body by default; 1000 frames, action repeat 2),
  under configs/env/dmc.yaml's conventions (its `convention` key, recorded in build.json).

With --teacher DIR it then pretrains a tiny generalist teacher on the whole dataset (reward-free,
teacher.pretrain with model=tiny, the quick preset's model) into DIR/teacher.pt, once: a finished
teacher is reused, an interrupted one resumes.

Both stages are `python -m teacher.data.collect` runs: rerunning the command (also after a kill) collects
only the missing episodes. ROOT/build.json records the commands, the build time (summed over resumed
runs), the size on disk and the experts' success per task and sigma (success at any step and at the
last step, GSA's score); `--report` prints it again without collecting.
"""
from __future__ import annotations

import argparse
import collections
import json
import pathlib
import sys
import time

import numpy as np

NOISE = [0.1, 0.3, 0.5, 1.0, 2.0]
DMC_TASKS = ["walker_walk", "cheetah_run", "quadruped_walk", "hopper_hop", "cartpole_swingup", "reacher_easy"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m teacher.data.noncurated", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="dataset folder (created if missing; resumed)")
    p.add_argument("--mw-tasks", nargs="+", default=["all"], help="Meta-World tasks, or 'all' (the 50)")
    p.add_argument("--noise", nargs="+", type=float, default=NOISE, help="expert action-noise stds")
    p.add_argument("--mw-episodes", type=int, nargs="+", default=[2],
                   help="episodes per Meta-World task and noise level: one count, or one per --noise level")
    p.add_argument("--dmc-tasks", nargs="*", default=DMC_TASKS, help="DMC tasks (one per body)")
    p.add_argument("--dmc-episodes", type=int, default=6, help="random episodes per DMC task")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--teacher", help="also pretrain a tiny generalist teacher into this folder (cached)")
    p.add_argument("--pretrain-steps", type=int, default=1500, help="teacher updates (batch 16 x 32)")
    p.add_argument("--max-action-dim", type=int, default=12, help="as transfer.run's max_action_dim")
    p.add_argument("--report", action="store_true", help="print build.json's tables; collect nothing")
    args = p.parse_args(argv)
    if len(args.mw_episodes) not in (1, len(args.noise)) or min(args.mw_episodes) < 0:
        p.error(f"--mw-episodes takes one count or one per noise level ({len(args.noise)}), all >= 0")
    return args


def commands(args) -> dict[str, list[str]]:
    """teacher.data.collect command lines, one per stage."""
    common = ["--dataset", str(args.dataset), "--workers", str(args.workers), "--seed", str(args.seed)]
    counts = args.mw_episodes * len(args.noise) if len(args.mw_episodes) == 1 else args.mw_episodes
    by_count = collections.defaultdict(list)  # episodes -> the noise levels with that many (one collect run each)
    for noise, count in zip(args.noise, counts):
        by_count[count].append(noise)
    out = {}
    for count, noises in sorted(by_count.items(), reverse=True):
        if count:  # episode seeds depend on (seed, task, noise, index) only: the same data however it is split
            stage = "metaworld" if len(by_count) == 1 else f"metaworld-x{count}"
            out[stage] = [*common, "--suite", "metaworld", "--tasks", *args.mw_tasks, "--policy", "expert",
                          "--noise", *[f"{n:g}" for n in noises], "--episodes", str(count)]
    if args.dmc_tasks and args.dmc_episodes:
        out["dmc"] = [*common, "--suite", "dmc", "--tasks", *args.dmc_tasks, "--policy", "random",
                      "--episodes", str(args.dmc_episodes)]
    return out


def expert_success(rows: list[dict]) -> dict[str, dict[str, list[float]]]:
    """{task: {sigma: [success any step, success at the last step, episodes]}} of the Meta-World experts."""
    groups = collections.defaultdict(list)
    for r in rows:
        if r.get("suite") == "metaworld" and r.get("policy", "").startswith("expert"):
            groups[r["task"], f"{float(r['noise']):g}"].append(r)
    out: dict = collections.defaultdict(dict)
    for (task, noise), rs in sorted(groups.items()):
        final = [r["success_final"] for r in rs if "success_final" in r]
        out[task][noise] = [float(np.mean([r.get("success", 0.0) for r in rs])),
                            float(np.mean(final)) if final else float("nan"), len(rs)]
    return dict(out)


def describe(root: pathlib.Path) -> dict:
    """Size, counts and expert success read from the dataset itself (so they cover resumed builds)."""
    from teacher.data.dataset import read_manifest
    rows = read_manifest(root)
    per_suite = collections.Counter(r.get("suite", "?") for r in rows)
    bodies = sorted({r.get("embodiment", "?") for r in rows})
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    return dict(trajectories=len(rows), transitions=int(sum(r["length"] - 1 for r in rows)),
                per_suite=dict(per_suite), embodiments=bodies, tasks=len({(r.get("suite"), r.get("task")) for r in rows}),
                bytes=size, expert_success=expert_success(rows))


def table(info: dict, tasks: list[str] | None = None) -> str:
    """Markdown: experts' success at the last step per sigma (any step in brackets), one row per task."""
    success = info["expert_success"]
    noises = sorted({n for t in success.values() for n in t}, key=float)
    lines = ["| task | " + " | ".join(f"sigma {n}" for n in noises) + " |", "|---" * (len(noises) + 1) + "|"]
    for task in tasks or sorted(success):
        cells = [f"{v[1]:.2f} ({v[0]:.2f}, n={v[2]})" if (v := success.get(task, {}).get(n)) else "-" for n in noises]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(info: dict) -> str:
    return (f"{info['trajectories']} trajectories, {info['transitions']} transitions, {info['bytes'] / 2**20:.0f} MiB, "
            f"{info['tasks']} tasks, embodiments {', '.join(info['embodiments'])}; suites {info['per_suite']}; "
            f"build time {info.get('seconds', 0) / 60:.1f} min")


def main(argv=None) -> dict:
    args = parse_args(argv)
    root = pathlib.Path(args.dataset)
    record = root / "build.json"
    old = json.loads(record.read_text()) if record.exists() else {}
    if args.report:
        if not old:
            raise SystemExit(f"error: {record} does not exist: build the dataset first (without --report)")
        print(summary(old) + "\n\n" + table(old))
        return old
    from omegaconf import OmegaConf
    from teacher.data.collect import CONFIGS, main as collect
    seconds = dict(old.get("stage_seconds", {}))
    for stage, argv_ in commands(args).items():
        start = time.time()
        collect(argv_)
        seconds[stage] = seconds.get(stage, 0.0) + time.time() - start
    info = describe(root)
    dmc_env = OmegaConf.to_container(OmegaConf.load(CONFIGS / "dmc.yaml"))
    info.update(commands={k: ["python -m teacher.data.collect", *v] for k, v in commands(args).items()},
                stage_seconds=seconds, seconds=sum(seconds.values()),
                dmc_convention=dmc_env.get("convention", "dmc"))
    record.write_text(json.dumps(info, indent=1))
    print(summary(info) + "\n\n" + table(info), file=sys.stderr)
    if args.teacher:
        info["teacher"] = str(pretrain(root, pathlib.Path(args.teacher), args.pretrain_steps, args.max_action_dim))
    return info


def pretrain(root: pathlib.Path, run: pathlib.Path, steps: int, max_action_dim: int) -> pathlib.Path:
    """A tiny generalist teacher on the whole dataset, built once (run/teacher.pt)."""
    from teacher.embedded import compose_pretrain, finished
    from teacher.pretrain import Pretrainer
    teacher = run / "teacher.pt"
    if finished(teacher, steps) is None:
        cfg = compose_pretrain([f"dataset={root.resolve()}", f"run_dir={run}", "kind=generalist", "model=tiny",
                                f"steps={steps}", "batch_size=16", "batch_length=32", f"max_action_dim={max_action_dim}",
                                f"eval_every={max(steps // 5, 1)}", "workers=0", "device=auto", "logger.wandb=disabled"])
        Pretrainer(cfg, run).run()
    print(f"teacher: {teacher}", file=sys.stderr)
    return teacher


if __name__ == "__main__":
    main()
