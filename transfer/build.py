"""The composition root: resolve the teacher (the embedded default included), pick the method's components
and the agent's initial weights, and hand them to the one training loop. `transfer.loop` imports nothing
from `teacher/` or `student/`; this module and the components registry (transfer/components.py) do.

    trainer = build_trainer(cfg, run_dir)   # a run directory with a checkpoint resumes from it
"""
from __future__ import annotations

import logging

from transfer.components import active
from transfer.loop import Trainer

log = logging.getLogger(__name__)


def resolve_teacher(cfg) -> dict | None:
    """The teacher file's info for methods that need one (None otherwise). `teacher=PATH` is read; without it
    the embedded default is built once and cached (or a clear error when `default_teacher.enabled=false`).
    Methods that start from the teacher take its architecture (cfg.model is updated in place)."""
    kind = cfg.method.get("teacher_kind", "generalist" if cfg.method.get("init_from_teacher") else None)
    if not cfg.get("teacher"):
        if kind is None:
            return None
        if not cfg.default_teacher.enabled:
            raise ValueError(f"method={cfg.method.name} needs a pretrained {kind} teacher: pass teacher=PATH "
                             f"(the teacher.pt written by `python -m teacher.pretrain kind={kind} dataset=DIR`)")
        from teacher.default import ensure
        cfg.teacher = str(ensure(cfg, kind))  # the embedded default, built once and cached
    from teacher.model import apply_teacher_arch, read_teacher
    info = read_teacher(cfg.teacher)
    if kind is not None and info["kind"] != kind:
        raise ValueError(f"method={cfg.method.name} needs a {kind} teacher but {cfg.teacher} is {info['kind']}; "
                         f"pretrain one with `python -m teacher.pretrain kind={kind} dataset=DIR`")
    if cfg.method.get("init_from_teacher"):
        for note in apply_teacher_arch(cfg, info):
            log.info("architecture from the teacher: %s", note)
    return info


def build_trainer(cfg, run_dir) -> Trainer:
    """A Trainer for cfg in run_dir with the method's parts: teacher, components (checked by name before
    anything starts) and, for methods that fine-tune it, the teacher's weights as the agent's start."""
    components = [attach for _, attach in active(cfg.method)]  # unknown names or a wrong order fail here
    teacher = resolve_teacher(cfg)  # before any worker starts: a bad teacher fails fast
    return Trainer(cfg, run_dir, teacher=teacher, components=components,
                   init_agent=from_teacher(teacher) if teacher is not None and cfg.method.get("init_from_teacher") else None)


def from_teacher(teacher: dict):
    """init_agent for methods that fine-tune the teacher: its world-model weights (a resumed run then loads its own)."""
    from teacher.model import load_pretrained
    return lambda agent: load_pretrained(agent.wm, teacher)
