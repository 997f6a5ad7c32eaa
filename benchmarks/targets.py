"""Which tasks can show transfer paying off? Per candidate task (issue 18, item 7):

    python -m benchmarks.targets --dataset runs/noncurated/data --tasks drawer-open door-unlock ...
        [--random-episodes 20] [--bc-steps 1000] [--bc-episodes 10] [--out benchmarks/results/targets.json]

- a uniform random policy's success (at the last step and at any step) over --random-episodes episodes;
- the dataset's noisy experts of the task: episodes and success per sigma (from the manifest);
- a BC prior (GSA's network and recipe, student/bc.py) trained on the task's own trajectories in the
  dataset (task-filtered, as GSA gave its baselines) for --bc-steps updates, then acting alone for
  --bc-episodes episodes (0 steps: skipped);
- with --teacher PATH: GSA's retrieval as a gsa run does it (the teacher's embedding of 10 reset frames of
  the task, the --k nearest first frames of compatible trajectories) and its purity: the share of the
  retrieved trajectories that are the task's own, and the other tasks it brings in.

Guidance can only help where the prior sometimes succeeds, and there is only something to show where a
random policy (and DreamerV3 from scratch, measured by the sweep) does not. Env settings: configs/env/
<suite>.yaml (Meta-World: 200 frames, action repeat 2). Results are appended per task to --out (JSON),
so an interrupted run keeps what it measured; a task already in --out is skipped unless --redo.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np
import torch

from envs import env_fns
from envs.list import suite_config
from envs.workers import EnvPool
from envs.episodes import run_episodes, summarize

A = 12


def random_success(suite: str, task: str, episodes: int, seed: int = 0) -> dict:
    if episodes <= 0:
        return {}
    cfg = suite_config(suite)
    rng = np.random.default_rng(seed)
    with EnvPool(env_fns(cfg, task, seed + 30_000, A, 2)) as pool:
        n, mask = pool.num_envs, pool.specs[0].action_mask
        finished = run_episodes(pool, lambda obs: (rng.uniform(-1, 1, (n, A)) * mask).astype(np.float32), episodes, A)
    s = summarize(finished, "")
    return {"random_success": s["success_final"], "random_success_any": s["success"],
            "random_return": s["return"], "random_episodes": s["episodes"]}


def experts(dataset, task: str) -> dict:
    from teacher.data.noncurated import expert_success
    rows = [r for r in dataset.meta if r["task"] == task]
    by_sigma = expert_success(rows).get(task, {})  # {sigma: [success any step, at the last step, episodes]}
    return {"dataset_episodes": len(rows),
            "expert_success_by_sigma": {s: round(v[1], 2) for s, v in sorted(by_sigma.items(), key=lambda kv: float(kv[0]))}}


def policy_alone(policy, suite: str, task: str, episodes: int, seed: int = 0, **env) -> dict:
    """A BC policy (3 stacked frames -> action) acting alone for whole episodes on fresh envs of the task, its
    frames stacked as in guidance (student.guidance.GuidedActing with an always-on schedule). `env`: overrides
    of the suite's env settings (e.g. episode_frames)."""
    from student.guidance import GuidanceSchedule, GuidedActing
    cfg = dict(suite_config(suite), **env)
    rng = np.random.default_rng(seed)  # the always-on schedule draws nothing from it
    with EnvPool(env_fns(cfg, task, seed + 40_000, A, 2)) as pool:
        length = cfg["episode_frames"] // cfg["action_repeat"]  # agent steps per episode
        guide = GuidedActing(policy, GuidanceSchedule.always(length), pool.num_envs)
        zeros = np.zeros((pool.num_envs, A), np.float32)
        finished = run_episodes(pool, lambda obs: guide.apply(obs, zeros, 0, rng)[0], episodes, A)
    s = summarize(finished, "")
    return {"bc_alone_success": s["success_final"], "bc_alone_success_any": s["success"],
            "bc_alone_return": s["return"], "bc_alone_episodes": s["episodes"],
            "bc_alone_guided": float(guide.guided_steps / max(guide.steps, 1))}


