"""Every task of the registry (python -m envs.list) constructs, resets, steps and renders, and its
registry row matches the built env. Real simulators; CARLA rows need a live server (see test_carla)."""
import numpy as np
import pytest

from envs import make_env
from envs.list import main as list_main, registry, suite_config

A = 12
ROWS = [r for r in registry() if r.suite != "carla"]


def test_registry_covers_the_benchmarks(capsys):
    tasks = {(r.suite, r.task) for r in registry()}
    assert sum(s == "metaworld" for s, _ in tasks) == 50
    assert sum(s == "dmc" for s, _ in tasks) >= 23
    assert {("dmc", "cheetah_run_hard"), ("metaworld", "drawer-open"), ("carla", "town04")} <= tasks
    notes = [r.note for r in registry() if r.suite == "driving"]
    assert notes.count("target") == 1 and notes.count("source") >= 2
    list_main([])
    out = capsys.readouterr().out
    assert "cheetah_run_hard" in out and "drawer-open" in out and f"{len(tasks)} tasks" in out


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.suite}-{r.task}" for r in ROWS])
def test_every_task_runs(row):
    cfg = suite_config(row.suite)
    env = make_env(cfg, row.task, 0, A)
    try:
        spec = env.spec
        assert (spec.suite, spec.task, spec.embodiment) == (row.suite, row.task, row.embodiment)
        assert (spec.native_action_dim, spec.max_action_dim) == (row.native_action_dim, A)
        assert (spec.episode_length, spec.action_repeat) == (row.episode_length, row.action_repeat)
        obs = env.reset()
        assert obs["is_first"] and obs["image"].shape == (spec.image_size, spec.image_size, 3)
        rng = np.random.default_rng(0)
        for _ in range(2):
            obs = env.step(rng.uniform(-1, 1, A).astype(np.float32) * spec.action_mask)
            assert not obs["is_first"] and np.isfinite(obs["reward"]) and obs["reward"].dtype == np.float32
            if obs["is_last"]:  # e.g. a random steer off the road: a terminal after one step
                break
        assert obs["image"].dtype == np.uint8 and obs["image"].std() > 5.0
    finally:
        env.close()
