"""The one training loop: parallel env workers -> online replay -> the agent's updates at `train_ratio`
(DreamerV3's world model + actor-critic, or DrQ-v2's critic + actor: one interface, transfer/build.py picks
the agent), periodic evaluation on separate envs (with a video of one episode each, logger.video), logging and
resumable checkpoints.

Counters are environment steps (frames, action repeat included). Everything is written under the
run directory; constructing a Trainer on a run directory with a checkpoint resumes from it. The Trainer
receives everything it runs (`Parts`: envs, agent, replay, teacher, components) from the composition root,
transfer/build.py, and imports nothing from teacher/ or student/. Components attach to a narrow Context
(transfer/context.py), never to the Trainer itself.
"""
from __future__ import annotations

import logging
import pathlib
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from omegaconf import OmegaConf

from core import checkpoint
from core.agent import Agent
from core.logger import RESUMED, Logger, mean_metrics
from core.replay import Replay
from core.graphs import GraphedUpdates
from core.runtime import Stopwatch, peak_rss_mb, resolve_device
from core.video import EpisodeRecorder
from envs import REPLAY_KEYS
from envs.episodes import EpisodeStats, run_episodes, summarize
from envs.workers import EnvPool
from transfer.context import Context, RunSettings

log = logging.getLogger(__name__)
EVAL_POLICIES = ("sample", "mode")  # trainer.eval_policy


@dataclass
class Parts:
    """What a Trainer runs, built by transfer/build.py: training env workers, builders of the eval envs,
    the agent (initial weights set; core.agent.Agent or core.drqv2.DrQV2Agent, one interface), its replay, the
    teacher file's info and the components' attach functions."""
    device: torch.device
    envs: EnvPool
    eval_fns: list
    agent: Agent
    replay: Replay
    teacher: dict | None = None
    components: list = field(default_factory=list)


