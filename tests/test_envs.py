"""Env contract (envs/base.py) for DMC pixel tasks, and EnvPool auto-reset / crash recovery.

Real dm_control and real worker processes, no mocks; the whole file runs in well under a minute.
"""
import functools
import os
import pickle
import signal
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, check_padding_ignored

from envs import check_options, env_fns, make_env
from envs.dmc import DMCEnv, parse_task
from envs.workers import EnvPool

A = 12  # padded action size shared by the tests
CARTPOLE = dict(suite="dmc", action_repeat=2, image_size=64, episode_frames=6)


def check_obs(obs, spec, first):
    assert {"image", "reward", "is_first", "is_last", "is_terminal"} <= set(obs)
    assert obs["image"].dtype == np.uint8
    assert obs["image"].shape == (spec.image_size, spec.image_size, 3)
    assert obs["reward"].dtype == np.float32 and obs["reward"].shape == ()
    for key in ("is_first", "is_last", "is_terminal"):
        assert isinstance(obs[key], bool)
    assert obs["is_first"] is first
    assert obs["image"].std() > 5.0  # a real render, not a black or constant frame


@pytest.mark.parametrize("task, embodiment, native, camera", [
    ("cartpole_balance", "cartpole", 1, 0), ("quadruped_walk", "quadruped", 12, 2)])
def test_dmc_contract(task, embodiment, native, camera):
    env = DMCEnv(task, seed=0, max_action_dim=A)
    try:
        spec = env.spec
        assert (spec.suite, spec.task, spec.embodiment) == ("dmc", task, embodiment)
        assert (spec.native_action_dim, spec.max_action_dim) == (native, A)
        assert spec.episode_length == 500 and spec.action_repeat == 2 and env.camera == camera
        first = env.reset()
        check_obs(first, spec, first=True)
        assert first["reward"] == 0.0 and not first["is_last"] and not first["is_terminal"]
        rng = np.random.default_rng(0)
        for _ in range(3):
            obs = env.step(rng.uniform(-1, 1, A).astype(np.float32) * spec.action_mask)
            check_obs(obs, spec, first=False)
            assert not obs["is_last"] and np.isfinite(obs["reward"])
        with pytest.raises(ValueError, match="padded action"):
            env.step(np.zeros(A + 1, np.float32))
    finally:
        env.close()


def test_padding_dims_ignored():
    envs = [DMCEnv("cartpole_balance", seed=3, max_action_dim=A) for _ in range(2)]
    try:
        check_padding_ignored(envs, 5, np.random.default_rng(1))
    finally:
        for env in envs:
            env.close()


def test_episode_ends_at_time_limit():
    env = DMCEnv("cartpole_balance", seed=0, max_action_dim=A, action_repeat=2, episode_frames=20)
    try:
        assert env.spec.episode_length == 10
        env.reset()
        for step in range(1, 11):
            obs = env.step(np.zeros(A, np.float32))
            assert obs["is_last"] == (step == 10)
            assert not obs["is_terminal"]
        obs = env.reset()
        assert obs["is_first"] and not obs["is_last"]
    finally:
        env.close()


def test_task_names():
    assert parse_task("ball_in_cup_catch") == ("ball_in_cup", "catch")
    assert parse_task("point_mass_easy") == ("point_mass", "easy")
    assert parse_task("walker_walk") == ("walker", "walk")
    with pytest.raises(ValueError, match="unknown DMC task 'walker_fly'.*cartpole_balance"):
        DMCEnv("walker_fly", seed=0, max_action_dim=A)
    with pytest.raises(ValueError, match="unknown env suite"):
        make_env(dict(suite="nope"), "walker_walk", 0, A)


def test_make_env_and_env_fns():
    fns = env_fns(dict(suite="dmc", image_size=32), "cartpole_balance", 7, A, count=2)
    assert [fn.args[2] for fn in pickle.loads(pickle.dumps(fns))] == [7, 8]
    env = fns[0]()
    try:
        assert env.spec.image_size == 32 and env.spec.action_repeat == 2
        assert env.reset()["image"].shape == (32, 32, 3)
    finally:
        env.close()


def run_pool(pool, steps):
    zeros = np.zeros((pool.num_envs, A), np.float32)
    return [pool.step(zeros) for _ in range(steps)]


def test_pool_in_process_auto_reset():
    with EnvPool(env_fns(CARTPOLE, "cartpole_balance", 0, A, count=2), parallel=False) as pool:
        assert pool.num_envs == 2 and pool.specs[0].episode_length == 3
        flags = [[(o["is_first"], o["is_last"]) for o in obs] for obs in run_pool(pool, 5)]
        expected = [(True, False), (False, False), (False, False), (False, True), (True, False)]
        assert flags == [[e, e] for e in expected]


class EnvironProbe:
    """A stand-in env for the worker tests below: its spec is what the worker's environment holds."""

    def __init__(self, *keys):
        self.spec = {key: os.environ.get(key) for key in keys}

    def close(self):
        pass


