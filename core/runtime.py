"""Process-level settings: the device, allocator tuning and torch.compile of the hot modules."""
from __future__ import annotations

import os
import sys

MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 32)}


def resolve_device(name: str):
    """torch.device for `device=` (auto: cuda when available, else cpu); a clear error for cuda without CUDA."""
    import torch
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={name} but CUDA is not available here; use device=auto or device=cpu")
    return torch.device(name)


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
