"""Parallel env workers: EnvPool steps N envs, one child process each (or in-process).

Children fork from a fork server that has imported the simulators once (envs/preload.py; "spawn" where the
platform has no fork server): a fresh interpreter per worker would import numpy, dm_control or Meta-World
again, 1-2 s of CPU per worker start. Each child runs with the parent's environment as it was at its start.

Owns the worker protocol, auto-reset (an env whose last observation had is_last=True is reset
instead of stepped) and crash recovery (a worker that dies or raises is recreated from its
make_fn and its env returns a reset observation). make_fns must be picklable and importable
from a module (e.g. functools.partial(envs.make_env, ...)), not defined in __main__: workers
do not re-import the caller's main script, so they never import torch.
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing as mp
import os
import signal
import sys
import traceback
import types
import weakref
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def _worker(conn, make_fn) -> None:
    """Child process loop: build the env, then answer ("reset"|"step"|"close", data) messages."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent owns shutdown on Ctrl-C
    try:
        env = make_fn()
        conn.send(("ok", env.spec))
    except BaseException:  # noqa: BLE001 (reported to the parent as text)
        conn.send(("error", traceback.format_exc()))
        return
    try:
        while True:
            try:
                cmd, data = conn.recv()
            except (EOFError, OSError):
                break
            if cmd == "close":
                break
            try:
                result = env.reset() if cmd == "reset" else env.step(data)
                conn.send(("ok", result))
            except Exception:  # noqa: BLE001
                conn.send(("error", traceback.format_exc()))
    finally:
        with contextlib.suppress(Exception):
            env.close()


@contextlib.contextmanager
def _child_start_env():
    """While starting a child (or the fork server): one thread per numeric library, and hide __main__ so
    that a new interpreter does not re-run the caller's script (and its torch import)."""
    saved_vars = {k: os.environ.get(k) for k in _THREAD_VARS}
    saved_main = sys.modules["__main__"]
    os.environ.update({k: "1" for k in _THREAD_VARS})
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = saved_main
        for key, value in saved_vars.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _context():
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["envs.preload"])  # read when the server starts (the first child)
    return ctx


def _in_environ(environ: dict, target, *args) -> None:
    """Child side of start_child: the parent's environment at start (a forked child has its server's)."""
    os.environ.clear()
    os.environ.update(environ)
    target(*args)


def start_child(target, *args):
    """(process, conn): a daemon child running target(child_conn, *args) with one thread per numeric library.
    target must be importable from a module (not defined in __main__)."""
    if mp.get_start_method(allow_none=True) not in (None, *mp.get_all_start_methods()):
        # inside a joblib/loky worker (launcher=local) the global start method is "loky", which a spawned
        # child cannot set up again: it would die before building its env
        mp.set_start_method("spawn", force=True)
    ctx = _context()
    conn, child_conn = ctx.Pipe()
    with _child_start_env():
        process = ctx.Process(target=_in_environ, args=(dict(os.environ), target, child_conn, *args), daemon=True)
        process.start()
    child_conn.close()  # so that recv() sees EOF when the child dies
    return process, conn


