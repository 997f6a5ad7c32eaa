"""Offline-data collection (teacher/data/collect.py, teacher/data/policies.py) on real envs with tiny episodes:
Meta-World expert quality by noise, stored = executed actions (replayed in a fresh env), DMC random
and resumable appends through the CLI (also after SIGKILL), the heuristic driver against random, a
trained agent's rollouts, and CARLA's clear error without a server."""
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from envs import make_env
from teacher.data.collect import job_seed, main, run_episode, suite_env_config
from teacher.data.dataset import OfflineDataset, read_manifest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def episode(suite, task, policy, noise=0.0, seed=0, options=None, max_action_dim=12, **env):
    common = dict(env_cfg={**suite_env_config(suite), **env}, policy=policy, options=options or {},
                  max_action_dim=max_action_dim)
    return run_episode(common, dict(job=f"test/{task}/{seed}", task=task, noise=noise, seed=seed))


def test_metaworld_expert_noise_and_executed_actions():
    clean = [episode("metaworld", "reach", "expert", 0.0, seed, episode_frames=80) for seed in (0,)]
    for traj, meta, stats in clean:
        assert stats["success"] == 1.0 and meta["success"] == 1.0 and meta["policy"] == "expert"
    traj, meta, stats = episode("metaworld", "reach", "expert", 2.0, 0, episode_frames=80)
    action = traj["action"]
    assert action.shape == (41, 4) and action.dtype == np.float32 and traj["image"].shape == (41, 64, 64, 3)
    assert (action[0] == 0).all() and np.abs(action).max() <= 1.0
    assert np.abs(action[1:]).max() == 1.0  # sigma 2 clips often
    assert action[1:].std(0).mean() > 3 * clean[0][0]["action"][1:].std(0).mean()
    assert meta["noise"] == 2.0 and meta["embodiment"] == "sawyer" and traj["reward"][0] == 0.0
    # the stored actions are the executed ones: replaying them in a fresh env reproduces every frame
    env = make_env({**suite_env_config("metaworld"), "episode_frames": 80}, "reach", 0, 12)
    try:
        frames = [env.reset()["image"]]
        for a in action[1:]:
            frames.append(env.step(np.pad(a, (0, 8)))["image"])
    finally:
        env.close()
    np.testing.assert_array_equal(np.stack(frames), traj["image"])


def test_driver_beats_random():
    results = {}
    for policy in ("driver", "random"):
        runs = [episode("driving", "racetrack", policy, 0.0, seed, episode_frames=80)[2] for seed in (0, 1)]
        results[policy] = (np.mean([r["distance"] for r in runs]), np.mean([r["steps"] for r in runs]))
    (driver_m, driver_steps), (random_m, random_steps) = results["driver"], results["random"]
    assert driver_steps == 40 and driver_steps > random_steps  # stays on the road the whole episode
    assert driver_m > 2 * random_m, results


def test_agent_rollouts(tmp_path):
    import torch
    from omegaconf import OmegaConf

    from core.agent import Agent
    from conftest import compose
    cfg = compose("model=tiny", "task=cartpole_balance", "env.episode_frames=16", "max_action_dim=6")
    run = tmp_path / "run"
    run.mkdir()
    agent = Agent({"image": (64, 64, 3)}, np.eye(6, dtype=np.float32)[0], cfg.model, torch.device("cpu"))
    torch.save(dict(agent=agent.full_state(), config=OmegaConf.to_container(cfg, resolve=True)), run / "checkpoint.pt")
    stats = main(["--dataset", str(tmp_path / "data"), "--policy", "agent", "--agent-run", str(run),
                  "--noise", "0", "0.5", "--episodes", "1", "--workers", "0"])
    assert len(stats) == 2 and all(s["steps"] == 8 for s in stats)
    data = OfflineDataset(tmp_path / "data")
    assert {(m["policy"], m["task"], m["noise"]) for m in data.meta} == {("agent", "cartpole_balance", 0.0),
                                                                        ("agent", "cartpole_balance", 0.5)}
    assert all(m["source"] == str(run.resolve()) and m["action_dim"] == 1 for m in data.meta)


def test_dmc_random_resume_appends_only_missing(tmp_path):
    root = str(tmp_path / "data")
    argv = ["--dataset", root, "--suite", "dmc", "--tasks", "cartpole_balance", "walker_walk", "--policy", "random",
            "--seed", "3", "--env-config", "episode_frames=20"]
    first = main(argv + ["--episodes", "2", "--workers", "2"])
    assert len(first) == 4
    rows = read_manifest(root)
    ids = {r["job"] for r in rows}
    assert len(ids) == 4 and {r["length"] for r in rows} == {11}
    walker = OfflineDataset(root, where={"task": "walker_walk"})
    traj = walker.read(0)
    assert traj["action"].shape == (11, 6) and (traj["action"][0] == 0).all()
    assert np.abs(traj["action"][1:]).max() <= 1 and traj["action"][1:].std() > 0.4  # uniform in [-1, 1]
    assert len({r["seed"] for r in rows}) == 4  # every episode has its own env seed
    assert main(argv + ["--episodes", "2", "--workers", "1"]) == []  # nothing left to do
    more = main(argv + ["--episodes", "3", "--workers", "1"])
    assert len(more) == 2  # only episode index 2 of each task
    rows = read_manifest(root)
    assert len(rows) == 6 and len({r["job"] for r in rows}) == 6 and ids < {r["job"] for r in rows}
    expected = {f"dmc/{t}/random/0/{job_seed(3, t, 0.0, i)}" for t in ("cartpole_balance", "walker_walk")
                for i in range(3)}
    assert {r["job"] for r in rows} == expected


def test_resume_after_sigkill(tmp_path):
    root = tmp_path / "data"
    cmd = [sys.executable, "-m", "teacher.data.collect", "--dataset", str(root), "--suite", "dmc", "--tasks",
           "cartpole_balance", "--policy", "random", "--episodes", "12", "--workers", "1", "--flush-seconds", "0",
           "--env-config", "episode_frames=40"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 40
        while len(read_manifest(root)) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)  # the collector and its worker, mid-collection
    finally:
        proc.wait()
    killed = len(read_manifest(root))
    assert 2 <= killed < 12
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"{killed} already in" in out.stderr
    rows = read_manifest(root)
    assert len(rows) == 12 and len({r["job"] for r in rows}) == 12
    assert len(OfflineDataset(root)) == 12


def test_carla_without_server_is_a_clear_error(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "teacher.data.collect", "--dataset", str(tmp_path / "data"), "--suite", "carla",
           "--tasks", "town01", "--policy", "autopilot", "--episodes", "1", "--env-config", f"port={port}"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert f"no simulator server answers at localhost:{port}" in out.stderr and "CarlaUE4.sh" in out.stderr
    assert "Traceback" not in out.stderr
    assert suite_env_config("carla")["autopilot"] is True  # collection uses configs/env/carla_source.yaml


def test_bad_arguments_say_what_to_do(tmp_path):
    with pytest.raises(SystemExit, match="runs on suite"):
        main(["--dataset", str(tmp_path), "--suite", "dmc", "--tasks", "cartpole_balance", "--policy", "expert"])
    with pytest.raises(SystemExit, match="episode_frames"):
        main(["--dataset", str(tmp_path), "--suite", "dmc", "--tasks", "all", "--policy", "random",
              "--env-config", "episode_frame=3"])
    with pytest.raises(SystemExit, match="--agent-run"):
        main(["--dataset", str(tmp_path), "--suite", "dmc", "--tasks", "cartpole_balance", "--policy", "agent"])
    assert read_manifest(tmp_path) == []
