"""The parts a method config switches on (`method.components: [name, ...]`), by name, each with one job.

Each part is an `attach(ctx)` function ("module:function") that takes a narrow Context (transfer/context.py:
its config slice, run settings, env spec, run dir, device, teacher, the agent's seams, replay, artifacts and
registration seams; never the Trainer) after the agent is built (before a resume loads state), and switches its
part on through those seams. A part declares the artifacts it needs from earlier parts and those it provides
(`ctx.artifacts[name]`); parts never read each other's attributes. A part whose switch (a key of the
method config) is off is skipped and provides nothing. `active(method)` checks the order before anything
starts and fails with one clear line. The loop itself never asks which method runs.

Artifacts: retrieved (student.gsa.Retrieved: the retrieved offline trajectories), prior (a factory
(schedule, num_envs) -> GuidedActing whose prior acts), distillation (student.vid2act.Distillation: frozen
teacher, source domains, distiller), action_replay (student.vid2act.ActionReplay: the VAE).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable


def switch(key: str) -> Callable[[dict], bool]:
    """On unless the method config sets `key` (dotted, e.g. "action_replay.enabled") false; missing is on."""
    def on(method) -> bool:
        node = method
        for part in key.split("."):
            node = node.get(part, True) if hasattr(node, "get") else True
        return bool(node)
    return on


def shift_on(method) -> bool:
    return bool((method.get("shift") or {}).get("every", 0))


def prior_is(kind: str) -> Callable[[dict], bool]:
    return lambda method: bool(method.get("guidance", True)) and method.get("prior", "bc") == kind


@dataclass(frozen=True)
class Part:
    target: str                          # "module:function" taking the Context (transfer/context.py)
    needs: tuple[str, ...] = ()          # artifacts an earlier active part must provide
    provides: tuple[str, ...] = ()       # artifacts this part puts in ctx.artifacts
    uses: tuple[str, ...] = ()           # artifacts read when an earlier part provides them (optional)
    on: Callable[[dict], bool] = lambda method: True   # the switch, read from the method config


COMPONENTS = {
    "disagreement": Part("teacher.data.explore:attach"),             # reward-free exploration (ensemble disagreement)
    "retrieval": Part("student.gsa:attach_retrieval", provides=("retrieved",)),   # GSA: nearest offline trajectories
    "task_data": Part("student.gsa:attach_task_data", provides=("retrieved",)),   # the target task's own trajectories
    "rehearsal": Part("student.rehearsal:attach", needs=("retrieved",), on=switch("rehearsal")),  # mixed batches
    "shift_monitor": Part("student.shift_monitor:attach", needs=("retrieved",), on=shift_on),  # GSA Fig. 2 distances
    "bc_prior": Part("student.gsa:attach_bc_prior", needs=("retrieved",), provides=("prior",), on=prior_is("bc")),
    "distillation": Part("student.vid2act:attach_distillation", uses=("retrieved",), provides=("distillation",)),
    "action_replay": Part("student.vid2act:attach_action_replay", needs=("distillation",), provides=("action_replay",),
                          on=switch("action_replay.enabled")),   # Vid2Act's conditional VAE
    "vae_prior": Part("student.vid2act:attach_prior", needs=("action_replay",), provides=("prior",),
                      on=prior_is("vae")),
    "guidance": Part("student.guidance:attach", needs=("prior",), on=switch("guidance")),  # the prior acts some episodes
    "pessimism": Part("student.pessimism:attach", on=lambda m: float((m.get("pessimism") or {}).get("scale", 0)) > 0),
    "packnet": Part("student.packnet:attach", on=lambda m: bool((m.get("packnet") or {}).get("enabled"))),  # actor masks
}


def active(method) -> list[tuple[str, Callable]]:
    """(name, attach) of the parts in method.components whose switch is on, in order; an unknown name or a
    need that no earlier active part provides is a ValueError that says what to change."""
    names, out, provided = list(method.get("components") or []), [], {}
    for name in names:
        if name not in COMPONENTS:
            raise ValueError(f"unknown method component {name!r}; known: {', '.join(sorted(COMPONENTS))}")
        part = COMPONENTS[name]
        if not part.on(method):
            continue
        missing = [n for n in part.needs if n not in provided]
        if missing:
            makers = sorted(k for k, p in COMPONENTS.items() if missing[0] in p.provides)
            raise ValueError(f"method.components: {name!r} needs {missing[0]!r}, which no earlier active component "
                             f"provides (components {names}); put one of {makers} before it, switched on")
        provided.update({n: name for n in part.provides})
        module, fn = part.target.split(":")
        out.append((name, getattr(importlib.import_module(module), fn)))
    return out
