"""Process-level settings: the device, allocator tuning and torch.compile of the hot modules; where wall
time and memory go (Stopwatch, peak_rss_mb)."""
from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import defaultdict

MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 32)}


def resolve_device(name: str):
    """torch.device for `device=` (auto: cuda when available, else cpu); a clear error for cuda without CUDA."""
    import torch
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={name} but CUDA is not available here; use device=auto or device=cpu")
    return torch.device(name)


def native_bf16(device) -> bool:
    """Whether `device` computes bf16 natively: a CUDA GPU that supports it, or a CPU with AVX512-BF16 or AMX
    (without them CPU autocast emulates bf16 and runs slower than fp32)."""
    import torch
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return False


def resolve_bf16(setting, device) -> bool:
    """`model.bf16`: true / false, or auto (on where `device` computes bf16 natively)."""
    if isinstance(setting, str):
        if setting != "auto":
            raise ValueError(f"model.bf16={setting!r}: use true, false or auto")
        return native_bf16(device)
    return bool(setting)


def bf16_autocast(device, enabled: bool):
    """bf16 autocast on `device` when `enabled` (a resolved model.bf16), else a no-op context."""
    import torch
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def tune_malloc(module: str):
    """glibc hands big activation buffers back to the kernel after every update, which costs a
    large share of CPU time on small machines. Re-exec `python -m module` once with mmap and trim
    thresholds raised (higher peak RSS), unless the user set them or WMT_NO_MALLOC_TUNING=1."""
    if "MALLOC_MMAP_MAX_" in os.environ or os.environ.get("WMT_NO_MALLOC_TUNING"):
        return
    os.execve(sys.executable, [sys.executable, "-m", module, *sys.argv[1:]], {**os.environ, **MALLOC_ENV})


def allocator_settings() -> dict:
    return {k: os.environ.get(k, "unset") for k in MALLOC_ENV}


def compile_agent(agent):
    """torch.compile the encoder, image decoder, GRU step and actor in place (state_dict unchanged)."""
    import torch
    wm = agent.wm
    wm.encoder.compile()
    if hasattr(wm.decoder, "cnn"):
        wm.decoder.cnn.compile()
    wm.rssm._gru = torch.compile(wm.rssm._gru)
    agent.ac.actor.compile()


class Stopwatch:
    """Wall seconds per named section of a loop (sections do not nest: time each piece once). `sync` (e.g.
    torch.cuda.synchronize) runs at every boundary, so that asynchronous device work counts in the section
    that launched it; without it, on CUDA, kernels count wherever the host next waits for them."""

    def __init__(self, sync=None):
        self.sync, self.start = sync, time.perf_counter()
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def section(self, name: str):
        if self.sync:
            self.sync()
        t = time.perf_counter()
        try:
            yield
        finally:
            if self.sync:
                self.sync()
            self.seconds[name] += time.perf_counter() - t

    def split(self, prefix: str = "perf/") -> dict:
        """{prefix}time_<section>: share of the wall time since the start, `other` the rest; {prefix}wall_s."""
        wall = max(time.perf_counter() - self.start, 1e-9)
        out = {f"{prefix}time_{k}": v / wall for k, v in sorted(self.seconds.items())}
        out[f"{prefix}time_other"] = max(0.0, 1.0 - sum(self.seconds.values()) / wall)
        out[f"{prefix}wall_s"] = wall
        return out


def section(stopwatch: Stopwatch | None, name: str):
    """stopwatch.section(name), or nothing without a stopwatch."""
    return contextlib.nullcontext() if stopwatch is None else stopwatch.section(name)


def peak_rss_mb(pid: int | str = "self") -> float:
    """Peak resident memory of a process in MiB (Linux VmHWM; elsewhere this process's ru_maxrss), nan if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    if pid != "self":
        return float("nan")
    import resource
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20
