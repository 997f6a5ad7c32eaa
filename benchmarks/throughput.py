"""Throughput of the DreamerV3 core and the env workers.

    python -m benchmarks.throughput [--sizes tiny small] [--device auto] [--bf16] [--compile] [--channels-last true|false]
        [--update eager compile-step graphs] [--run-frames 4000]

Measures world-model + actor-critic updates/s and ms/update at batch B x T (default 16 x 64), the update run
eagerly, as torch.compile of the whole train_step, or as one CUDA graph (core/graphs.py, CUDA only);
imagination latent steps/s (N starts x horizon, no grad); DMC env steps/s with rendering for 1 and 2 workers;
and (--run-frames N > 0) a short real run of the quick default (`python -m transfer.run preset=quick`, N frames,
--run-overrides appended): its wall time, where it went (world model, actor-critic, acting, env waiting, batch
sampling, evaluation, checkpoints, other: the loop's perf/time_* shares) and the peak resident memory of the
main process and of the largest env worker. Prints tables and writes JSON to benchmarks/results/. The
allocator settings in force are part of the result (the script re-execs itself with tuned glibc malloc unless
told not to).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from core.agent import Agent
from core.runtime import allocator_settings, resolve_device, tune_malloc
from benchmarks.envs import bench_envs, print_table

A = 12


def config(size: str, bf16: bool, compile_: bool, channels_last: str = "true"):
    from hydra import compose, initialize_config_dir
    root = pathlib.Path(__file__).resolve().parents[1]
    with initialize_config_dir(config_dir=str(root / "configs"), version_base=None):
        return compose("config", overrides=[f"model={size}", f"model.bf16={bf16}", f"model.compile={compile_}",
                                            f"model.channels_last={channels_last}"])


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def update_fn(agent, batch, how: str):
    """agent.train_step as benchmarked: eager, torch.compile of the whole update, or a CUDA graph of it."""
    if how == "compile-step":
        return torch.compile(agent.train_step)
    if how == "graphs":
        from core.graphs import GraphedTrainStep
        return GraphedTrainStep(agent, {k: v.to(agent.device) for k, v in batch.items()})
    return agent.train_step


def bench_updates(size, device, b, t, bf16, compile_, repeats, how="eager", channels_last="true"):
    cfg = config(size, bf16, compile_, channels_last)
    mask = np.zeros(A, np.float32)
    mask[:6] = 1
    agent = Agent({"image": (64, 64, 3)}, mask, cfg.model, device)
    batch = dict(image=torch.randint(0, 256, (b, t, 64, 64, 3), dtype=torch.uint8),
                 action=torch.rand(b, t, A) * torch.as_tensor(mask), reward=torch.rand(b, t),
                 is_first=torch.zeros(b, t, dtype=torch.bool), is_terminal=torch.zeros(b, t, dtype=torch.bool))
    batch["is_first"][:, 0] = True
    step = update_fn(agent, batch, how)
    if how == "graphs":
        batch = {k: v.to(device) for k, v in batch.items()}  # a loader would hand device batches to the graph
    for _ in range(2 if compile_ or how != "eager" else 1):  # warm-up (and compilation)
        step(batch)
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        step(batch)
    sync(device)
    update_s = (time.perf_counter() - start) / repeats

    n, horizon = b * t, cfg.model.ac.horizon
    _, post, _ = agent.wm.loss({k: v.to(device) for k, v in batch.items()})
    starts = {k: v.detach().flatten(0, 1) for k, v in post.items()}
    with torch.no_grad(), agent.autocast():
        agent.ac.imagine(agent.wm, starts, horizon)
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            agent.ac.imagine(agent.wm, starts, horizon)
        sync(device)
    imag_s = (time.perf_counter() - start) / repeats
    params = sum(p.numel() for p in agent.wm.pretrained_modules().parameters())
    return dict(size=size, update=how, wm_params_m=round(params / 1e6, 2), updates_per_s=1 / update_s,
                ms_per_update=1000 * update_s,
                seconds_per_update=update_s, imagination_steps_per_s=n * horizon / imag_s)


def bench_run(frames: int, device: str, bf16: bool, overrides: list[str]) -> dict:
    """A short real run through the CLI in a temporary run dir; its last perf row, wall time and frames/s."""
    args = ["preset=quick", f"trainer.steps={frames}", "trainer.eval_every=0", "logger.wandb=disabled",
            "logger.progress=false", f"device={device}", f"model.bf16={bf16}", *overrides]
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "transfer.run", *args, f"run_dir={run_dir}"],
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode:
            raise SystemExit(f"the benchmark run failed ({' '.join(args)}):\n{done.stderr[-2000:]}")
        rows = [json.loads(line) for line in (pathlib.Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    perf = [r for r in rows if "perf/time_other" in r][-1]
    updates = max(r.get("train/updates", 0) for r in rows)
    return dict(args=args, frames=frames, updates=updates, total_s=wall, frames_per_s=frames / wall,
                **{k[len("perf/"):]: v for k, v in perf.items() if k.startswith("perf/") and k != "perf/env_steps_per_s"})


def print_run(run: dict):
    print(f"\nquick run: {run['frames']} frames, {run['updates']} updates in {run['total_s']:.1f} s "
          f"(the loop {run['wall_s']:.1f} s) "
          f"({run['frames_per_s']:.1f} frames/s; peak RSS main {run['peak_rss_mb']:.0f} MiB, "
          f"largest env worker {run['worker_peak_rss_mb']:.0f} MiB)")
    shares = sorted(((k[len("time_"):], v) for k, v in run.items() if k.startswith("time_")), key=lambda kv: -kv[1])
    print("  " + "  ".join(f"{k} {100 * v:.1f}%" for k, v in shares))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["tiny", "small"])
    p.add_argument("--device", default="auto")
    p.add_argument("--batch", type=int, nargs=2, default=[16, 64], metavar=("B", "T"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--compile", action="store_true", help="model.compile: the encoder, decoder, GRU and actor")
    p.add_argument("--channels-last", choices=["true", "false"], default="true",
                   help="model.channels_last: NHWC convolutions (the default since 2026-11-30)")
    p.add_argument("--update", nargs="+", default=["eager"], choices=["eager", "compile-step", "graphs"],
                   help="how the whole update runs: eager, torch.compile of train_step, a CUDA graph (core/graphs.py)")
    p.add_argument("--env-task", default="walker_walk")
    p.add_argument("--env-steps", type=int, default=300)
    p.add_argument("--no-envs", action="store_true")
    p.add_argument("--run-frames", type=int, default=4000, help="frames of the quick run (0: skip it)")
    p.add_argument("--run-overrides", nargs="*", default=[], help="Hydra overrides for the quick run")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    device = resolve_device(args.device)
    models = [bench_updates(s, device, *args.batch, args.bf16, args.compile, args.repeats, how, args.channels_last)
              for s in args.sizes for how in args.update]
    envs = [] if args.no_envs else [bench_envs("dmc", args.env_task, w, args.env_steps) for w in (1, 2)]
    run = bench_run(args.run_frames, args.device, args.bf16, args.run_overrides) if args.run_frames > 0 else None
    meta = dict(device=str(device), gpu=torch.cuda.get_device_name() if device.type == "cuda" else None,
                cpu_threads=torch.get_num_threads(), torch=torch.__version__, bf16=args.bf16,
                compile=args.compile, channels_last=args.channels_last, batch=args.batch, allocator=allocator_settings(), host=platform.node())
    print(f"\ndevice={meta['device']} gpu={meta['gpu']} threads={meta['cpu_threads']} bf16={args.bf16} "
          f"compile={args.compile} batch={args.batch[0]}x{args.batch[1]} allocator={meta['allocator']}")
    print(f"{'model':<8}{'update':<14}{'WM params':>11}{'updates/s':>12}{'ms/update':>11}{'imagination steps/s':>22}")
    for m in models:
        print(f"{m['size']:<8}{m['update']:<14}{m['wm_params_m']:>10}M{m['updates_per_s']:>12.3f}{m['ms_per_update']:>11.1f}"
              f"{m['imagination_steps_per_s']:>22,.0f}")
    if envs:
        print()
        print_table(envs)
    if run:
        print_run(run)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = f"{device.type}{'-bf16' if args.bf16 else ''}{'-compile' if args.compile else ''}"
    tag += "-contiguous" if args.channels_last == "false" else ""
    tag += "".join(f"-{how}" for how in args.update if how != "eager")
    if args.batch != [16, 64]:
        tag += f"-b{args.batch[0]}x{args.batch[1]}"  # the 16 x 64 results keep their file
    path = out / f"throughput-{tag}.json"
    path.write_text(json.dumps(dict(meta=meta, models=models, envs=envs, run=run), indent=2))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    tune_malloc("benchmarks.throughput")
    main()
