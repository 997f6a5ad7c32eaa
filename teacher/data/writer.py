"""Writing offline datasets (the format is teacher/data/dataset.py, docs/dataset.md): DatasetWriter buffers
trajectories, writes them as one immutable shard (to .tmp, then renamed) and only then appends their
rows to the manifest, so a killed writer never leaves a row without its data."""
from __future__ import annotations

import json
import os
import pathlib
import time
import uuid

import h5py
import numpy as np

from teacher.data.dataset import MANIFEST, SHARDS, REQUIRED_META, TIME_CHUNK, read_manifest


def check_trajectory(traj: dict) -> dict:
    """Validated copies of a trajectory's arrays: image (L, R, R, 3) uint8, action (L, A) float32,
    is_terminal (L,) bool (zeros if absent), reward (L,) float32 (only if given). ValueError otherwise."""
    if not isinstance(traj, dict) or "image" not in traj or "action" not in traj:
        raise ValueError(f"a trajectory is a dict with 'image' (L, R, R, 3) uint8 and 'action' (L, A) float; "
                         f"got {sorted(traj) if isinstance(traj, dict) else type(traj).__name__}")
    image, action = np.asarray(traj["image"]), np.asarray(traj["action"])
    if image.dtype != np.uint8 or image.ndim != 4 or image.shape[-1] != 3 or len(image) < 1:
        raise ValueError(f"image must be (L, R, R, 3) uint8 with L >= 1 (HWC: transpose CHW frames first); "
                         f"got {image.shape} {image.dtype}")
    if action.ndim != 2 or action.shape[1] < 1 or not np.issubdtype(action.dtype, np.floating):
        raise ValueError(f"action must be (L, A) float with A >= 1 (the native, unpadded dims); "
                         f"got {action.shape} {action.dtype}")
    if not np.isfinite(action).all():
        raise ValueError("action contains NaN or inf")
    out = dict(image=np.array(image), action=action.astype(np.float32))  # copies: the caller may reuse buffers
    for key, dtype in (("reward", np.float32), ("is_terminal", bool)):
        if traj.get(key) is None:
            continue
        value = np.asarray(traj[key])
        value = value[:, 0] if value.ndim == 2 and value.shape[1] == 1 else value  # (L, 1) -> (L,)
        if value.ndim != 1 or not (np.issubdtype(value.dtype, np.number) or value.dtype == bool):
            raise ValueError(f"{key} must be (L,) numeric; got {value.shape} {value.dtype}")
        out[key] = value.astype(dtype)
    out.setdefault("is_terminal", np.zeros(len(image), bool))
    if len({len(v) for v in out.values()}) != 1:
        raise ValueError(f"arrays must share one length L; got { {k: len(v) for k, v in out.items()} }")
    return out


def manifest_row(meta: dict, arrays: dict) -> dict:
    """The manifest row of a validated trajectory (id and shard are filled in by the writer)."""
    missing = [k for k in REQUIRED_META if not isinstance(meta.get(k), str) or not meta.get(k)]
    if missing:
        raise ValueError(f"meta needs non-empty strings for {missing}; got {meta}")
    row = dict(id=None, shard=None, length=len(arrays["image"]), suite=meta["suite"], task=meta["task"],
               embodiment=meta["embodiment"], action_dim=arrays["action"].shape[1], policy=meta["policy"],
               noise=None if meta.get("noise") is None else float(meta["noise"]),
               seed=None if meta.get("seed") is None else int(meta["seed"]), has_reward="reward" in arrays,
               job=meta.get("job"), source=meta.get("source"))
    row.update({k: v for k, v in meta.items() if k not in row})  # extra fields are kept; derived ones ignored
    try:
        json.dumps(row)
    except TypeError as e:
        raise ValueError(f"meta must be JSON-serialisable ({e})") from e
    return row


class DatasetWriter:
    """Buffers trajectories in memory and writes them as immutable shards; a context manager, one per
    process (several processes may append to one dataset). Crash safety: a shard is written to
    <name>.h5.tmp, closed, fsynced and renamed, and only then are its rows appended to the manifest
    (flush + fsync). A killed writer leaves at most a .tmp file or a shard without manifest rows (both
    ignored by readers) and perhaps half a last manifest line (skipped; the next writer ends it)."""

    def __init__(self, root, shard_mb: float = 256, compression: str | None = "lzf"):
        if compression not in ("lzf", "gzip", None) or not shard_mb > 0:
            raise ValueError(f"compression must be lzf, gzip or None and shard_mb > 0; got {compression!r}, {shard_mb}")
        self.root = pathlib.Path(root)
        (self.root / SHARDS).mkdir(parents=True, exist_ok=True)
        self.limit = shard_mb * 2**20          # bytes of (uncompressed) buffered arrays per shard
        self.compression = compression
        self._jobs, self._sources = set(), set()
        self._remember(read_manifest(self.root))
        self._buffer, self.buffered_bytes, self._shard = [], 0, None  # [(row, arrays)], their bytes, shard name

    @property
    def done_jobs(self) -> set[str]:  # collection job ids already in the manifest (resume: skip them)
        return set(self._jobs)

    @property
    def done_sources(self) -> set[str]:  # importer source paths already in the manifest (resume: skip them)
        return set(self._sources)

    def add(self, traj: dict, meta: dict) -> str:
        """Buffer one trajectory (see check_trajectory, manifest_row); returns its id. Writes a shard
        when the buffer exceeds shard_mb."""
        arrays = check_trajectory(traj)
        row = manifest_row(meta, arrays)
        if self._shard is None:
            self._shard = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        row["id"] = f"{self._shard}-{len(self._buffer):04d}"
        row["shard"] = f"{SHARDS}/{self._shard}.h5"
        self._buffer.append((row, arrays))
        self.buffered_bytes += sum(a.nbytes for a in arrays.values())
        if self.buffered_bytes > self.limit:
            self.flush()
        return row["id"]

    def flush(self):
        """Write the buffered trajectories as one shard now, then append their manifest rows."""
        if not self._buffer:
            return
        final = self.root / self._buffer[0][0]["shard"]
        tmp = final.with_name(final.name + ".tmp")
        opts = 4 if self.compression == "gzip" else None
        with h5py.File(tmp, "w") as f:
            for row, arrays in self._buffer:
                group = f.create_group(row["id"])
                group.attrs["meta"] = json.dumps(row)  # lets a lost manifest be rebuilt from the shards
                for key, value in arrays.items():  # image (L, R, R, 3) in chunks (min(L, 32), R, R, 3)
                    kw = dict(chunks=(min(len(value), TIME_CHUNK), *value.shape[1:]), compression=self.compression,
                              compression_opts=opts) if key == "image" else {}
                    group.create_dataset(key, data=value, **kw)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        self._append([row for row, _ in self._buffer])
        self._buffer, self.buffered_bytes, self._shard = [], 0, None

    def _append(self, rows: list[dict]):
        path = self.root / MANIFEST
        with open(path, "a+b") as f:
            end = f.seek(0, os.SEEK_END)
            if end and os.pread(f.fileno(), 1, end - 1) != b"\n":  # a killed writer left half a line: end it
                f.write(b"\n")
            f.write("".join(json.dumps(r) + "\n" for r in rows).encode())
            f.flush()
            os.fsync(f.fileno())
        self._remember(rows)

    def _remember(self, rows: list[dict]):
        self._jobs.update(r["job"] for r in rows if r.get("job") is not None)
        self._sources.update(r["source"] for r in rows if r.get("source") is not None)

    close = flush  # nothing else to release

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
