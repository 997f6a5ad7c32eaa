"""Episodes on an EnvPool: running per-env statistics and one rollout loop that evaluation, the BC
prior's diagnostics and the random-policy benchmark share."""
from __future__ import annotations

from typing import Callable

import numpy as np


class EpisodeStats:
    """Per-env running episode statistics; `update` returns the finished episodes' summaries:
    return, length, success (at ANY step) and success_final (at the LAST step), from log_success."""

    def __init__(self, n: int):
        self.ret, self.length = np.zeros(n), np.zeros(n, np.int64)
        self.success = np.zeros(n, bool)

    def update(self, obs: list[dict]) -> list[dict]:
        done = []
        for i, o in enumerate(obs):
            if o["is_first"]:
                self.ret[i], self.length[i], self.success[i] = 0.0, 0, False
                continue
            self.ret[i] += o["reward"]
            self.length[i] += 1
            now = bool(o.get("log_success", False))
            self.success[i] |= now
            if o["is_last"]:
                done.append(dict(env=i, ret=float(self.ret[i]), length=int(self.length[i]),
                                 success=float(self.success[i]), success_final=float(now)))
        return done


def run_episodes(pool, act: Callable[[list[dict]], np.ndarray], episodes: int, action_dim: int,
                 observe: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """Step `pool` from fresh resets with act(observations) -> actions (N, A) until `episodes`
    episodes have finished; returns the first `episodes` summaries (EpisodeStats.update's dicts).
    act also sees the reset observations (is_first), so stateful policies can start over; `observe`
    (e.g. core.video.EpisodeRecorder) sees every list of observations, the last one included."""
    n, finished = pool.num_envs, []
    stats = EpisodeStats(n)
    obs = pool.step(np.zeros((n, action_dim), np.float32))
    while True:
        if observe is not None:
            observe(obs)
        finished += stats.update(obs)
        if len(finished) >= episodes:
            return finished[:episodes]
        obs = pool.step(act(obs))


def summarize(finished: list[dict], prefix: str) -> dict:
    """Episode summaries -> {prefix}return / return_std / success (any step) / success_final / episodes."""
    return {f"{prefix}return": float(np.mean([e["ret"] for e in finished])),
            f"{prefix}return_std": float(np.std([e["ret"] for e in finished])),
            f"{prefix}success": float(np.mean([e["success"] for e in finished])),
            f"{prefix}success_final": float(np.mean([e["success_final"] for e in finished])),
            f"{prefix}episodes": len(finished)}
