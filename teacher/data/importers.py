"""Importers of npz trajectory files into an offline dataset (the teacher.data.dataset format).

    python -m teacher.data.importers gsa SRC DATASET_ROOT [--task-map walker=walker_walk ...]
    python -m teacher.data.importers dreamer SRC DATASET_ROOT --suite dmc --task walker_walk --embodiment walker
                                [--policy dreamer] [--noise 0.3] [--seed 0] [--action-dim 6]

gsa      the GSA authors' published layout: one npz per trajectory named timestamp-uuid-index-length.npz,
         with observation (T+1, 3, 64, 64) uint8 CHW, action (T+1, native A) (first row zero),
         reward (T+1, 1), discount (T+1, 1); folders SRC/dmcontrol/<domain>/ (suite dmc, embodiment and
         task = domain unless --task-map DOMAIN=TASK) and SRC/metaworld/<task>/ (suite metaworld,
         embodiment sawyer, task = folder name without a -v2/-v3 suffix). is_terminal = discount == 0.
dreamer  DreamerV1/V2-style episode npz files (and this repo's RUN_DIR/replay/*.npz): image (T, R, R, 3)
         uint8, action (T, A) = action that led to obs t, optional reward (T,), is_first (T,) (a file
         holding several episodes is split there), is_terminal or discount (T,). Metadata from the flags;
         --action-dim N keeps the first N action columns (use the native dim for padded replay files).

Every imported trajectory starts with a zero action. A file that cannot be read (np.load fails,
missing keys, inconsistent lengths, wrong dtype or shape) is skipped with a warning naming it and
the reason, and counted; nothing under SRC is ever modified. The manifest's "source" field holds the
file's path relative to SRC, so re-running an import skips the files already imported.
"""
from __future__ import annotations

import argparse
import pathlib
import re
import sys
import warnings

import numpy as np

from teacher.data.writer import DatasetWriter, check_trajectory


def _load(path: pathlib.Path, required: tuple, optional: tuple) -> dict:
    """The listed arrays of an npz file; ValueError if a required key is missing."""
    with np.load(path, allow_pickle=False) as f:
        missing = [k for k in required if k not in f.files]
        if missing:
            raise ValueError(f"missing keys {missing} (the file has {sorted(f.files)})")
        return {k: f[k] for k in required + optional if k in f.files}


def _vector(value: np.ndarray, name: str) -> np.ndarray:
    """(L,) or (L, 1) -> (L,)."""
    if value.ndim == 2 and value.shape[1] == 1:
        value = value[:, 0]
    if value.ndim != 1:
        raise ValueError(f"{name} must be (L,) or (L, 1), got {value.shape}")
    return value


def _start_at_zero(action: np.ndarray) -> np.ndarray:
    """action (L, A) float32 with row 0 zeroed: nothing led to the first observation of a trajectory."""
    action = np.array(action, np.float32)
    action[0] = 0
    return action


# -- gsa ------------------------------------------------------------------------------------------
def gsa_trajectory(path: pathlib.Path) -> list[dict]:
    """The one trajectory of a GSA npz file, as writer arrays (image HWC)."""
    d = _load(path, ("observation", "action"), ("reward", "discount"))
    obs, action = d["observation"], d["action"]
    if obs.dtype != np.uint8 or obs.ndim != 4 or obs.shape[1] != 3:
        raise ValueError(f"observation must be (T+1, 3, R, R) uint8, got {obs.shape} {obs.dtype}")
    if action.ndim != 2 or not np.issubdtype(action.dtype, np.floating):
        raise ValueError(f"action must be (T+1, A) float, got {action.shape} {action.dtype}")
    traj = dict(image=obs.transpose(0, 2, 3, 1), action=_start_at_zero(action))  # (L, 3, R, R) -> (L, R, R, 3)
    if "reward" in d:
        traj["reward"] = _vector(d["reward"], "reward")
    if "discount" in d:
        traj["is_terminal"] = _vector(d["discount"], "discount") == 0
    return [traj]


