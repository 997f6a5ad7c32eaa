"""Update speed of the DrQ-v2 agent (core/drqv2.py), fp32 against bf16 autocast.

    python -m benchmarks.drqv2_update [--device auto] [--batch 256] [--image-size 64] [--repeats 5] [--rounds 2]

One update = one critic (and encoder) step, one actor step and the target critic's EMA, at the published sizes
(configs/method/drqv2.yaml: batch 256 windows of frames + nstep = 6 steps, 32 conv channels, 1024 hidden), on a
synthetic replay batch. The fp32 and bf16 agents are measured in alternating rounds (the median of `repeats`
updates after one warm-up each), so a machine whose load drifts shows it in both columns. Writes
benchmarks/results/drqv2-update-<device>[-<cpu>].json.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import time

import numpy as np
import torch

from core.drqv2 import DrQV2Agent
from benchmarks.throughput import sync
from core.runtime import allocator_settings, native_bf16, resolve_device, tune_malloc

A = 12


def synthetic_batch(b: int, t: int, size: int, device) -> dict:
    """A replay batch (B, T, ...) as core/replay.py samples it: uint8 frames, actions, rewards, episode flags."""
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.randint(0, 256, (b, t, size, size, 3), dtype=torch.uint8, generator=g),
             "action": torch.rand(b, t, A, generator=g) * 2 - 1, "reward": torch.rand(b, t, generator=g),
             "is_first": torch.zeros(b, t, dtype=torch.bool), "is_terminal": torch.zeros(b, t, dtype=torch.bool)}
    return {k: v.to(device) for k, v in batch.items()}


def time_updates(agent, batch, repeats: int) -> float:
    """Median seconds per update over `repeats` updates after one warm-up."""
    agent.train_step(batch)
    times = []
    for _ in range(repeats):
        sync(agent.device)
        start = time.perf_counter()
        agent.train_step(batch)
        sync(agent.device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    from omegaconf import OmegaConf
    device = resolve_device(args.device)
    cfg = OmegaConf.load(pathlib.Path(__file__).resolve().parents[1] / "configs" / "method" / "drqv2.yaml").method.drqv2
    t = int(cfg.frames) + int(cfg.nstep)
    batch = synthetic_batch(args.batch, t, args.image_size, device)
    mask = np.ones(A, np.float32)
    mask[6:] = 0  # a 6-dim body (walker, cheetah) padded to 12
    agents = {}
    for bf16 in (False, True):
        torch.manual_seed(0)
        agents[bf16] = DrQV2Agent((args.image_size, args.image_size, 3), mask, cfg, device, bf16)
    seconds = {False: [], True: []}
    for _ in range(args.rounds):
        for bf16, agent in agents.items():
            seconds[bf16].append(time_updates(agent, batch, args.repeats))
    fp32, bf16 = min(seconds[False]), min(seconds[True])
    cpu = "avx512bf16" if device.type == "cpu" and native_bf16(device) else "avx2" if device.type == "cpu" else ""
    meta = dict(device=str(device), gpu=torch.cuda.get_device_name() if device.type == "cuda" else None, cpu=cpu or None,
                native_bf16=native_bf16(device), threads=torch.get_num_threads(), torch=torch.__version__,
                batch=[args.batch, t], image_size=args.image_size, allocator=allocator_settings(), host=platform.node())
    result = dict(meta=meta, ms_per_update={"fp32": round(1000 * fp32, 1), "bf16": round(1000 * bf16, 1)},
                  rounds_s={"fp32": seconds[False], "bf16": seconds[True]}, speedup=round(fp32 / bf16, 2))
    print(f"device={meta['device']} threads={meta['threads']} batch={args.batch}x{t} image={args.image_size} "
          f"native bf16={meta['native_bf16']}")
    print(f"{'precision':<10}{'ms/update':>11}")
    for name, ms in result["ms_per_update"].items():
        print(f"{name:<10}{ms:>11.1f}")
    print(f"bf16 speed-up: {result['speedup']}x")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"drqv2-update-{device.type}{'-' + cpu if cpu else ''}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    tune_malloc("benchmarks.drqv2_update")
    main()