def test_workers_run_with_the_parent_environment_of_their_start(monkeypatch):
    """Workers fork from a server started with the first of them (envs/workers.py); each one must still see
    the environment of the parent at its own start, with one thread per numeric library."""
    probe = functools.partial(EnvironProbe, "TRL_PROBE", "OMP_NUM_THREADS")
    before = os.environ.get("OMP_NUM_THREADS")
    monkeypatch.setenv("TRL_PROBE", "first")
    with EnvPool([probe]) as pool:
        assert pool.specs == [{"TRL_PROBE": "first", "OMP_NUM_THREADS": "1"}] and pool.pids != [os.getpid()]
    monkeypatch.setenv("TRL_PROBE", "second")
    with EnvPool([probe, probe]) as pool:
        assert pool.specs == [{"TRL_PROBE": "second", "OMP_NUM_THREADS": "1"}] * 2
    assert os.environ.get("OMP_NUM_THREADS") == before  # the parent's own setting is left as it was


def test_pool_parallel_auto_reset_and_crash_restart():
    pool = EnvPool(env_fns(CARTPOLE, "cartpole_balance", 0, A, count=2))
    processes = [w.process for w in pool._workers]
    try:
        assert [s.task for s in pool.specs] == ["cartpole_balance"] * 2
        assert len(set(pool.pids)) == 2 and os.getpid() not in pool.pids
        history = run_pool(pool, 5)  # reset, 3 steps (last), auto-reset
        assert [obs[0]["is_first"] for obs in history] == [True, False, False, False, True]
        assert [obs[1]["is_last"] for obs in history] == [False, False, False, True, False]
        assert all(obs["image"].std() > 5.0 for obs in history[2])

        dead = pool.pids[0]
        pool.step_async(np.zeros((2, A), np.float32))  # the worker dies while its step is under way
        with pytest.raises(RuntimeError, match="twice"):
            pool.step_async(np.zeros((2, A), np.float32))
        os.kill(dead, signal.SIGKILL)
        obs = pool.step_wait()
        with pytest.raises(RuntimeError, match="without step_async"):
            pool.step_wait()
        if not obs[0]["is_first"]:  # it answered before it died: the next step finds it dead
            obs = pool.step(np.zeros((2, A), np.float32))
        assert obs[0]["is_first"] and not obs[1]["is_first"]
        assert pool.restarts == 1 and pool.pids[0] != dead
        processes.append(pool._workers[0].process)
        later = run_pool(pool, 2)
        assert not later[0][0]["is_first"] and pool.restarts == 1
    finally:
        pool.close()
    assert not any(p.is_alive() for p in processes)


def test_pool_bad_config_raises():
    """A builder that fails inside its worker: one RuntimeError with the worker's error."""
    with pytest.raises(RuntimeError, match="(?s)failed to build.*unknown DMC task"):
        EnvPool([functools.partial(make_env, CARTPOLE, "cartpole_fly", 0, A)])


@pytest.mark.parametrize("suite, task, message", [
    ("metaworld", "drawer-opne", "unknown Meta-World task 'drawer-opne'. Did you mean 'drawer-open'"),
    ("dmc", "cheetah_rn", "unknown DMC task 'cheetah_rn'. Did you mean 'cheetah_run'"),
    ("dmc", "drawer-open", "'drawer-open' is a metaworld task, not a dmc one: add env=metaworld"),
    ("metaworld", "walker_walk", "'walker_walk' is a dmc task, not a metaworld one: add env=dmc"),
    ("driving", "highwy", "unknown driving task 'highwy'. Did you mean 'highway'"),
    ("carla", "town1", "unknown carla task 'town1'. Did you mean 'town01'"),
])
def test_a_typod_task_fails_in_the_parent_with_a_suggestion(suite, task, message):
    """env_fns checks the task before any worker starts (no simulator, no CARLA server), in one line."""
    with pytest.raises(ValueError, match=message) as err:
        env_fns(dict(suite=suite), task, 0, A, count=1)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("cfg, task, message", [
    (dict(suite="metaworld", camra="corner2"), "reach", "unknown env option 'camra' for the metaworld suite. Did you mean 'camera'"),
    (dict(suite="metaworld", camera="cornr2"), "reach", "unknown Meta-World camera 'cornr2'. Did you mean 'corner2'"),
    (dict(suite="dmc", convention="gs"), "walker_walk", "unknown DMC convention 'gs'. Did you mean 'gsa'"),
    (dict(suite="dmc", camera="top"), "walker_walk", "env.camera must be a camera index"),
    (dict(suite="driving", image_size=0), "highway", "env.image_size must be an integer >= 1; got 0"),
    (dict(suite="carla", prot=2000), "town04", "unknown env option 'prot' for the carla suite. Did you mean 'port'"),
    (dict(suite="metaworld"), "walker_wlk", "unknown metaworld task 'walker_wlk'. Did you mean 'walker_walk'.* with env=dmc"),
])
def test_a_bad_env_option_fails_in_the_parent_with_a_suggestion(cfg, task, message):
    """Unknown option keys, bad values and a close task name of another suite: one line, before any worker."""
    with pytest.raises(ValueError, match=message) as err:
        env_fns(cfg, task, 0, A, count=1)
    assert "\n" not in str(err.value)


def test_every_shipped_env_config_passes_the_option_check():
    from teacher.data.collect import load_env_config
    for path in sorted((ROOT / "configs" / "env").glob("*.yaml")):
        check_options(load_env_config(path.stem))


def test_cli_typo_gives_one_line_and_no_traceback(tmp_path):
    """`python -m transfer.run` with a typo'd task: exit code 1 and one line that says what to do."""
    out = subprocess.run([sys.executable, "-m", "transfer.run", "env=metaworld", "task=drawer-opne",
                          f"run_dir={tmp_path}", "logger.wandb=disabled"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: unknown Meta-World task 'drawer-opne'. Did you mean")