def gsa_files(src: pathlib.Path, task_map: dict | None = None):
    """(path, meta) of every npz file in the published layout under src, in a stable order."""
    task_map = task_map or {}
    folders = [("dmcontrol", "dmc"), ("metaworld", "metaworld")]
    if not any((src / name).is_dir() for name, _ in folders):
        raise FileNotFoundError(f"{src} has neither dmcontrol/ nor metaworld/: point SRC at the folder that holds them")
    for name, suite in folders:
        if not (src / name).is_dir():
            continue
        for folder in sorted(p for p in (src / name).iterdir() if p.is_dir()):
            if suite == "dmc":
                meta = dict(suite="dmc", embodiment=folder.name, task=task_map.get(folder.name, folder.name))
            else:
                task = re.sub(r"-v\d+$", "", folder.name)
                meta = dict(suite="metaworld", embodiment="sawyer", task=task_map.get(folder.name, task))
            for path in sorted(folder.rglob("*.npz")):
                yield path, dict(meta, policy="gsa-published", noise=None, seed=None)


def import_gsa(src, root, task_map: dict | None = None, shard_mb: float = 256, compression="lzf") -> dict:
    """Import the GSA published data under src into the dataset at root; returns the summary."""
    src = pathlib.Path(src)
    files = ((path, meta, gsa_trajectory) for path, meta in gsa_files(src, task_map))
    return run_import(src, root, files, shard_mb, compression)


# -- dreamer --------------------------------------------------------------------------------------
def dreamer_trajectories(path: pathlib.Path, action_dim: int | None = None) -> list[dict]:
    """The episodes of a dreamer-style npz file (split at is_first), as writer arrays."""
    d = _load(path, ("image", "action"), ("reward", "is_first", "is_terminal", "discount"))
    image, action = d["image"], d["action"]
    if action.ndim != 2 or not np.issubdtype(action.dtype, np.floating):
        raise ValueError(f"action must be (T, A) float, got {action.shape} {action.dtype}")
    if action_dim is not None:
        if action_dim > action.shape[1]:
            raise ValueError(f"--action-dim {action_dim} exceeds the file's {action.shape[1]} action columns")
        action = action[:, :action_dim]
    extra = {k: _vector(d[k], k) for k in ("reward", "is_first", "is_terminal", "discount") if k in d}
    lengths = {k: len(v) for k, v in dict(image=image, action=action, **extra).items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"inconsistent lengths {lengths}")
    if "is_terminal" not in extra and "discount" in extra:
        extra["is_terminal"] = extra["discount"] == 0
    starts = np.flatnonzero(extra["is_first"]) if "is_first" in extra else []
    bounds = sorted({0, len(image), *map(int, starts)})
    episodes = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b - a < 2:  # a lone observation holds no transition
            continue
        traj = dict(image=image[a:b], action=_start_at_zero(action[a:b]))
        for key in ("reward", "is_terminal"):
            if key in extra:
                traj[key] = extra[key][a:b]
        episodes.append(traj)
    return episodes


def import_dreamer(src, root, suite: str, task: str, embodiment: str, policy: str = "dreamer",
                   noise: float | None = None, seed: int | None = None, action_dim: int | None = None,
                   shard_mb: float = 256, compression="lzf") -> dict:
    """Import dreamer-style npz episodes (src: a folder, searched recursively, or one file)."""
    src = pathlib.Path(src)
    if not src.exists():
        raise FileNotFoundError(f"{src} does not exist")
    paths = [src] if src.is_file() else sorted(src.rglob("*.npz"))
    meta = dict(suite=suite, task=task, embodiment=embodiment, policy=policy, noise=noise, seed=seed)
    files = ((path, meta, lambda p: dreamer_trajectories(p, action_dim)) for path in paths)
    return run_import(src if src.is_dir() else src.parent, root, files, shard_mb, compression)


