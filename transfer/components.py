"""Components a method config switches on (`method.components: [name, ...]`), by name.

Each entry is "module:function"; the function takes the Trainer after its agent is built (before a
resume loads state) and attaches what it needs through the agent's seams (core/agent.py). The loop
itself never asks which method runs.
"""
from __future__ import annotations

import importlib

COMPONENTS = {
    "disagreement": "teacher.explore:attach",   # reward-free exploration (ensemble disagreement)
    "gsa": "student.gsa:attach",                # retrieval rehearsal + execution guidance
    "vid2act": "student.vid2act:attach",        # distillation from a frozen teacher + action replay
}


def component(name: str):
    if name not in COMPONENTS:
        raise ValueError(f"unknown method component {name!r}; known: {', '.join(sorted(COMPONENTS))}")
    module, fn = COMPONENTS[name].split(":")
    return getattr(importlib.import_module(module), fn)
