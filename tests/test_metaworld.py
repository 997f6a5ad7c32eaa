"""Meta-World suite (envs/metaworld.py): env contract, padding, upright images, goals, success,
static task list, configs and errors.

Real metaworld + MuJoCo rendering, no mocks; the whole file runs in well under a minute on 2 cores.
"""
import numpy as np
import pytest

from conftest import check_padding_ignored, compose
from envs import make_env
from envs.metaworld import TASKS, MetaWorldEnv, parse_task, tasks
from envs.metaworld_goals import cache_dir

A = 12  # padded action size shared by the tests


def check_obs(obs, first):
    assert {"image", "reward", "is_first", "is_last", "is_terminal", "log_success"} <= set(obs)
    assert obs["image"].dtype == np.uint8 and obs["image"].shape == (64, 64, 3)
    assert obs["image"].flags["C_CONTIGUOUS"]
    assert obs["reward"].dtype == np.float32 and obs["reward"].shape == ()
    for key in ("is_first", "is_last", "is_terminal"):
        assert isinstance(obs[key], bool)
    assert obs["is_first"] is first and obs["is_terminal"] is False
    assert obs["log_success"] in (0.0, 1.0)
    assert obs["image"].std() > 5.0  # a real render, not a black or constant frame


def test_contract_and_time_limit():
    cfg = dict(compose("env=metaworld", "task=drawer-open").env, episode_frames=10)
    env = make_env(cfg, "drawer-open-v3", seed=0, max_action_dim=A)
    try:
        spec = env.spec
        assert (spec.suite, spec.task, spec.embodiment) == ("metaworld", "drawer-open", "sawyer")
        assert (spec.native_action_dim, spec.max_action_dim, spec.action_repeat) == (4, A, 2)
        assert spec.episode_length == 5 and spec.image_size == 64
        for episode in range(2):
            first = env.reset()
            check_obs(first, first=True)
            assert first["reward"] == 0.0 and not first["is_last"]
            rng = np.random.default_rng(episode)
            for step in range(1, 6):
                obs = env.step(rng.uniform(-1, 1, A).astype(np.float32) * spec.action_mask)
                check_obs(obs, first=False)
                assert obs["is_last"] == (step == 5) and np.isfinite(obs["reward"])
                assert obs["reward"] > 0.0  # Meta-World's dense shaped reward, summed over 2 frames
        with pytest.raises(RuntimeError, match="call reset"):
            env.step(np.zeros(A, np.float32))
        env.reset()
        with pytest.raises(ValueError, match="padded action"):
            env.step(np.zeros(A + 1, np.float32))
    finally:
        env.close()


def test_our_episode_length_beats_metaworld_500_step_limit():
    env = MetaWorldEnv("reach", seed=0, max_action_dim=A, action_repeat=100, episode_frames=600)
    try:
        env.reset()
        lasts = [env.step(np.zeros(A, np.float32))["is_last"] for _ in range(6)]
        assert lasts == [False] * 5 + [True]
    finally:
        env.close()


def test_padding_ignored_and_goals_seeded():
    envs = [MetaWorldEnv("push", seed=5, max_action_dim=A) for _ in range(2)]
    other = MetaWorldEnv("push", seed=6, max_action_dim=A)
    try:
        check_padding_ignored(envs, 5, np.random.default_rng(1))
        goals = [[env.goal] for env in envs]
        for _ in range(3):
            for env, env_goals in zip(envs, goals):
                env.reset()
                env_goals.append(env.goal)
        for a, b in zip(goals[0], goals[0][1:]):
            assert not np.allclose(a, b), "consecutive episodes must get different goals"
        np.testing.assert_array_equal(goals[0], goals[1])  # same seed, same goal sequence
        other.reset()
        assert not np.allclose(other.goal, goals[0])  # another seed, other goals
    finally:
        for env in envs + [other]:
            env.close()


