"""Offline dataset loader: sampling batches/s and resident memory as the dataset grows.

    python -m benchmarks.loader [--transitions 1000000] [--dir /tmp/wmt-loader-bench] [--traj-length 501]
                                [--shard-mb 256] [--seconds 15]

Builds a synthetic dataset with teacher.data.writer.DatasetWriter (lzf, --shard-mb MB shards) in growing
stages (10%, 30%, 100% of --transitions; a complete dataset left in --dir by an earlier run is reused,
each stage then reads the first trajectories with a `where` filter on their seed). The frames are cheap
stand-ins for rendered 64x64 scenes, so that they compress realistically rather than trivially: a
sky with a diagonal colour gradient over a checkered floor that scrolls, a disc and a square moving
on smooth paths, and pixel noise (15% of the pixels off by up to +-12 levels); lzf shrinks them
2.1x, gzip 4.2x (rendered DMC walker frames: 1.8x and 5.4x). Actions alternate between 6 and 4
native dims (padded to 12); rewards are recorded.

After each stage it measures sampling of batch 16 x 64 windows through OfflineDataset.loader() with
workers=0 and workers=2 (batches/s), the resident memory while sampling (VmRSS of this process, and
of this process plus its loader workers), the size on disk, bytes per transition and the write
throughput of the stage. Prints a table and writes JSON to benchmarks/results/loader.json
(loader-shard<N>mb.json for other shard sizes). Shards read back from the page cache when the
machine has the RAM for it, and other jobs on the machine show in the timings (the JSON keeps the
load average).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import platform
import time

import numpy as np

from teacher.data.dataset import OPEN_FILES, OfflineDataset, read_manifest
from teacher.data.writer import DatasetWriter

A = 12
STAGES = (0.1, 0.3, 1.0)


def synthetic_frames(length: int, rng: np.random.Generator) -> np.ndarray:
    """(L, 64, 64, 3) uint8 frames of one synthetic trajectory (see the module docstring)."""
    y, x = np.mgrid[0:64, 0:64]                                            # (64, 64)
    top, bottom = rng.uniform(40, 220, 3), rng.uniform(40, 220, 3)
    ramp = (0.7 * y + 0.3 * x)[..., None] / 63                             # (64, 64, 1) diagonal gradient
    img = np.empty((length, 64, 64, 3), np.int16)
    img[:] = (top + ramp * (bottom - top)).astype(np.int16)                # sky, (64, 64, 3) over L
    t = np.arange(length)
    cols = np.floor((np.arange(64) + rng.uniform(0.2, 1.5) * t[:, None]) / 8).astype(np.int64)  # (L, 64)
    rows = np.arange(44, 64) // 4                                          # (20,)
    img[:, 44:] = np.where((cols[:, None, :] + rows[None, :, None]) % 2 == 1, 170, 90)[..., None]  # floor
    w, phase = rng.uniform(0.02, 0.1, 4), rng.uniform(0, 2 * np.pi, 4)
    disc, square = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    dy, dx = np.mgrid[-7:8, -7:8]
    round_ = dx ** 2 + dy ** 2 < 49                                        # (15, 15) disc stencil
    cx, cy = (28 + 20 * np.sin(w[0] * t + phase[0])).astype(int), (20 + 10 * np.cos(w[1] * t + phase[1])).astype(int)
    sx, sy = (27 + 22 * np.sin(w[2] * t + phase[2])).astype(int), (32 + 8 * np.sin(w[3] * t + phase[3])).astype(int)
    for k in range(length):  # shapes stay inside the frame by construction
        img[k, cy[k]:cy[k] + 15, cx[k]:cx[k] + 15][round_] = disc
        img[k, sy[k]:sy[k] + 10, sx[k]:sx[k] + 10] = square
    noise = rng.integers(-12, 13, (length, 64, 64, 1), dtype=np.int16)
    img += noise * (rng.random((length, 64, 64, 1), dtype=np.float32) < 0.15)  # 15% of pixels
    return np.clip(img, 0, 255).astype(np.uint8)


def build(root: pathlib.Path, n_traj: int, length: int, shard_mb: float) -> dict:
    """Make sure trajectories 0..n_traj-1 exist (job ids make this resumable). Returns write timings."""
    gen_s = write_s = 0.0
    written = 0
    with DatasetWriter(root, shard_mb=shard_mb) as writer:
        done = writer.done_jobs
        for i in range(n_traj):
            if f"synthetic-{i}" in done:
                continue
            rng = np.random.default_rng(i)
            start = time.perf_counter()
            dim = 6 if i % 2 == 0 else 4
            action = rng.uniform(-1, 1, (length, dim)).astype(np.float32)  # (L, native A)
            action[0] = 0
            traj = dict(image=synthetic_frames(length, rng), action=action,
                        reward=rng.random(length).astype(np.float32))
            meta = dict(suite="synthetic", task=f"task{i % 4}", embodiment=f"body{dim}", policy="random",
                        noise=None, seed=i, job=f"synthetic-{i}")
            mid = time.perf_counter()
            writer.add(traj, meta)
            write_s += time.perf_counter() - mid
            gen_s += mid - start
            written += 1
        start = time.perf_counter()
        writer.flush()
        write_s += time.perf_counter() - start
    return dict(written_trajectories=written, generate_s=gen_s, write_s=write_s)


def rss_mb(pid="self") -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children() -> list[str]:
    pids = []
    for task in pathlib.Path("/proc/self/task").iterdir():
        pids += (task / "children").read_text().split()
    return pids


def bench_sampling(ds: OfflineDataset, batch: int, length: int, workers: int, seconds: float) -> dict:
    """Batches/s of ds.loader() and the peak RSS (this process, and with its workers) while sampling."""
    it = iter(ds.loader(batch, length, workers=workers, seed=0))
    start = time.perf_counter()
    while time.perf_counter() - start < seconds / 3:  # warm-up: worker start, shard handles (LRU) fill
        next(it)
    n, main_mb, total_mb = 0, 0.0, 0.0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        out = next(it)
        assert out["image"].shape == (batch, length, 64, 64, 3)
        n += 1
        if n % 5 == 1:
            main = rss_mb()
            main_mb, total_mb = max(main_mb, main), max(total_mb, main + sum(rss_mb(p) for p in children()))
    elapsed = time.perf_counter() - start
    del it
    return dict(batches_per_s=n / elapsed, rss_mb=main_mb, rss_with_workers_mb=total_mb)


def disk_bytes(root: pathlib.Path) -> int:
    return sum(p.stat().st_size for p in (root / "shards").glob("*.h5")) + (root / "manifest.jsonl").stat().st_size


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--transitions", type=int, default=1_000_000)
    p.add_argument("--dir", default="/tmp/wmt-loader-bench")
    p.add_argument("--traj-length", type=int, default=501, help="observations per trajectory")
    p.add_argument("--batch", type=int, nargs=2, default=[16, 64], metavar=("B", "T"))
    p.add_argument("--seconds", type=float, default=15, help="sampling time per measurement")
    p.add_argument("--shard-mb", type=float, default=256, help="writer shard size (uncompressed MB)")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    root = pathlib.Path(args.dir)
    rows, load_start = [], os.getloadavg()  # other jobs on the machine show up in the timings
    for fraction in STAGES:
        n_traj = math.ceil(fraction * args.transitions / (args.traj_length - 1))
        timing = build(root, n_traj, args.traj_length, args.shard_mb)
        ds = OfflineDataset(root, max_action_dim=A, where={"seed": list(range(n_traj))})
        seeds = {r["seed"] for r in read_manifest(root)}
        stage_disk = disk_bytes(root) * n_traj / len(seeds)  # this stage's share if the folder holds more
        written = timing["written_trajectories"] * (args.traj_length - 1)
        shards = len({r["shard"] for r in ds.meta})
        row = dict(stage=fraction, trajectories=len(ds), transitions=ds.transitions, shards=shards,
                   open_files=min(shards, OPEN_FILES), disk_mb=stage_disk / 2**20,
                   bytes_per_transition=stage_disk / ds.transitions,
                   raw_bytes_per_transition=64 * 64 * 3 * args.traj_length / (args.traj_length - 1),
                   written_transitions=written,
                   write_transitions_per_s=written / timing["write_s"] if written else None,
                   generate_s=timing["generate_s"], write_s=timing["write_s"])
        for workers in (0, 2):
            result = bench_sampling(ds, *args.batch, workers, args.seconds)
            row.update({f"{k}_w{workers}": v for k, v in result.items()})
        ds.close()
        rows.append(row)
        print(f"stage {fraction:.0%}: {row}", flush=True)
    print_table(rows, args.batch)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / ("loader.json" if args.shard_mb == 256 else f"loader-shard{args.shard_mb:g}mb.json")
    meta = dict(host=platform.node(), cpus=len(os.sched_getaffinity(0)), batch=args.batch, seconds=args.seconds,
                traj_length=args.traj_length, dir=str(root), compression="lzf", shard_mb=args.shard_mb,
                lru_files=OPEN_FILES, loadavg_start=load_start, loadavg_end=os.getloadavg())
    path.write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))
    print(f"\nwrote {path}")


def print_table(rows: list[dict], batch) -> None:
    print(f"\nbatch {batch[0]} x {batch[1]}; open = shard handles per process (LRU); "
          f"RSS = peak VmRSS while sampling (MB), w2 incl. the 2 workers")
    print(f"{'transitions':>12}{'shards':>8}{'open':>6}{'disk MB':>9}{'B/trans':>9}{'write trans/s':>15}"
          f"{'batches/s w0':>14}{'batches/s w2':>14}{'RSS w0':>8}{'RSS w2':>8}")
    for r in rows:
        write = f"{r['write_transitions_per_s']:,.0f}" if r["write_transitions_per_s"] else "reused"
        print(f"{r['transitions']:>12,}{r['shards']:>8}{r['open_files']:>6}{r['disk_mb']:>9,.0f}"
              f"{r['bytes_per_transition']:>9,.0f}{write:>15}{r['batches_per_s_w0']:>14.2f}{r['batches_per_s_w2']:>14.2f}{r['rss_mb_w0']:>8.0f}"
              f"{r['rss_with_workers_mb_w2']:>8.0f}")


if __name__ == "__main__":
    main()
