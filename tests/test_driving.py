"""Local pixel driving suite (envs/driving.py) with the real highway-env and gymnasium CarRacing-v3.

Contract (keys, dtypes, 64x64 non-constant upright pixels), padding, time limit vs terminal,
reward direction (driving on beats braking, steering costs), termination (off-road, stuck),
determinism per seed, the suite interface and a worker process. No mocks; well under a minute.
"""
import os

import numpy as np
import pytest
from conftest import check_padding_ignored

from envs import driving, env_fns, make_env
from envs.driving import DrivingEnv
from envs.list import suite_config
from envs.workers import EnvPool

A = 6  # padded action size
SCENARIOS = ["highway", "racetrack", "roundabout", "merge", "carracing"]


def act(steer=0.0, throttle_brake=0.0, junk=0.0):
    action = np.full(A, junk, np.float32)
    action[:2] = steer, throttle_brake
    return action


def check_obs(obs, first):
    assert {"image", "reward", "is_first", "is_last", "is_terminal"} <= set(obs)
    assert obs["image"].dtype == np.uint8 and obs["image"].shape == (64, 64, 3)
    assert obs["reward"].dtype == np.float32 and obs["reward"].shape == ()
    for key in ("is_first", "is_last", "is_terminal"):
        assert isinstance(obs[key], bool)
    assert obs["is_first"] is first
    assert obs["image"].std() > 5.0  # a real render, not a black ("dummy" SDL) or constant frame


def rollout(env, actions):
    obs = [env.reset()]
    for action in actions:
        obs.append(env.step(action))
        if obs[-1]["is_last"]:
            break
    return obs


@pytest.mark.parametrize("task", SCENARIOS)
def test_scenario_contract(task):
    env = DrivingEnv(task, seed=0, max_action_dim=A)
    try:
        spec = env.spec
        assert (spec.suite, spec.task, spec.embodiment, spec.native_action_dim) == ("driving", task, "car", 2)
        assert spec.episode_length == 500 and spec.action_repeat == 2 and spec.image_size == 64
        obs = rollout(env, [act(0.0, 0.3)] * 3)
        check_obs(obs[0], first=True)
        assert obs[0]["reward"] == 0.0 and not obs[0]["is_last"] and not obs[0]["is_terminal"]
        for o in obs[1:]:
            check_obs(o, first=False)
            assert np.isfinite(o["reward"]) and not o["is_last"]
            assert o["log_speed"] >= 0.0 and np.isfinite(o["log_distance"])
        assert not np.array_equal(obs[0]["image"], obs[-1]["image"])  # the view follows the moving car
        with pytest.raises(ValueError, match="padded action"):
            env.step(np.zeros(A + 1, np.float32))
    finally:
        env.close()


@pytest.mark.parametrize("task", SCENARIOS)
def test_driving_on_beats_braking(task):
    """Progress along the lane is the reward: throttle scores more than braking from the same start."""
    returns = {}
    for name, throttle in (("drive", 1.0), ("brake", -1.0)):
        env = DrivingEnv(task, seed=3, max_action_dim=A)
        try:
            obs = rollout(env, [act(0.0, throttle)] * 4)
            assert not any(o["is_terminal"] for o in obs)
            returns[name] = sum(float(o["reward"]) for o in obs)
        finally:
            env.close()
    assert returns["drive"] > returns["brake"] + 0.5, returns
    assert returns["drive"] > 0.0


def test_steering_costs_and_off_road_is_terminal():
    env = DrivingEnv("highway", seed=1, max_action_dim=A)
    try:
        env.reset()
        straight = env.step(act(0.0, 0.0))["reward"]
        env.reset()
        steered = env.step(act(1.0, 0.0))["reward"]
        assert steered < straight - 2.0  # |steer| = 1 costs 1 per 0.05 s: 4 per 0.2 s agent step
        obs = rollout(env, [act(1.0, 0.0)] * 30)  # full lock to the right: leaves the highway
        assert obs[-1]["is_last"] and obs[-1]["is_terminal"] and obs[-1]["log_off_road"]
        with pytest.raises(RuntimeError, match="call reset"):
            env.step(act())
    finally:
        env.close()


