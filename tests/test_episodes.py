"""The shared rollout loop (envs.episodes) on a real Meta-World env, through the random-policy benchmark."""
import numpy as np

from benchmarks.targets import random_success
from envs import env_fns
from envs.episodes import run_episodes, summarize
from envs.list import suite_config
from envs.workers import EnvPool


def test_run_episodes_counts_whole_episodes_and_passes_resets_to_the_policy():
    cfg = dict(suite_config("metaworld"), episode_frames=20)
    seen_first = []

    def act(obs):
        seen_first.append([bool(o["is_first"]) for o in obs])
        return np.zeros((len(obs), 12), np.float32)

    with EnvPool(env_fns(cfg, "drawer-open", 0, 12, 2), parallel=False) as pool:
        finished = run_episodes(pool, act, 3, 12)
    assert len(finished) == 3
    assert all(e["length"] == 10 for e in finished)          # 20 frames at action repeat 2
    assert seen_first[0] == [True, True]                       # the policy saw the resets
    out = summarize(finished, "eval/")
    assert out["eval/episodes"] == 3 and out["eval/success_final"] <= out["eval/success"] <= 1.0


def test_random_success_reports_its_episodes():
    out = random_success("metaworld", "drawer-open", 2)
    assert out["random_episodes"] == 2
    assert 0.0 <= out["random_success"] <= out["random_success_any"] <= 1.0
    assert np.isfinite(out["random_return"]) and out["random_return"] > 0   # shaped reward: positive
