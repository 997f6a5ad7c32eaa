"""Env steps/s per suite, rendering included, through the real worker pool (1 and 2 workers), and the
seconds a pool takes to start (its workers built and their envs answering; the first pool of the process
also starts the fork server, envs/workers.py).

    python -m benchmarks.envs [--suites dmc metaworld driving] [--steps 300]

One representative task per suite with its default config (configs/env/<suite>.yaml); random
padded actions. Prints a table and writes JSON to benchmarks/results/envs.json. CARLA is left out
(it needs a server). On a 2-core machine, 2 workers can at best double the 1-worker rate.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import platform
import time

import numpy as np

from envs import env_fns
from envs.list import suite_config
from envs.workers import EnvPool

A = 12
TASKS = {"dmc": "walker_walk", "metaworld": "drawer-open", "driving": "highway"}


def bench_envs(suite: str, task: str, workers: int, steps: int) -> dict:
    """Agent steps/s (and simulator frames/s) of `workers` envs stepped in lock-step."""
    cfg = suite_config(suite)
    fns = env_fns(cfg, task, 0, A, workers)
    begin = time.perf_counter()
    with EnvPool(fns) as pool:
        start_s = time.perf_counter() - begin
        mask = pool.specs[0].action_mask
        rng = np.random.default_rng(0)
        for _ in range(5):  # warm-up (first renders, first resets)
            pool.step(rng.uniform(-1, 1, (workers, A)).astype(np.float32) * mask)
        start = time.perf_counter()
        for _ in range(steps):
            pool.step(rng.uniform(-1, 1, (workers, A)).astype(np.float32) * mask)
        elapsed = time.perf_counter() - start
        repeat = pool.specs[0].action_repeat
    return dict(suite=suite, task=task, workers=workers, action_repeat=repeat, start_s=start_s,
                agent_steps_per_s=steps * workers / elapsed, frames_per_s=repeat * steps * workers / elapsed)


def print_table(rows: list[dict]) -> None:
    print(f"{'suite':<10}{'task':<16}{'workers':>8}{'repeat':>8}{'start s':>9}{'agent steps/s':>15}{'frames/s':>10}")
    for r in rows:
        print(f"{r['suite']:<10}{r['task']:<16}{r['workers']:>8}{r['action_repeat']:>8}{r['start_s']:>9.2f}"
              f"{r['agent_steps_per_s']:>15.1f}{r['frames_per_s']:>10.1f}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suites", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    rows = [bench_envs(s, TASKS[s], w, args.steps) for s in args.suites for w in (1, 2)]
    print_table(rows)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "envs.json"
    path.write_text(json.dumps(dict(host=platform.node(), steps=args.steps, rows=rows), indent=2))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
