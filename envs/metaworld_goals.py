"""Meta-World's MT1 goals, drawn once per (Meta-World version, task, seed) and read back from disk after that.

Building an MT1 env makes Meta-World draw the task's 50 goals (metaworld._make_tasks): 50 resets with physics,
1.7 s of the 1.9 s that one env takes to build on an AVX2 core, paid again by every worker, evaluation pool
and restart. The draw depends only on the task and the seed (Meta-World seeds numpy's global generator for it
and restores it afterwards), so the drawn tasks are kept in $XDG_CACHE_HOME/wmtransfer (default
~/.cache/wmtransfer) and the next build reads them back: the same goals in the same order. A file that cannot
be read is drawn again and rewritten; a cache that cannot be written only costs the time.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import pathlib
import pickle
import tempfile


def cache_dir() -> pathlib.Path:
    root = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(root) / "wmtransfer" / f"metaworld-{importlib.metadata.version('metaworld')}"


def _path(classes, args_kwargs, kwargs_override, seed: int) -> pathlib.Path:
    settings = repr((sorted(args_kwargs.items()), sorted(kwargs_override.items()))).encode()
    return cache_dir() / f"{'+'.join(classes)}-seed{seed}-{hashlib.sha1(settings).hexdigest()[:10]}.pkl"


def _write(path: pathlib.Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as f:
        name = f.name
        try:
            f.write(data)
        except OSError:
            os.unlink(name)  # e.g. a full disk: no half-written file left behind
            raise
    os.replace(name, path)  # atomic: a worker building the same task at the same time reads a whole file


@contextlib.contextmanager
def cached_goals():
    """While building Meta-World envs: metaworld._make_tasks answers from the cache where it can."""
    import metaworld  # noqa: PLC0415 (after envs.gl.setup_gl)
    original = metaworld._make_tasks

    def make_tasks(classes, args_kwargs, kwargs_override, seed=None):
        if seed is None:  # unseeded: a fresh draw every time, as Meta-World does
            return original(classes, args_kwargs, kwargs_override, seed=seed)
        path = None
        with contextlib.suppress(Exception):  # no version metadata, no home, an unreadable or corrupt file
            path = _path(classes, args_kwargs, kwargs_override, seed)
            return pickle.loads(path.read_bytes())
        tasks = original(classes, args_kwargs, kwargs_override, seed=seed)
        if path is not None:
            with contextlib.suppress(OSError):
                _write(path, pickle.dumps(tasks))
        return tasks

    metaworld._make_tasks = make_tasks
    try:
        yield
    finally:
        metaworld._make_tasks = original
