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


def test_a_bc_policy_acts_alone_on_stacked_frames_for_whole_episodes():
    """benchmarks.targets' "BC alone" column: the policy, not the zero action, drives every step."""
    import torch
    from benchmarks.targets import policy_alone
    from student.bc import BCPolicy

    mask = np.zeros(12, np.float32)
    mask[:4] = 1
    torch.manual_seed(0)
    policy = BCPolicy(mask)
    seen = []
    act = policy.act
    policy.act = lambda stacks: (seen.append(stacks.shape), act(stacks))[1]
    out = policy_alone(policy, "metaworld", "drawer-open", 3, episode_frames=20)
    assert out["bc_alone_episodes"] == 3 and out["bc_alone_guided"] == 1.0
    assert 0.0 <= out["bc_alone_success"] <= out["bc_alone_success_any"] <= 1.0
    assert seen and all(s[1:] == (9, 64, 64) for s in seen)   # 3 stacked RGB frames per env
    assert sum(s[0] for s in seen) >= 3 * 10                  # every agent step of the 3 episodes