def task_mask(dataset, indices: list[int]) -> np.ndarray:
    """(A,) action mask of the task whose trajectories are `indices`: 1 on its native dims."""
    mask = np.zeros(A, np.float32)
    mask[: dataset.meta[indices[0]]["action_dim"]] = 1
    return mask


def bc_alone(dataset, suite: str, task: str, steps: int, episodes: int, seed: int = 0) -> dict:
    from student.bc import BCPolicy, train_bc
    indices = [i for i, r in enumerate(dataset.meta) if r["task"] == task]
    if not indices or steps <= 0:
        return {}
    mask = task_mask(dataset, indices)
    torch.manual_seed(seed)
    policy = BCPolicy(mask)
    start = time.time()
    losses = train_bc(policy, dataset, indices, steps, rng=np.random.default_rng(seed))
    out = policy_alone(policy, suite, task, episodes, seed) if episodes > 0 else {}
    out.update(bc_steps=steps, bc_first_loss=losses[0], bc_final_loss=float(np.mean(losses[-20:])),
               bc_seconds=round(time.time() - start, 1))
    return out


def retrieval_purity(dataset, teacher: str, suite: str, task: str, k: int, queries: int = 10, seed: int = 0) -> dict:
    """Which trajectories GSA's first-frame retrieval brings for `task` (reset seeds as in student.gsa)."""
    from envs.list import registry
    from student.gsa import query_frames
    from student.retrieval import retrieve
    frames = query_frames(suite_config(suite), task, seed, A, queries)  # (Q, R, R, 3)
    action_dim = next(t.native_action_dim for t in registry([suite]) if t.task == task)
    got = retrieve(dataset, None, teacher, frames, action_dim, k=k, allow_fewer=True)
    tasks = {t: n for (_, t), n in got.by_task.items()}
    return {"retrieval_k": len(got.indices), "retrieval_purity": tasks.get(task, 0) / max(len(got.indices), 1),
            "retrieval_others": {t: n for t, n in sorted(tasks.items(), key=lambda kv: -kv[1]) if t != task}}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.targets", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True)
    p.add_argument("--tasks", nargs="+", required=True)
    p.add_argument("--suite", default="metaworld")
    p.add_argument("--random-episodes", type=int, default=20)
    p.add_argument("--bc-steps", type=int, default=1000)
    p.add_argument("--bc-episodes", type=int, default=10)
    p.add_argument("--teacher", help="a teacher.pt: measure GSA's retrieval purity for each task")
    p.add_argument("--k", type=int, default=10, help="trajectories retrieved (with --teacher)")
    p.add_argument("--out", default="benchmarks/results/targets.json")
    p.add_argument("--redo", action="store_true")
    args = p.parse_args(argv)
    from teacher.data.dataset import OfflineDataset
    dataset = OfflineDataset(args.dataset, max_action_dim=A)
    out = pathlib.Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    for task in args.tasks:
        key = f"{args.suite}/{task}/bc{args.bc_steps}"
        if key in results and not args.redo:
            continue
        row = {**random_success(args.suite, task, args.random_episodes), **experts(dataset, task),
               **bc_alone(dataset, args.suite, task, args.bc_steps, args.bc_episodes)}
        if args.teacher:
            row.update(retrieval_purity(dataset, args.teacher, args.suite, task, args.k))
        results[key] = row
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1))
        print(json.dumps({key: row}), flush=True)
    print(f"{'task':<28} {'random':>7} {'experts (final success by sigma)':<44} {'BC alone':>8} {'purity':>7}")
    for key, row in results.items():
        sig = " ".join(f"{s}:{v:.2f}" for s, v in row["expert_success_by_sigma"].items())
        print(f"{key:<28} {row.get('random_success', float('nan')):>7.2f} {sig:<44} {row.get('bc_alone_success', float('nan')):>8.2f} "
              f"{row.get('retrieval_purity', float('nan')):>7.2f}")


if __name__ == "__main__":
    main()