class _ProcessWorker:
    """One env in a child process."""

    def __init__(self, make_fn):
        self.process, self.conn = start_child(_worker, make_fn)
        self.pid = self.process.pid

    def send(self, cmd, data=None) -> None:
        self.conn.send((cmd, data))

    def recv(self):
        """("ok", value) or ("error", text); a dead child gives ("error", ...) too."""
        try:
            while not self.conn.poll(1.0):
                if not self.process.is_alive():
                    return "error", f"worker {self.pid} died (exit code {self.process.exitcode})"
            return self.conn.recv()
        except (EOFError, OSError) as exc:
            self.process.join(1.0)
            return "error", f"worker {self.pid} died (exit code {self.process.exitcode}): {exc!r}"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.send(("close", None))
        self.process.join(2.0)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(2.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


class _LocalWorker:
    """One env in this process, with the same send/recv interface."""

    def __init__(self, make_fn):
        self.pid = os.getpid()
        self.env, self._pending = None, None
        try:
            self.env = make_fn()
            self._pending = ("ok", self.env.spec)
        except Exception:  # noqa: BLE001
            self._pending = ("error", traceback.format_exc())

    def send(self, cmd, data=None) -> None:
        try:
            result = self.env.reset() if cmd == "reset" else self.env.step(data)
            self._pending = ("ok", result)
        except Exception:  # noqa: BLE001
            self._pending = ("error", traceback.format_exc())

    def recv(self):
        pending, self._pending = self._pending, None
        return pending

    def close(self) -> None:
        if self.env is not None:
            with contextlib.suppress(Exception):
                self.env.close()
            self.env = None


def _close_pool(ref) -> None:
    pool = ref()
    if pool is not None:
        pool.close()


class EnvPool:
    """N envs stepped together; call step() forever, resets and crashes are handled inside."""

    def __init__(self, make_fns: list[Callable], parallel: bool = True, max_retries: int = 3):
        self.make_fns = list(make_fns)
        self.num_envs = len(self.make_fns)
        self.parallel = parallel
        self.max_retries = max_retries
        self.restarts = 0
        self._closed = False
        self._needs_reset = [True] * self.num_envs
        self._pending = None   # errors of the sends of a step_async not yet collected
        self._workers = []
        atexit.register(_close_pool, weakref.ref(self))
        try:
            for i in range(self.num_envs):  # start all, then wait: builds run concurrently
                self._workers.append(self._new_worker(i))
            self.specs = [self._first_answer(i, self._workers[i]) for i in range(self.num_envs)]
        except BaseException:
            self.close()
            raise

    @property
    def pids(self) -> list[int]:
        return [worker.pid for worker in self._workers]

    def _new_worker(self, index):
        cls = _ProcessWorker if self.parallel else _LocalWorker
        return cls(self.make_fns[index])

    def _first_answer(self, index, worker):
        status, value = worker.recv()
        if status != "ok":
            worker.close()
            raise RuntimeError(f"env {index} failed to build in its worker:\n{value}")
        return value

    def _restart(self, index, error: str) -> dict:
        """Recreate env `index` after a crash and return its reset observation."""
        log.warning("env %d worker failed; restarting it. Error:\n%s", index, error)
        self._workers[index].close()
        self.restarts += 1
        for attempt in range(self.max_retries):
            worker = self._new_worker(index)
            self._workers[index] = worker
            status, value = worker.recv()
            if status == "ok":
                worker.send("reset")
                status, value = worker.recv()
                if status == "ok":
                    return value
            log.warning("env %d restart attempt %d failed:\n%s", index, attempt + 1, value)
            worker.close()
        raise RuntimeError(f"env {index} could not be restarted after {self.max_retries} tries:\n{value}")

    def step(self, actions: np.ndarray) -> list[dict]:
        """actions (N, A) -> N observations; envs that ended (or never started) are reset."""
        self.step_async(actions)
        return self.step_wait()

    def step_async(self, actions: np.ndarray) -> None:
        """Send actions (N, A) to the workers and return at once (the workers step while the caller works);
        step_wait() collects the observations. Envs that ended (or never started) are reset."""
        if self._closed:
            raise RuntimeError("EnvPool is closed")
        if self._pending is not None:
            raise RuntimeError("step_async called twice without step_wait")
        actions = np.asarray(actions, dtype=np.float32)
        if actions.ndim != 2 or actions.shape[0] != self.num_envs:
            raise ValueError(f"expected actions of shape ({self.num_envs}, A), got {actions.shape}")
        errors = {}
        for i, worker in enumerate(self._workers):
            try:
                if self._needs_reset[i]:
                    worker.send("reset")
                else:
                    worker.send("step", actions[i])
            except (OSError, EOFError, ValueError) as exc:
                errors[i] = f"worker {worker.pid} unreachable: {exc!r}"
        self._pending = errors

    def step_wait(self) -> list[dict]:
        """The N observations of the last step_async (crashed workers are restarted and reset)."""
        if self._pending is None:
            raise RuntimeError("step_wait called without step_async")
        errors, self._pending = self._pending, None
        observations = []
        for i, worker in enumerate(self._workers):
            if i not in errors:
                status, value = worker.recv()
                if status == "ok":
                    observations.append(value)
                    continue
                errors[i] = value
            observations.append(self._restart(i, errors[i]))
        self._needs_reset = [bool(obs["is_last"]) for obs in observations]
        return observations

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for worker in self._workers:
            with contextlib.suppress(Exception):
                worker.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()