class Trainer:
    @staticmethod
    def check(cfg) -> None:
        """The loop's own settings, checked before any part is built (ValueError that says what to use)."""
        if cfg.trainer.eval_policy not in EVAL_POLICIES:
            raise ValueError(f"trainer.eval_policy={cfg.trainer.eval_policy!r}: use one of {', '.join(EVAL_POLICIES)}")
        if cfg.model.get("cuda_graphs"):
            device = resolve_device(cfg.device)
            if device.type != "cuda":
                raise ValueError(f"model.cuda_graphs=true needs a CUDA device (device={cfg.device} gives "
                                 f"{device}): use device=cuda or model.cuda_graphs=false")
            if cfg.model.get("compile"):
                raise ValueError("model.cuda_graphs and model.compile do not mix: use one")

    def __init__(self, cfg, run_dir, parts: Parts):
        """Wires the parts into the loop: components attach through the seams below, then a checkpoint in
        run_dir (if any) is resumed and the logger opened."""
        self.cfg, t = cfg, cfg.trainer
        self.dir = pathlib.Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_path = self.dir / "checkpoint.pt"
        self.device, self.teacher = parts.device, parts.teacher
        self.envs, self.eval_fns = parts.envs, parts.eval_fns
        self.spec = self.envs.specs[0]
        self.frames_per_step = self.spec.action_repeat
        self.agent, self.replay = parts.agent, parts.replay
        # Seams that method components (transfer/components.py) set through their Context; the loop never
        # asks which method runs:
        self.batch_source = self.replay.sample  # (B, T) -> world-model batch of numpy arrays
        self.acting_hooks: list = []    # (obs list, actions (N, A) np, env step) -> executed actions (N, A)
        self.log_sources: list = []     # () -> {name: float}, merged into each train log row
        self.episode_sources: list = []  # (env index) -> {name: float}, merged into its finished episode's row
        self.logger_rows: list = []     # {name: float} rows written once the logger exists (setup results)
        self.priors: list = []          # (num_envs) -> GuidedActing whose prior acts whole episodes (diagnostics)
        self.artifacts: dict = {}       # what a component provides to later ones (transfer/components.py)
        self.rngs = {"replay": self.replay.rng}  # named numpy generators, saved and restored (see rng())
        self.part_states: dict = {}     # {name: (get () -> dict, load (dict) -> None)}: parts' counters, checkpointed
        self.step, self.episodes, self.update_budget = 0, 0, 0.0
        # wall time per section of this process (perf/time_* in the train logs); trainer.profile: exact on CUDA
        sync = torch.cuda.synchronize if t.get("profile") and self.device.type == "cuda" else None
        self.stopwatch = self.agent.stopwatch = Stopwatch(sync)
        # one update on a batch: eager, or replayed as one CUDA graph (core/graphs.py, captured at the first call)
        self.update = GraphedUpdates(self.agent) if cfg.model.get("cuda_graphs") else self.agent.train_step
        ctx = self.context()
        for attach in parts.components:
            attach(ctx)  # switches a part on: loss term, reward, batch source, prior...
        self.next_eval, self.wandb_id, self.resumed = t.eval_every, None, False
        if self.ckpt_path.exists():
            self._resume()
        self.logger = Logger(self.dir, cfg.logger, OmegaConf.to_container(cfg, resolve=True),
                             t.steps, self.step, self.wandb_id)
        for row in self.logger_rows:
            self.logger.write(self.step, row)

    def context(self) -> Context:
        """The narrow view the components attach to: settings, spec, agent, replay, artifacts and the
        registration seams above (transfer/context.py)."""
        cfg = self.cfg
        run = RunSettings(seed=cfg.seed, task=cfg.task, env=OmegaConf.to_container(cfg.env, resolve=True),
                          max_action_dim=cfg.max_action_dim, warmup=cfg.trainer.warmup, wm_opt=cfg.model.wm_opt,
                          progress=cfg.logger.progress, teacher=cfg.get("teacher"))
        return Context(method=cfg.method, run=run, spec=self.spec, run_dir=self.dir, device=self.device,
                       teacher=self.teacher, resuming=self.ckpt_path.exists(), num_envs=self.envs.num_envs,
                       agent=self.agent, replay=self.replay, artifacts=self.artifacts, rng=self.rng,
                       add_acting_hook=self.acting_hooks.append, add_log_source=self.log_sources.append,
                       add_episode_source=self.episode_sources.append, log_once=self.logger_rows.append,
                       add_prior=self.priors.append, add_state=self.add_state,
                       set_batch_source=lambda fn: setattr(self, "batch_source", fn), step=lambda: self.step)

    def rng(self, name: str, seed) -> np.random.Generator:
        """A numpy generator for a component (e.g. rehearsal sampling, guidance plans): its state is saved
        in every checkpoint and restored on resume, so a resumed run continues the same stream."""
        if name in self.rngs:
            raise ValueError(f"random stream {name!r} is registered twice; give each component its own name")
        self.rngs[name] = np.random.default_rng(seed)
        return self.rngs[name]

    def add_state(self, name: str, get, load):
        """A part's plain state (e.g. guidance's step counters): get() -> dict is saved in every checkpoint,
        load(dict) restores it on resume."""
        if name in self.part_states:
            raise ValueError(f"part state {name!r} is registered twice; give each part its own name")
        self.part_states[name] = (get, load)

    # ---- checkpointing -----------------------------------------------------------------------
    def save(self):
        self.replay.flush()
        checkpoint.save(self.ckpt_path, dict(
            agent=self.agent.full_state(), step=self.step, episodes=self.episodes,
            update_budget=self.update_budget, next_eval=self.next_eval, replay_files=self.replay.files,
            rng=checkpoint.rng_state(), rngs={k: g.bit_generator.state for k, g in self.rngs.items()},
            parts={k: get() for k, (get, _) in self.part_states.items()},
            wandb_id=self.logger.wandb_id, config=OmegaConf.to_container(self.cfg, resolve=True)))
        self.last_save = time.time()

    def _resume(self):
        state = checkpoint.load(self.ckpt_path)
        self.agent.load_full_state(state["agent"])
        self.replay.load(state["replay_files"])
        saved = state.get("rngs", {"replay": state.get("replay_rng")})  # replay_rng: checkpoints before 2026-11-29
        for name, gen in self.rngs.items():
            if saved.get(name) is None:
                log.warning("the checkpoint has no state for the random stream %r: it restarts from its seed", name)
            else:
                gen.bit_generator.state = saved[name]
        for name, (_, load) in self.part_states.items():
            if name in state.get("parts", {}):
                load(state["parts"][name])
            else:
                log.warning("the checkpoint has no state for the part %r: it restarts from zero", name)
        checkpoint.set_rng_state(state["rng"])
        self.step, self.episodes = state["step"], state["episodes"]
        self.update_budget, self.next_eval = state["update_budget"], state["next_eval"]
        self.wandb_id = state["wandb_id"]
        self.resumed = True
        log.info("resumed from %s at step %d (replay %d steps, %d updates)",
                 self.ckpt_path, self.step, len(self.replay), self.agent.updates)

    # ---- main loop ---------------------------------------------------------------------------
    def run(self):
        t, n = self.cfg.trainer, self.envs.num_envs
        mask = self.spec.action_mask
        updates_per_step = t.train_ratio / (t.batch_size * t.batch_length)
        sw = self.stopwatch
        with sw.section("env_wait"):
            obs = self.envs.step(np.zeros((n, self.cfg.max_action_dim), np.float32))  # all reset
        state = self.agent.initial_state(n)
        prev_action = np.zeros((n, self.cfg.max_action_dim), np.float32)
        stats = EpisodeStats(n)
        if self.step == 0 and self.priors and t.get("prior_eval_episodes", 0) > 0:
            with sw.section("evaluation"):  # the guidance prior's quality, visible before it guides anything
                alone = self.evaluate_prior(t.prior_eval_episodes)
            self.logger.write(0, alone)
            log.info("guidance prior alone: %s", " ".join(f"{k}={v:.3g}" for k, v in alone.items()))
        if self.resumed and self.step < t.steps:  # readers drop the rows a killed run logged after its checkpoint
            self.logger.write(self.step, {RESUMED: 1.0})   # (redone from here; core.logger.without_redone)
        self.last_save, train_metrics, t0, step0 = time.time(), [], time.time(), self.step
        while self.step < t.steps:
            with sw.section("acting"):
                batch_obs = {k: np.stack([o[k] for o in obs]) for k in ("image", "is_first")}
                action, state = self.agent.policy(batch_obs, state, explore=True)
                if self.step < t.warmup:
                    action = np.random.uniform(-1, 1, action.shape).astype(np.float32) * mask
                for hook in self.acting_hooks:  # e.g. execution guidance by a prior
                    action = hook(obs, action, self.step)
                state["action"] = torch.as_tensor(action, device=self.device)  # what was executed (the RSSM's input)
                for i, o in enumerate(obs):
                    if o["is_first"]:
                        prev_action[i] = 0.0
                    self.replay.add(i, {**{k: o[k] for k in REPLAY_KEYS}, "action": prev_action[i]})
            for ep in stats.update(obs):
                self.episodes += 1
                self.logger.write(self.step, {"train/return": ep["ret"], "train/length": ep["length"],
                                              "train/success": ep["success"],
                                              "train/success_final": ep["success_final"],
                                              "train/episodes": self.episodes,
                                              **{k: v for source in self.episode_sources
                                                 for k, v in source(ep["env"]).items()}})
                self.logger.progress(self.step, ep["ret"])
            prev_action = action.astype(np.float32)
            stepped = sum(not o["is_last"] for o in obs)  # envs at is_last get reset, not stepped
            self.envs.step_async(action)  # trainer.overlap: the workers step while the updates below run
            if not t.overlap:
                with sw.section("env_wait"):
                    obs = self.envs.step_wait()
            self.step += stepped * self.frames_per_step
            if self.step >= t.warmup:  # the updates read replay only, which holds nothing of the new obs yet
                self.update_budget += stepped * updates_per_step
                while self.update_budget >= 1:
                    self.update_budget -= 1
                    with sw.section("sample"):
                        batch = {k: torch.as_tensor(v)
                                 for k, v in self.batch_source(t.batch_size, t.batch_length).items()}
                    train_metrics.append(self.update(batch))  # times world_model / actor_critic (or update) itself
            if t.overlap:
                with sw.section("env_wait"):
                    obs = self.envs.step_wait()
            if train_metrics and self._crossed(t.log_every, stepped):
                self._log_train(train_metrics, (self.step - step0) / (time.time() - t0))
                train_metrics = []
            self.logger.progress(self.step)
            if t.eval_every and self.step >= self.next_eval:  # 0: only the final evaluation
                with sw.section("evaluation"):
                    self.evaluate(t.eval_episodes)
                self.next_eval += t.eval_every
            if self._crossed(t.checkpoint_every, stepped) or time.time() - self.last_save > 60 * t.checkpoint_minutes:
                with sw.section("checkpoint"):
                    self.save()
        if train_metrics:  # what the last log interval did not write yet
            self._log_train(train_metrics, (self.step - step0) / (time.time() - t0))
        with sw.section("evaluation"):
            result = self.evaluate(t.final_eval_episodes, final=True)
        with sw.section("checkpoint"):
            self.save()
        self.logger.write(self.step, self.perf())
        return result

    def _crossed(self, every: int, stepped: int) -> bool:
        """Did the last increment of self.step cross a multiple of `every` (0: never)?"""
        before = self.step - stepped * self.frames_per_step
        return bool(every) and self.step // every != before // every

    def _log_train(self, metrics: list[dict], fps: float):
        mean = {f"train/{k}": v for k, v in mean_metrics(metrics).items()}  # each update's: {name: 0-dim tensor}
        mean.update({"train/updates": self.agent.updates, "train/replay_steps": len(self.replay),
                     "perf/env_steps_per_s": fps, "perf/worker_restarts": self.envs.restarts, **self.perf()})
        for source in self.log_sources:
            mean.update(source())
        self.logger.write(self.step, mean)

    def perf(self) -> dict:
        """Where this process's wall time went since the run (or its resume) started, as shares (perf/time_*:
        acting, env_wait, sample, world_model, actor_critic or DrQ-v2's critic / actor, evaluation, checkpoint,
        other), peak resident memory in MiB of this process and of the largest env worker, and whether the updates
        ran under bf16 autocast (perf/bf16: model.bf16 resolved, e.g. auto on this machine)."""
        workers = [peak_rss_mb(pid) for pid in self.envs.pids]
        bf16 = float(getattr(self.agent, "bf16", False))
        return {**self.stopwatch.split(), "perf/peak_rss_mb": peak_rss_mb(), "perf/bf16": bf16,
                "perf/worker_peak_rss_mb": max(workers, default=float("nan"))}

    def evaluate(self, episodes: int, final: bool = False) -> dict:
        """The actor on separate eval envs, its actions sampled (trainer.eval_policy=sample, DreamerV3's
        protocol) or its mean (mode). Returns mean return, success at any step and success at the final
        step (Meta-World's score) over `episodes` episodes, and `sampled` (1: sampled actions)."""
        sample = self.cfg.trainer.eval_policy == "sample"
        recorder = EpisodeRecorder() if self.logger.video_on else None  # logger.video=false: no frame is kept
        starts: list = []  # the agent's states at the eval episodes' first frames
        finished = self._eval_episodes(episodes, sample, observe=recorder, starts=starts)[0]
        result = {**summarize(finished, "eval/"), "eval/sampled": float(sample)}
        steps = int(np.mean([e["length"] for e in finished]))
        start = {k: torch.cat([s[k] for s in starts])[:episodes] for k in starts[0]}  # (episodes, ...)
        imagined = self.agent.imagined_return(start, steps)
        if imagined is not None:  # what the model predicts for the actor from the same first frames
            result["eval/imagined_return"] = imagined
        if final:
            result = {k.replace("eval/", "final/"): v for k, v in result.items()}
        if recorder is not None and recorder.images:  # the first eval env's first episode
            name = "final" if final else "eval"
            self.logger.video(f"{name}/video", self.dir / "videos" / f"{name}_{self.step:07d}.mp4",
                              recorder.frames(), self.step)
        self.logger.write(self.step, result)
        log.info("step %d %s", self.step, " ".join(f"{k}={v:.3g}" for k, v in result.items()))
        return result

    def evaluate_prior(self, episodes: int) -> dict:
        """The method's guidance prior (the first of self.priors) acting alone for whole episodes on the
        eval envs; the agent still filters every observation (the VAE prior acts on its features) and
        sees the prior's actions. Returns prior/{return, success, success_final, episodes, guided}
        (guided: the share of acting steps the prior took, 1.0). Not logged, nothing trained."""
        if not self.priors:
            raise ValueError(f"method={self.cfg.method.name} has no guidance prior to evaluate")
        finished, guided = self._eval_episodes(episodes, sample=False, prior=self.priors[0])
        return {**summarize(finished, "prior/"), "prior/guided": guided}

    def _eval_episodes(self, episodes: int, sample: bool, prior=None, observe=None,
                       starts: list | None = None) -> tuple[list[dict], float | None]:
        """Episodes on the eval envs, acted by the agent (sampled or mean) or, with `prior` (num_envs ->
        GuidedActing), by that prior, the executed action fed back to the agent's RSSM; `observe` sees every
        list of observations (run_episodes); `starts` collects the agent's states {k: (n, ...)} at first
        frames. Returns the episode summaries and the share of acting steps the prior took (None without one)."""
        with EnvPool(self.eval_fns, self.cfg.trainer.parallel) as pool:
            state = self.agent.initial_state(pool.num_envs)
            guide = prior(pool.num_envs) if prior else None
            rng = np.random.default_rng(0)  # the always-on schedule draws nothing from it

            def act(obs):
                nonlocal state
                batch_obs = {k: np.stack([o[k] for o in obs]) for k in ("image", "is_first")}
                action, state = self.agent.policy(batch_obs, state, explore=sample)
                first = np.flatnonzero(batch_obs["is_first"])
                if starts is not None and len(first):
                    starts.append({k: v[first] for k, v in state.items()})
                if guide is not None:
                    action = guide.apply(obs, action, 0, rng)[0]
                    state["action"] = torch.as_tensor(action, device=self.device)
                return action
            finished = run_episodes(pool, act, episodes, self.cfg.max_action_dim, observe)
        return finished, (guide.guided_steps / max(guide.steps, 1) if guide is not None else None)

    def close(self):
        self.envs.close()
        self.logger.close()