# -- shared ---------------------------------------------------------------------------------------
def run_import(src: pathlib.Path, root, files, shard_mb: float, compression) -> dict:
    """Write the trajectories of (path, meta, parse) items; skip unreadable and already imported files."""
    summary = dict(files=0, trajectories=0, transitions=0, skipped_files=0, already_imported=0, skipped=[])
    with DatasetWriter(root, shard_mb=shard_mb, compression=compression) as writer:
        done = writer.done_sources
        for path, meta, parse in files:
            source = path.relative_to(src).as_posix()
            if source in done:
                summary["already_imported"] += 1
                continue
            try:
                trajs = [check_trajectory(t) for t in parse(path)]
                if not trajs:
                    raise ValueError("no trajectory with at least 2 observations")
            except Exception as e:  # np.load raises many kinds (BadZipFile, EOFError, OSError, ValueError, ...)
                reason = f"{type(e).__name__}: {e}"
                warnings.warn(f"skipping {path}: {reason}")
                summary["skipped_files"] += 1
                summary["skipped"].append(f"{source} ({reason})")
                continue
            size = sum(a.nbytes for t in trajs for a in t.values())
            if writer.buffered_bytes and writer.buffered_bytes + size > writer.limit:
                writer.flush()  # keep a file's trajectories in one shard: resume works per file
            for traj in trajs:
                writer.add(traj, dict(meta, source=source))
                summary["trajectories"] += 1
                summary["transitions"] += len(traj["image"]) - 1
            summary["files"] += 1
    return summary


def print_summary(summary: dict, root) -> None:
    print(f"imported {summary['trajectories']} trajectories ({summary['transitions']} transitions) from "
          f"{summary['files']} files into {root}")
    print(f"skipped {summary['skipped_files']} unreadable files; "
          f"{summary['already_imported']} files were imported before")
    for line in summary["skipped"][:20]:
        print(f"  skipped {line}")
    if len(summary["skipped"]) > 20:
        print(f"  ... and {len(summary['skipped']) - 20} more")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="format", required=True)
    gsa = sub.add_parser("gsa", help="the GSA authors' published npz layout")
    dreamer = sub.add_parser("dreamer", help="dreamer-style npz episodes (incl. this repo's replay files)")
    for q in (gsa, dreamer):
        q.add_argument("src", help="folder to import from (never modified)")
        q.add_argument("root", help="dataset folder to write to (created if needed)")
        q.add_argument("--shard-mb", type=float, default=256)
        q.add_argument("--compression", choices=["lzf", "gzip", "none"], default="lzf")
    gsa.add_argument("--task-map", nargs="*", default=[], metavar="FOLDER=TASK",
                     help="task name for a domain/task folder, e.g. walker=walker_walk (default: the folder name)")
    dreamer.add_argument("--suite", required=True)
    dreamer.add_argument("--task", required=True)
    dreamer.add_argument("--embodiment", required=True)
    dreamer.add_argument("--policy", default="dreamer")
    dreamer.add_argument("--noise", type=float, default=None)
    dreamer.add_argument("--seed", type=int, default=None)
    dreamer.add_argument("--action-dim", type=int, default=None, help="keep the first N action columns (default: all)")
    args = p.parse_args(argv)
    compression = None if args.compression == "none" else args.compression
    try:
        if args.format == "gsa":
            bad = [m for m in args.task_map if "=" not in m]
            if bad:
                p.error(f"--task-map entries look like FOLDER=TASK, got {bad}")
            task_map = dict(m.split("=", 1) for m in args.task_map)
            summary = import_gsa(args.src, args.root, task_map, args.shard_mb, compression)
        else:
            summary = import_dreamer(args.src, args.root, args.suite, args.task, args.embodiment, args.policy,
                                     args.noise, args.seed, args.action_dim, args.shard_mb, compression)
    except FileNotFoundError as e:
        sys.exit(f"error: {e}")
    print_summary(summary, args.root)
    if summary["files"] + summary["skipped_files"] + summary["already_imported"] == 0:
        sys.exit(f"error: no .npz files found under {args.src}")


if __name__ == "__main__":
    main()
