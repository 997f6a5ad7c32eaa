"""Online replay: every step is kept on disk (npz files under the run directory, one per finished
episode or per checkpoint flush) and the most recent ``capacity`` steps are kept in memory, one
ring buffer per env stream, for uniform sampling of (B, T) sequences.

A step holds the observation, the reward and flags, and ``action`` = the padded action that LED
to this observation (zeros on is_first). Sequences may cross episode boundaries; is_first marks
where the model must reset.

``adopt`` makes an earlier run's files part of this replay (continual learning: init.replay=true). Adopted
files are linked into this directory under names starting with ``p`` (``p00-0000000-500.npz``), listed in
``files`` like the own ones (so checkpoints keep them and a resume reloads them), and sampled like them; but
their rewards belong to the earlier run's task, so once a replay holds adopted steps its samples carry
``reward_mask`` (B, T): 0 on adopted steps, 1 on this run's (the reward head learns from this run's only).
"""
from __future__ import annotations

import os
import pathlib
import shutil

import numpy as np

ADOPTED = "p"   # file-name prefix of adopted steps (own files start with "s")


def steps_in(name: str) -> int:
    """The number of steps of a replay file, from its name ("s00-0000012-500.npz": 500)."""
    return int(name.rsplit("-", 1)[-1].split(".")[0])


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
        self.own = np.ones((streams, self.cap), bool)  # False: an adopted step (another task's reward)
        self.adopted = 0                          # adopted steps ever added (read, or skipped as overwritten)
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
        they were written after the checkpoint this run resumes from. Files whose steps memory would not
        keep (older than a stream's newest `capacity` steps) are counted, not read."""
        keep = set(files)
        for path in self.dir.glob("*.npz*"):
            if path.name not in keep:
                path.unlink()
        read = self._in_memory(files, [int(name[1:3]) for name in files])
        for name in files:
            own = not name.startswith(ADOPTED)
            if name in read:
                self._put(int(name[1:3]), self._read(self.dir / name), own=own)
            else:  # wholly overwritten in memory by later files: counted, not read
                self.total += steps_in(name)
                self.adopted += 0 if own else steps_in(name)
        self.files = list(files)

    def _in_memory(self, files: list[str], streams: list[int]) -> set[str]:
        """The files (put in this order into the given streams) whose steps are not all overwritten by later
        ones: only the newest `cap` steps of a stream stay in memory."""
        room, read = np.full(self.streams, self.cap), set()
        for name, stream in zip(reversed(files), reversed(streams)):
            if room[stream] > 0:
                read.add(name)
            room[stream] -= steps_in(name)
        return read

    def adopt(self, source, files: list[str]):
        """Make another run's replay files (directory `source`, `files` as its checkpoint lists them, in order)
        part of this replay: each is hard-linked (copied where links fail) into this directory as an adopted
        file, put in memory after what is there and appended to self.files. See the module doc."""
        streams = [int(name[1:3]) % self.streams for name in files]
        read = self._in_memory(files, streams)
        for name, stream in zip(files, streams):
            src = pathlib.Path(source) / name
            if not src.is_file():
                raise FileNotFoundError(f"replay file {src} is missing: the run it belongs to lists it in its "
                                        f"checkpoint; start without its replay (init.replay=false) or restore it")
            new = self.dir / f"{ADOPTED}{stream:02d}-{len(self.files):07d}-{name.rsplit('-', 1)[-1]}"
            new.unlink(missing_ok=True)  # left by an adoption killed before this run's first checkpoint
            try:
                os.link(src, new)
            except OSError:
                shutil.copyfile(src, new)
            if name in read:
                self._put(stream, self._read(new), own=False)
            else:  # wholly overwritten in memory by later files: counted, not read
                self.total += steps_in(name)
                self.adopted += steps_in(name)
            self.files.append(new.name)

    def _read(self, path: pathlib.Path) -> dict:
        """A replay file's arrays {key: (n, ...)}; a clear error for a corrupt file."""
        try:
            with np.load(path) as f:
                return {k: f[k] for k in self.data}
        except Exception as e:  # corrupt or truncated file: say which and how to recover
            raise RuntimeError(f"replay file {path} is unreadable ({e}); delete it and "
                               f"remove it from the checkpoint, or start a new run directory") from e

    def _put(self, stream: int, arrays: dict, own: bool = True):
        """Append a block {key: (n, ...)} to a stream's ring, overwriting the oldest steps (own=False: adopted)."""
        n = len(arrays["reward"])
        self.total += n
        keep = min(n, self.cap)
        idx = (self.head[stream] + n - keep + np.arange(keep)) % self.cap
        for k in self.data:
            self.data[k][stream, idx] = arrays[k][n - keep:]
        self.own[stream, idx] = own
        self.adopted += 0 if own else n
        self.head[stream] = (self.head[stream] + n) % self.cap
        self.size[stream] = min(self.size[stream] + n, self.cap)

    def sample(self, batch: int, length: int) -> dict:
        """Uniform over all length-T windows in memory. Returns {key: (B, T, ...)} numpy arrays, with
        reward_mask (B, T) once adopted steps were put in memory (0 on them)."""
        starts = np.maximum(self.size - length + 1, 0)  # valid windows per stream
        if starts.sum() == 0:
            raise ValueError(f"replay holds no sequence of length {length} yet")
        stream = self.rng.choice(self.streams, size=batch, p=starts / starts.sum())  # (B,)
        offset = (self.rng.random(batch) * starts[stream]).astype(np.int64)        # (B,)
        oldest = (self.head - self.size) % self.cap                                # (streams,)
        idx = (oldest[stream, None] + offset[:, None] + np.arange(length)) % self.cap  # (B, T)
        out = {k: v[stream[:, None], idx] for k, v in self.data.items()}
        if self.adopted:
            out["reward_mask"] = self.own[stream[:, None], idx].astype(np.float32)  # (B, T)
        return out