def test_image_upright():
    """Paints high geoms (z > 0.3 m: the arm) white and low ones (z < 0.05 m: table, pedestal)
    white in turn, all else black: the high ones must appear ABOVE the low ones in the image."""
    env = MetaWorldEnv("reach", seed=0, max_action_dim=A)
    try:
        env.reset()
        model, data = env._env.unwrapped.model, env._env.unwrapped.data
        z = data.geom_xpos[:, 2].copy()
        model.geom_matid[:] = -1  # no textures

        def paint(mask):
            model.geom_rgba[:] = (0, 0, 0, 1)
            model.geom_rgba[mask] = (1, 1, 1, 1)
            return env.render().astype(np.float32).mean(-1)

        high, low = paint(z > 0.3), paint(z < 0.05)
        rows = np.broadcast_to(np.arange(64)[:, None], (64, 64))
        high_rows, low_rows = rows[high - low > 60], rows[low - high > 60]
        assert high_rows.size > 100 and low_rows.size > 100
        assert high_rows.mean() + 10 < low_rows.mean(), (high_rows.mean(), low_rows.mean())
    finally:
        env.close()


@pytest.mark.filterwarnings("ignore:Constant.*too high")  # metaworld.policies' own warning
def test_scripted_expert_succeeds_on_reach():
    from metaworld.policies import ENV_POLICY_MAP
    policy = ENV_POLICY_MAP["reach-v3"]()
    env = MetaWorldEnv("reach", seed=0, max_action_dim=A)  # GSA defaults: 100 steps x repeat 2
    try:
        obs, successes = env.reset(), []
        while not obs["is_last"]:
            action = np.zeros(A, np.float32)
            action[:4] = policy.get_action(env.state)
            obs = env.step(action)
            successes.append(obs["log_success"])
        assert len(successes) == 100 and max(successes) == 1.0 and successes[-1] == 1.0
    finally:
        env.close()


def test_static_task_list_matches_metaworld():
    import metaworld
    rows = tasks(dict(compose("env=metaworld").env))
    assert [r.task for r in rows] == [name.removesuffix("-v3") for name in metaworld.MT1.ENV_NAMES]
    assert len(rows) == 50 and len(set(TASKS)) == 50
    assert {(r.suite, r.embodiment, r.native_action_dim, r.episode_length, r.action_repeat)
            for r in rows} == {("metaworld", "sawyer", 4, 100, 2)}
    vid2act = compose("env=metaworld_vid2act").env
    assert (vid2act.suite, vid2act.action_repeat, vid2act.episode_frames) == ("metaworld", 1, 500)
    assert {(r.episode_length, r.action_repeat) for r in tasks(dict(vid2act))} == {(500, 1)}


def test_task_names_and_errors():
    assert parse_task("drawer-open") == parse_task("drawer-open-v3") == "drawer-open"
    with pytest.raises(ValueError, match="unknown Meta-World task 'drawer-fly'.*assembly.*window"):
        parse_task("drawer-fly")
    with pytest.raises(ValueError, match="unknown Meta-World task"):
        make_env(dict(suite="metaworld"), "drawer_open", 0, A)
    with pytest.raises(ValueError, match="max_action_dim"):
        MetaWorldEnv("reach", seed=0, max_action_dim=3)


def test_goals_are_drawn_once_per_task_and_seed_then_read_back(tmp_path, monkeypatch):
    """The second build of a (task, seed) reads Meta-World's 50 drawn goals from the cache: the same goals in
    the same order, numpy's global generator untouched; a corrupt file is drawn again and rewritten."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    def goals(seed):
        env = MetaWorldEnv("reach", seed, 4, episode_frames=4)
        try:
            return [(env.reset(), env.goal)[1] for _ in range(3)]
        finally:
            env.close()

    drawn = goals(3)
    files = list(cache_dir().glob("*.pkl"))
    assert [f.name.split("-seed")[0] for f in files] == ["reach-v3"] and str(tmp_path) in str(files[0])
    import metaworld
    real = metaworld._make_tasks
    monkeypatch.setattr(metaworld, "_make_tasks", lambda *args, **kwargs: pytest.fail("drawn again"))
    np.random.seed(11)
    state = np.random.get_state()[1].copy()
    assert np.array_equal(goals(3), drawn)                     # read back, not drawn
    assert np.array_equal(np.random.get_state()[1], state)
    monkeypatch.setattr(metaworld, "_make_tasks", real)
    assert not np.array_equal(goals(4), drawn) and len(list(cache_dir().glob("*.pkl"))) == 2
    files[0].write_bytes(b"not a pickle")
    assert np.array_equal(goals(3), drawn) and files[0].stat().st_size > 100
