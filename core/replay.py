"""Online replay: every step is kept on disk (npz files under the run directory, one per finished
episode or per checkpoint flush) and the most recent ``capacity`` steps are kept in memory, one
ring buffer per env stream, for uniform sampling of (B, T) sequences.

A step holds the observation, the reward and flags, and ``action`` = the padded action that LED
to this observation (zeros on is_first). Sequences may cross episode boundaries; is_first marks
where the model must reset.
"""
from __future__ import annotations

import pathlib

import numpy as np


class Replay:
    def __init__(self, directory, capacity: int, streams: int, image_shape, act_dim: int, seed: int = 0):
        self.dir = pathlib.Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.streams, self.cap = streams, max(1, capacity // streams)
        self.rng = np.random.default_rng(seed)
        shapes = dict(image=(tuple(image_shape), np.uint8), action=((act_dim,), np.float32),
                      reward=((), np.float32), is_first=((), bool), is_last=((), bool), is_terminal=((), bool))
        # np.empty only reserves address space; pages are touched as steps arrive.
        self.data = {k: np.empty((streams, self.cap, *s), d) for k, (s, d) in shapes.items()}
        self.size = np.zeros(streams, np.int64)   # valid steps per stream (<= cap)
        self.head = np.zeros(streams, np.int64)   # next write index per stream
        self.pending: list[list[dict]] = [[] for _ in range(streams)]
        self.files: list[str] = []                # every file written or loaded, in order
        self.total = 0                            # steps ever added

    def __len__(self) -> int:
        return int(self.size.sum())

    def add(self, stream: int, step: dict):
        """step: image, reward, is_first, is_last, is_terminal of an observation plus 'action' (A,)."""
        self._put(stream, {k: np.asarray(step[k])[None] for k in self.data})
        self.pending[stream].append({k: step[k] for k in self.data})
        if step["is_last"]:
            self._write(stream)

    def flush(self):
        """Write every stream's pending steps to disk (called before a checkpoint)."""
        for s in range(self.streams):
            self._write(s)

    def _write(self, stream: int):
        steps = self.pending[stream]
        if not steps:
            return
        name = f"s{stream:02d}-{len(self.files):07d}-{len(steps)}.npz"
        arrays = {k: np.stack([st[k] for st in steps]) for k in steps[0]}
        tmp = self.dir / (name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        tmp.rename(self.dir / name)
        self.files.append(name)
        self.pending[stream] = []

    def load(self, files: list[str]):
        """Refill memory from the listed files (in order); files on disk not listed are deleted, since
        they were written after the checkpoint this run resumes from."""
        keep = set(files)
        for path in self.dir.glob("*.npz*"):
            if path.name not in keep:
                path.unlink()
        for name in files:
            stream = int(name[1:3])
            try:
                with np.load(self.dir / name) as f:
                    arrays = {k: f[k] for k in self.data}
            except Exception as e:  # corrupt or truncated file: say which and how to recover
                raise RuntimeError(f"replay file {self.dir / name} is unreadable ({e}); delete it and "
                                   f"remove it from the checkpoint, or start a new run directory") from e
            self._put(stream, arrays)
        self.files = list(files)

    def _put(self, stream: int, arrays: dict):
        """Append a block {key: (n, ...)} to a stream's ring, overwriting the oldest steps."""
        n = len(arrays["reward"])
        self.total += n
        keep = min(n, self.cap)
        idx = (self.head[stream] + n - keep + np.arange(keep)) % self.cap
        for k in self.data:
            self.data[k][stream, idx] = arrays[k][n - keep:]
        self.head[stream] = (self.head[stream] + n) % self.cap
        self.size[stream] = min(self.size[stream] + n, self.cap)

    def sample(self, batch: int, length: int) -> dict:
        """Uniform over all length-T windows in memory. Returns {key: (B, T, ...)} numpy arrays."""
        starts = np.maximum(self.size - length + 1, 0)  # valid windows per stream
        if starts.sum() == 0:
            raise ValueError(f"replay holds no sequence of length {length} yet")
        stream = self.rng.choice(self.streams, size=batch, p=starts / starts.sum())  # (B,)
        offset = (self.rng.random(batch) * starts[stream]).astype(np.int64)        # (B,)
        oldest = (self.head - self.size) % self.cap                                # (streams,)
        idx = (oldest[stream, None] + offset[:, None] + np.arange(length)) % self.cap  # (B, T)
        return {k: v[stream[:, None], idx] for k, v in self.data.items()}
