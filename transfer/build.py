"""The composition root: resolve the teacher (the embedded default included), pick the method's components,
build the env workers, the agent (with its initial weights) and its replay, and hand them to the one training
loop. The agent type is the method's `agent` (configs/method/*.yaml): `dreamer` (core.agent.Agent, the default
when absent) or `drqv2` (core.drqv2.DrQV2Agent, model-free); the loop runs either through the same interface.
`transfer.loop` imports nothing from `teacher/` or `student/`; this module and the components registry
(transfer/components.py) do.

A new run can start from an earlier run's final state (`init.*` in configs/config.yaml; transfer.continual starts
task i from task i-1): while run_dir has no checkpoint of its own, the parts listed in init.keep (wm, actor,
critic: see INIT_PARTS) are loaded from init.checkpoint after the components attached (so what they add to the
agent, e.g. PackNet's owner maps on the actor, is loaded with its part), the others keep their fresh
initialisation (a teacher's weights included), the optimisers start with empty state, and init.replay=true makes
that run's replay files part of this run's replay (core.replay.Replay.adopt: sampled, rewards masked out, kept
on resume). A resumed run loads its own checkpoint and ignores init.

    trainer = build_trainer(cfg, run_dir)   # a run directory with a checkpoint resumes from it
"""
from __future__ import annotations

import logging
import pathlib
import random

import numpy as np
import torch
from omegaconf import OmegaConf

from core import checkpoint
from core.agent import Agent
from core.drqv2 import DrQV2Agent
from core.replay import Replay
from core.runtime import resolve_device
from envs import env_fns
from envs.base import did_you_mean
from envs.workers import EnvPool
from transfer.components import active
from transfer.loop import Parts, Trainer

log = logging.getLogger(__name__)
# init.keep parts -> the agent's state_dict key prefixes (critic: the slow copy and the return scale go with it)
INIT_PARTS = {"wm": ("wm.",), "actor": ("ac.actor.",), "critic": ("ac.critic.", "ac.slow_critic.", "ac.retnorm.")}
AGENTS = {"dreamer": lambda image, mask, cfg, device: Agent({"image": image}, mask, cfg.model, device),
          "drqv2": lambda image, mask, cfg, device: DrQV2Agent(image, mask, cfg.method.drqv2, device,
                                                                   cfg.model.bf16)}


def agent_kind(cfg) -> str:
    """The method's agent type (`method.agent`, default dreamer); a ValueError that names the known ones."""
    kind = cfg.method.get("agent", "dreamer")
    if kind not in AGENTS:
        raise ValueError(f"method.agent={kind!r}: use one of {', '.join(AGENTS)}.{did_you_mean(kind, AGENTS)}")
    return kind


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
        from teacher.embedded import ensure
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


def init_state(cfg, run_dir, kind: str) -> dict | None:
    """init.* checked before anything starts; the checkpoint this run starts from (loaded), or None when
    init.checkpoint is unset or run_dir holds a checkpoint of its own (the resume loads that instead)."""
    init = cfg.get("init") or {}
    if not init.get("checkpoint"):
        return None
    unknown = [part for part in init.get("keep") or [] if part not in INIT_PARTS]
    if unknown:
        raise ValueError(f"init.keep: unknown part {unknown[0]!r}; use some of {', '.join(INIT_PARTS)}")
    if (pathlib.Path(run_dir) / "checkpoint.pt").exists():
        return None
    if kind != "dreamer":
        raise ValueError(f"init.checkpoint loads parts of a DreamerV3 agent; method.agent={kind} has other parts")
    path = pathlib.Path(init.checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"init.checkpoint={path}: no such file; give the checkpoint.pt of an earlier run")
    return checkpoint.load(path)


def load_init(trainer: Trainer, state: dict, init) -> None:
    """The init.keep parts of the checkpoint's agent weights into the new run's agent (in place, so the
    optimisers keep their empty state) and, with init.replay, its replay files into the new run's replay."""
    own, saved = trainer.agent.state_dict(), state["agent"]["model"]
    keys = []
    for part in init.keep:
        mine = {k for k in own if k.startswith(INIT_PARTS[part])}
        theirs = {k for k in saved if k.startswith(INIT_PARTS[part])}
        odd = sorted(mine ^ theirs) + sorted(k for k in mine & theirs if own[k].shape != saved[k].shape)
        if odd:
            raise ValueError(f"init.checkpoint={init.checkpoint}: its {part} does not fit this run's ({odd[0]!r} "
                             f"differs); start from a run of the same method and model size")
        keys += sorted(mine)
    trainer.agent.load_state_dict({k: saved[k] for k in keys}, strict=False)
    if init.replay:
        trainer.replay.adopt(pathlib.Path(init.checkpoint).parent / "replay", state["replay_files"])
    log.info("started from %s: %s loaded%s", init.checkpoint, ", ".join(init.keep) or "no weights",
             f", its {len(trainer.replay)} replay steps adopted" if init.replay else "")


def build_trainer(cfg, run_dir) -> Trainer:
    """A Trainer for cfg in run_dir with the method's parts: components (checked by name and order before
    anything starts), teacher, env workers, the agent (for methods that fine-tune it, the teacher's weights
    as its start; a resumed run then loads its own) and its replay."""
    t = cfg.trainer
    Trainer.check(cfg)
    kind = agent_kind(cfg)
    components = [attach for _, attach in active(cfg.method)]  # unknown names or a wrong order fail here
    init = init_state(cfg, run_dir, kind)  # a missing init checkpoint fails here
    teacher = resolve_teacher(cfg)  # before any worker starts: a bad teacher fails fast
    if t.threads:
        torch.set_num_threads(t.threads)
    device = resolve_device(cfg.device)
    env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
    envs = EnvPool(env_fns(env_cfg, cfg.task, cfg.seed, cfg.max_action_dim, t.envs), t.parallel)
    try:
        spec, size = envs.specs[0], envs.specs[0].image_size
        # Seeded here, after the teacher is resolved: building the default teacher in-process draws from the
        # global generators, so seeding earlier would give a first run other weights than a rerun.
        random.seed(cfg.seed), np.random.seed(cfg.seed), torch.manual_seed(cfg.seed)
        agent = AGENTS[kind]((size, size, 3), spec.action_mask, cfg, device)
        if teacher is not None and cfg.method.get("init_from_teacher"):
            from teacher.model import load_pretrained
            load_pretrained(agent.wm, teacher)
        replay = Replay(pathlib.Path(run_dir) / "replay", t.replay_capacity, t.envs, (size, size, 3),
                        cfg.max_action_dim, seed=cfg.seed)
        parts = Parts(device, envs, env_fns(env_cfg, cfg.task, cfg.seed + 10_000, cfg.max_action_dim, t.eval_envs),
                      agent, replay, teacher, components)
        trainer = Trainer(cfg, run_dir, parts)
        if init is not None:
            try:
                load_init(trainer, init, cfg.init)
            except BaseException:
                trainer.logger.close()
                raise
        if hasattr(agent, "clock"):  # DrQ-v2's exploration std follows the loop's env step (restored on resume)
            agent.clock = lambda: trainer.step
        return trainer
    except BaseException:
        envs.close()
        raise
