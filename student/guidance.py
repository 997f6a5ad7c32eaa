"""GSA's execution guidance: when the behaviour-cloned prior (student/bc.py) acts instead of the agent.

Owns: `GuidanceSchedule` (the linear probability schedule and the per-episode plan), `PrefixSchedule`
(JSRL's: the prior acts the first h steps of every episode) and
`GuidedActing` (per-env frame stacks, plans and episode step counters for N parallel envs, the
batched prior forward pass and the guided-step counters for logging).

The rule (GSA, Sec. 3.3 and App. H): at each episode start the prior is used with probability
p(step) = linear(initial -> final over `duration` steps); if it is, a duration H is drawn uniformly
from {T/10 * i : i = 1..10} (T = agent steps per episode) and a start uniformly from [0, T - H];
the prior then acts at the agent steps start <= t < start + H of that episode (t = 0 at the
`is_first` observation), the agent at all others. During the warm-up (step < warmup) the prior
acts for whole episodes. The executed action, prior or agent, is the one the loop stores in replay
and feeds to the RSSM as the previous action; `act` returns it padded to A (padded dims exactly 0).

`step` arguments are ENVIRONMENT steps (frames, action repeat included), the loop's counter, so
`duration` and `warmup` are in frames too. Note: the GSA code evaluates linear(1, 0.1, 100000) on
agent steps (100000 agent steps = 200000 frames at action repeat 2); the paper's linear(1, 0, 50000)
(DMC) / 150000 (Meta-World) counts samples on its frame-based x-axes.
"""
from __future__ import annotations

import numpy as np
import torch

from core.ops import linear_schedule
from student.bc import BCPolicy