def test_stuck_is_terminal():
    env = DrivingEnv("carracing", seed=0, max_action_dim=A, stuck_seconds=1.0)  # starts at rest
    try:
        obs = rollout(env, [act(0.0, -1.0)] * 10)
        assert len(obs) == 6  # 1 s at 10 frames/s = 5 agent steps of 2 frames
        assert obs[-1]["is_terminal"] and obs[-1]["log_stuck"] and not obs[-1]["log_off_road"]
    finally:
        env.close()


def test_time_limit_is_last_not_terminal():
    env = DrivingEnv("racetrack", seed=0, max_action_dim=A, action_repeat=2, episode_frames=6)
    try:
        assert env.spec.episode_length == 3
        for _ in range(2):  # two episodes: the limit holds after a reset too
            obs = rollout(env, [act(0.0, 0.2)] * 5)
            assert [o["is_last"] for o in obs] == [False, False, False, True]
            assert not any(o["is_terminal"] for o in obs)
    finally:
        env.close()


def test_padding_dims_ignored():
    envs = [DrivingEnv("racetrack", seed=5, max_action_dim=A) for _ in range(2)]
    try:
        check_padding_ignored(envs, 4, np.random.default_rng(0), scale=np.array([0.2, 1, 1, 1, 1, 1]))
    finally:
        for env in envs:
            env.close()


@pytest.mark.parametrize("task", ["highway", "carracing"])
def test_deterministic_per_seed(task):
    def run(seed):
        env = DrivingEnv(task, seed=seed, max_action_dim=A)
        try:
            rng = np.random.default_rng(0)
            actions = [act(rng.uniform(-0.1, 0.1), rng.uniform(0, 1)) for _ in range(3)]
            episodes = [rollout(env, actions) for _ in range(2)]  # the 2nd reset continues the RNG
            return [(o["image"], float(o["reward"])) for ep in episodes for o in ep]
        finally:
            env.close()

    a, b, other = run(11), run(11), run(12)
    assert len(a) == len(b)
    for (img_a, r_a), (img_b, r_b) in zip(a, b):
        np.testing.assert_array_equal(img_a, img_b)
        assert r_a == r_b
    assert not np.array_equal(a[0][0], a[4][0])  # a new episode is a new scene
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(a, other))


def test_suite_interface(monkeypatch):
    cfg = suite_config("driving")
    rows = driving.tasks(cfg)
    assert {r.task: r.note for r in rows} == {"racetrack": "source", "roundabout": "source", "merge": "source",
                                               "carracing": "source", "highway": "target"}
    assert all((r.suite, r.embodiment, r.native_action_dim, r.episode_length, r.action_repeat)
               == ("driving", "car", 2, 500, 2) for r in rows)
    monkeypatch.delenv("SDL_VIDEODRIVER", raising=False)
    driving.prepare(cfg)
    assert os.environ["SDL_VIDEODRIVER"] == "offscreen"
    monkeypatch.setenv("SDL_VIDEODRIVER", "x11")
    driving.prepare(cfg)
    assert os.environ["SDL_VIDEODRIVER"] == "x11"  # a user's choice is kept
    monkeypatch.setenv("SDL_VIDEODRIVER", "offscreen")
    env = make_env(dict(cfg, episode_frames=40, image_size=32), "merge", 0, A)
    try:
        assert env.spec.episode_length == 20 and env.reset()["image"].shape == (32, 32, 3)
    finally:
        env.close()
    with pytest.raises(ValueError, match="unknown driving task 'mars'.*highway"):
        DrivingEnv("mars", seed=0, max_action_dim=A)


def test_worker_process_renders():
    """A spawned worker (which inherits SDL_VIDEODRIVER from prepare) renders real frames."""
    cfg = dict(suite_config("driving"), episode_frames=4)
    with EnvPool(env_fns(cfg, "racetrack", 0, A, count=1)) as pool:
        history = [pool.step(np.zeros((1, A), np.float32)) for _ in range(4)]
    assert [h[0]["is_first"] for h in history] == [True, False, False, True]
    assert all(h[0]["image"].std() > 5.0 for h in history)