class GuidanceSchedule:
    """p(step) = initial + (final - initial) * min(step / duration, 1), and one plan per episode."""

    def __init__(self, initial: float = 1.0, final: float = 0.1, duration: int = 100_000,
                 episode_length: int = 500, warmup: int = 0):
        if not (0 <= initial <= 1 and 0 <= final <= 1):
            raise ValueError(f"guidance probabilities must lie in [0, 1], got initial={initial}, final={final}")
        if episode_length < 1 or duration < 0 or warmup < 0:
            raise ValueError(f"need episode_length >= 1, duration >= 0, warmup >= 0; got "
                             f"{episode_length}, {duration}, {warmup}")
        self.initial, self.final, self.duration = float(initial), float(final), int(duration)
        self.episode_length, self.warmup = int(episode_length), int(warmup)  # T (agent steps), frames
        t = self.episode_length  # durations T/10 * i, rounded down, at least 1 agent step
        self.durations = np.array(sorted({max(1, t * i // 10) for i in range(1, 11)}), np.int64)

    @classmethod
    def always(cls, episode_length: int) -> "GuidanceSchedule":
        """The prior acts for whole episodes at every step (its own success, diagnosed alone)."""
        return cls(1.0, 1.0, 0, episode_length, warmup=1 << 62)

    def probability(self, step: int) -> float:
        """Probability that an episode starting at env step `step` is guided (after the warm-up)."""
        return linear_schedule(self.initial, self.final, self.duration, step)

    def plan(self, step: int, rng: np.random.Generator) -> tuple[int, int] | None:
        """Guidance window (start, length) in agent steps for an episode starting at env step `step`,
        or None (the agent acts throughout). Warm-up: (0, T), the whole episode."""
        t = self.episode_length
        if step < self.warmup:
            return 0, t
        if rng.random() >= self.probability(step):
            return None
        length = int(self.durations[rng.integers(len(self.durations))])
        return int(rng.integers(t - length + 1)), length


class PrefixSchedule(GuidanceSchedule):
    """JSRL's rule (JSRL-BC, GSA's baseline): in every episode the prior acts for the first h agent steps, h
    drawn uniformly from `prefixes` (e.g. 0, 10, ..., 100; capped at the episode length T), then the learner.
    No warm-up special case and no decay; h = 0 leaves the episode to the learner."""

    def __init__(self, prefixes, episode_length: int = 500):
        prefixes = [int(h) for h in prefixes]
        if not prefixes or min(prefixes) < 0:
            raise ValueError(f"method.schedule.prefixes={prefixes}: give agent-step counts >= 0, e.g. [0, 10, ..., 100]")
        super().__init__(1.0, 1.0, 0, episode_length, 0)
        self.prefixes = np.minimum(np.array(prefixes, np.int64), self.episode_length)  # (P,)

    def probability(self, step: int) -> float:
        """The share of episodes in which the prior acts at all (h > 0)."""
        return float(np.mean(self.prefixes > 0))

    def plan(self, step: int, rng: np.random.Generator) -> tuple[int, int] | None:
        h = int(self.prefixes[rng.integers(len(self.prefixes))])
        return (0, h) if h > 0 else None


def make_schedule(s, episode_length: int, warmup: int) -> GuidanceSchedule:
    """method.schedule -> its schedule: kind linear (GSA, the default) or prefix (JSRL)."""
    kind = s.get("kind", "linear")
    if kind == "prefix":
        return PrefixSchedule(s.prefixes, episode_length)
    if kind != "linear":
        raise ValueError(f"method.schedule.kind={kind!r}: use linear (GSA) or prefix (JSRL)")
    return GuidanceSchedule(s.initial, s.final, s.duration, episode_length, warmup)


class GuidedActing:
    """Per-env guidance state for N parallel envs.

    Call `on_obs(i, obs, step, rng)` for every observation of env i (before acting on it); then
    `use_prior(i)` says whether the prior acts now and `act(indices)` gives the prior's padded
    actions for those envs. `apply(obs_list, actions, step, rng)` does all three for a batch and
    overwrites the agent's actions where the prior acts. Counters: `steps` / `guided_steps` (acting
    steps, i.e. observations that are not `is_last`), `episodes` / `guided_episodes`."""

    def __init__(self, policy: BCPolicy | None, schedule: GuidanceSchedule, num_envs: int):
        """policy None: a subclass's `act` supplies the prior's actions (its frame stacks hold 1 frame)."""
        self.policy, self.schedule, self.num_envs = policy, schedule, num_envs
        self.frames = policy.frames if policy is not None else 1
        self.stacks: list[np.ndarray | None] = [None] * num_envs  # each (k, R, R, 3) uint8, oldest first
        self.plans: list[tuple[int, int] | None] = [None] * num_envs  # (start, length) in agent steps
        self.t = np.zeros(num_envs, np.int64)  # agent step within the episode (0 at is_first)
        self.episode_guided = np.zeros(num_envs, np.int64)  # guided acting steps of each env's current episode
        self.steps = self.guided_steps = self.episodes = self.guided_episodes = 0
        self._window = [0, 0]  # (steps, guided steps) since the last metrics() call
        self.last_probability = schedule.probability(0)

    def on_obs(self, i: int, obs: dict, step: int, rng: np.random.Generator):
        """Take env i's new observation: push its frame; on is_first reset the stack (first frame
        repeated), the episode step and draw the episode's plan at env step `step`."""
        frame = np.asarray(obs["image"], np.uint8)  # (R, R, 3)
        if obs["is_first"]:
            self.stacks[i] = np.repeat(frame[None], self.frames, axis=0)  # (k, R, R, 3)
            self.t[i] = self.episode_guided[i] = 0
            self.plans[i] = self.schedule.plan(step, rng)
            self.last_probability = self.schedule.probability(step)
            self.episodes += 1
            self.guided_episodes += self.plans[i] is not None
        elif self.stacks[i] is None:
            raise RuntimeError(f"env {i}: the first observation of an episode must have is_first=True")
        else:
            self.stacks[i] = np.concatenate([self.stacks[i][1:], frame[None]])
            self.t[i] += 1
        if not obs["is_last"]:  # an action is taken on this observation
            guided = self.use_prior(i)
            self.steps += 1
            self.guided_steps += guided
            self.episode_guided[i] += guided
            self._window[0] += 1
            self._window[1] += guided

    def use_prior(self, i: int) -> bool:
        """Does the prior act on env i's current observation?"""
        plan = self.plans[i]
        return plan is not None and plan[0] <= self.t[i] < plan[0] + plan[1]

    def stack(self, i: int) -> np.ndarray:
        """Env i's current stack as the policy input: (3k, R, R) uint8, oldest frame first."""
        k, h, w, c = self.stacks[i].shape
        return np.ascontiguousarray(self.stacks[i].transpose(0, 3, 1, 2)).reshape(k * c, h, w)

    def act(self, indices) -> np.ndarray:
        """Prior actions for the listed envs: (n, A) float32, padded dims 0 (one batched forward, no grad)."""
        indices = list(indices)
        if not indices:
            return np.zeros((0, self.policy.action_dim), np.float32)
        was_training = self.policy.training
        self.policy.eval()
        with torch.inference_mode():
            actions = self.policy.act(np.stack([self.stack(i) for i in indices]))  # (n, A)
        self.policy.train(was_training)
        return actions.astype(np.float32)

    def apply(self, obs_list: list[dict], actions: np.ndarray, step: int,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """For a batch of N observations (one per env) and the agent's actions (N, A): update every
        env, then replace the rows where the prior acts. Returns (executed actions (N, A) float32,
        guided (N,) bool). Feed the executed actions to replay and to the RSSM."""
        for i, obs in enumerate(obs_list):
            self.on_obs(i, obs, step, rng)
        guided = np.array([self.use_prior(i) and not obs["is_last"] for i, obs in enumerate(obs_list)], bool)
        actions = np.array(actions, np.float32, copy=True)
        if guided.any():
            actions[guided] = self.act(np.flatnonzero(guided))
        return actions, guided

    def episode_info(self, i: int) -> dict:
        """For env i's episode (read when it ends): the share of its acting steps that the prior took."""
        return {"train/guided": float(self.episode_guided[i]) / max(int(self.t[i]), 1)}

    def counters(self) -> dict:
        """The run-long counters (saved in checkpoints, so that a resumed run's totals go on)."""
        return {"steps": self.steps, "guided_steps": self.guided_steps, "episodes": self.episodes,
                "guided_episodes": self.guided_episodes}

    def load_counters(self, counters: dict):
        for name in ("steps", "guided_steps", "episodes", "guided_episodes"):
            setattr(self, name, int(counters[name]))

    def metrics(self) -> dict:
        """Guidance logs: the fraction of acting steps guided since the last call and overall, the
        fraction of guided episodes and the schedule's probability at the last episode start."""
        steps, guided = self._window
        self._window = [0, 0]
        return {"guidance/fraction": guided / max(steps, 1),
                "guidance/fraction_total": self.guided_steps / max(self.steps, 1),
                "guidance/episode_fraction": self.guided_episodes / max(self.episodes, 1),
                "guidance/probability": self.last_probability}


def attach(ctx) -> None:
    """The `guidance` part (ctx: transfer's Context): execution guidance in the loop by the `prior` artifact, a
    factory make_guide(schedule, num_envs) -> GuidedActing (or a subclass with its own prior; bc_prior and vae_prior
    provide one). The guide acts on GSA's schedule (method.schedule) as an acting hook and logs its guided
    fractions (and each training episode's, train/guided); ctx.add_prior gets the same prior acting whole episodes
    (the Trainer's evaluate_prior)."""
    make_guide = ctx.artifacts["prior"]
    schedule = make_schedule(ctx.method.schedule, ctx.spec.episode_length, ctx.run.warmup)
    guide, rng = make_guide(schedule, ctx.num_envs), ctx.rng("guidance", ctx.run.seed + 7)
    ctx.add_acting_hook(lambda obs, action, step: guide.apply(obs, action, step, rng)[0])
    ctx.add_log_source(guide.metrics)
    ctx.add_state("guidance", guide.counters, guide.load_counters)
    ctx.add_episode_source(guide.episode_info)
    ctx.add_prior(lambda n: make_guide(GuidanceSchedule.always(schedule.episode_length), n))
