"""Custom DMC tasks (envs/dmc_tasks.py) and GSA's "_hard" variants (envs/dmc.py).

Real dm_control, no mocks. Reward checks set the physics state directly (positions and velocities
of the root joints, then a forward pass) and read the task's reward, so that a wrong sign, foot,
speed or margin fails; the hard rule is checked on synthetic numbers and on real envs.
"""
import numpy as np
import pytest

from envs.dmc import (BENCHMARK, CUSTOM_TASKS, HARD_ACTION_PENALTY, DMCEnv, hard_reward, is_custom,
                      parse_task, resolve_task, tasks, valid_tasks)

A = 12
HARD = ["acrobot_swingup_hard", "walker_walk_hard", "cheetah_run_hard"]


def raw_env(name):
    """The underlying dm_control control.Environment of a task (custom or suite)."""
    env = DMCEnv(name, seed=0, max_action_dim=A, fast_render=False)
    return env._env


def set_state(env, qpos=None, qvel=None, free_root=None):
    """Zero pose and velocity, then the given named joint values; returns the task's reward."""
    physics = env.physics
    with physics.reset_context():
        physics.data.qpos[:] = 0.0
        physics.data.qvel[:] = 0.0
        if free_root is not None:  # quadruped: (height, quaternion, linear velocity)
            z, quat, vel = free_root
            physics.named.data.qpos["root"][:3] = (0.0, 0.0, z)
            physics.named.data.qpos["root"][3:] = quat
            physics.named.data.qvel["root"][:3] = vel
        for joint, value in (qpos or {}).items():
            physics.named.data.qpos[joint] = value
        for joint, value in (qvel or {}).items():
            physics.named.data.qvel[joint] = value
    return float(env.task.get_reward(physics))


def test_registry_and_names():
    from envs import dmc_tasks
    assert set(dmc_tasks.TASKS) == set(CUSTOM_TASKS)
    assert set(CUSTOM_TASKS) <= set(valid_tasks())
    for name in BENCHMARK:
        parse_task(name)  # every benchmark name resolves
    assert all(is_custom(name) for name in CUSTOM_TASKS) and is_custom("cheetah_jump_hard")
    assert not is_custom("walker_walk") and not is_custom("cheetah_run_hard")
    assert parse_task("walker_backflip") == ("walker", "backflip")
    assert parse_task("cheetah_run_hard") == ("cheetah", "run_hard")
    assert resolve_task("cheetah_run_hard") == ("cheetah", "run", 0.2)
    assert resolve_task("walker_walk_hard") == ("walker", "walk", 0.6)
    assert resolve_task("acrobot_swingup_hard") == ("acrobot", "swingup", 0.6)
    assert resolve_task("quadruped_roll_fast") == ("quadruped", "roll_fast", None)
    # dm_control's own "*_hard" tasks stay dm_control tasks, not hard variants
    assert resolve_task("reacher_hard") == ("reacher", "hard", None)
    assert resolve_task("finger_turn_hard") == ("finger", "turn_hard", None)
    notes = {row.task: row.note for row in tasks({})}
    assert notes["cheetah_run_hard"] == "hard" and notes["walker_backflip"] == "custom"
    assert notes["walker_walk"] == ""


@pytest.mark.parametrize("name", ["walker_fly", "walker_fly_hard", "walker_walk_backwards", "cheetah_hard"])
def test_unknown_names_raise(name):
    with pytest.raises(ValueError, match=f"unknown DMC task '{name}'.*cartpole_balance"):
        DMCEnv(name, seed=0, max_action_dim=A)


@pytest.mark.parametrize("name", list(CUSTOM_TASKS) + HARD)
def test_task_runs(name):
    env = DMCEnv(name, seed=0, max_action_dim=A)  # picks the GL backend before dm_control is imported
    from dm_control.rl import control
    from dm_control.suite import base
    try:
        domain = name.split("_")[0]
        assert env.spec.embodiment == domain and env.camera == (2 if domain == "quadruped" else 0)
        assert isinstance(env._env, control.Environment) and isinstance(env._env.task, base.Task)
        assert env._env._step_limit == float("inf")  # episode length counted by DMCEnv
        assert (env.hard_threshold is not None) == name.endswith("_hard")
        obs = env.reset()
        assert obs["is_first"] and obs["image"].shape == (64, 64, 3) and obs["image"].std() > 5.0
        rng = np.random.default_rng(0)
        for _ in range(3):
            obs = env.step(rng.uniform(-1, 1, A).astype(np.float32) * env.spec.action_mask)
            assert obs["image"].shape == (64, 64, 3) and obs["image"].std() > 5.0
            assert not obs["is_last"] and np.isfinite(obs["reward"])
            if env.hard_threshold is None:  # rewards in [0, 1] per frame
                assert 0.0 <= obs["reward"] <= env.spec.action_repeat + 1e-6
    finally:
        env.close()


def test_cheetah_rewards():
    backwards, front, back, jump = (raw_env(f"cheetah_{t}") for t in ("run_backwards", "run_front", "run_back", "jump"))
    run = raw_env("cheetah_run")
    # run backwards: -speed / 8, capped at 1; the suite's run task gives 0 for moving backwards
    assert set_state(backwards, qvel={"rootx": -9.0}) == pytest.approx(1.0)
    assert set_state(run, qvel={"rootx": -9.0}) == pytest.approx(0.0)
    assert set_state(backwards, qvel={"rootx": -4.0}) == pytest.approx(0.5, abs=0.02)
    assert set_state(backwards, qvel={"rootx": 9.0}) == pytest.approx(0.0)
    assert set_state(run, qvel={"rootx": 9.0}) == pytest.approx(0.9, abs=0.02)
    # run front: nose down / back foot up (positive pitch), running forward at >= 6 m/s
    nose_down = {"rootz": 0.55, "rooty": 1.4}
    nose_up = {"rootz": 0.55, "rooty": -1.4}
    assert set_state(front, nose_down, {"rootx": 7.0}) == pytest.approx(1.0, abs=1e-3)
    assert set_state(back, nose_down, {"rootx": 7.0}) < 0.7
    assert set_state(back, nose_up, {"rootx": 7.0}) == pytest.approx(1.0, abs=1e-3)
    assert set_state(front, nose_up, {"rootx": 7.0}) < 0.7
    assert set_state(front, nose_down) == pytest.approx(1 / 6, abs=1e-3)  # posture only, no speed
    # the weights: up = (3 * raised foot term + 2 * torso term) / 5 (front foot 0.7 m, torso 1.25 m)
    from dm_control.utils.rewards import tolerance
    got, xpos = set_state(back, nose_down, {"rootx": 7.0}), back.physics.named.data.xpos
    terms = [tolerance(xpos[body, "z"], bounds=(1.2, np.inf), margin=0.6) for body in ("ffoot", "torso")]
    assert terms[0] < 0.5 < terms[1] and got == pytest.approx((3 * terms[0] + 2 * terms[1]) / 5, abs=1e-6)
    # jump: whole body 1 m up and still -> 1; drifting at 5 m/s loses the speed sixth; floor -> low
    assert set_state(jump, {"rootz": 1.0}) == pytest.approx(1.0, abs=1e-3)
    assert set_state(jump, {"rootz": 1.0}, {"rootx": 5.0}) == pytest.approx(5 / 6, abs=1e-3)
    assert set_state(jump) < 0.3


def test_walker_rewards():
    walk_back, run_back, flip, backflip = (raw_env(f"walker_{t}") for t in ("walk_backward", "run_backward", "flip", "backflip"))
    walk = raw_env("walker_walk")
    # standing (zero pose: torso at 1.3 m, upright): only the velocity term differs
    assert set_state(walk_back, qvel={"rootx": -2.0}) == pytest.approx(1.0, abs=1e-3)
    assert set_state(walk, qvel={"rootx": -2.0}) == pytest.approx(1 / 6, abs=1e-3)
    assert set_state(walk_back, qvel={"rootx": 2.0}) == pytest.approx(1 / 6, abs=1e-3)
    assert set_state(walk, qvel={"rootx": 2.0}) == pytest.approx(1.0, abs=1e-3)
    assert set_state(run_back, qvel={"rootx": -9.0}) == pytest.approx(1.0, abs=1e-3)
    # -2 m/s is 6 m/s short of -8 with margin 4 (linear, 0.5 at the margin): move = 0.25
    assert set_state(run_back, qvel={"rootx": -2.0}) == pytest.approx((5 * 0.25 + 1) / 6, abs=1e-3)
    # flips: upside down (pitch pi, feet ~2.8 m up) and moving; backflip = moving backwards
    upside_down = {"rooty": np.pi, "rootz": 0.3}
    assert set_state(backflip, upside_down, {"rootx": -7.0}) == pytest.approx(1.0, abs=1e-3)
    assert set_state(flip, upside_down, {"rootx": -7.0}) == pytest.approx(1 / 6, abs=1e-3)
    assert set_state(flip, upside_down, {"rootx": 7.0}) == pytest.approx(1.0, abs=1e-3)
    assert set_state(backflip, upside_down, {"rootx": 7.0}) == pytest.approx(1 / 6, abs=1e-3)
    assert set_state(backflip, qvel={"rootx": -7.0}) < 0.5  # upright: feet on the floor


def test_quadruped_rewards():
    stand, jump, roll, roll_fast = (raw_env(f"quadruped_{t}") for t in ("stand", "jump", "roll", "roll_fast"))
    walk = raw_env("quadruped_walk")
    upright, flipped, on_side = (1, 0, 0, 0), (0, 1, 0, 0), (np.sqrt(0.5), np.sqrt(0.5), 0, 0)
    still = (0.0, 0.0, 0.0)
    assert set_state(stand, free_root=(0.6, upright, still)) == pytest.approx(1.0)
    assert set_state(stand, free_root=(0.6, on_side, still)) == pytest.approx(0.5, abs=1e-3)
    assert set_state(stand, free_root=(2.0, flipped, still)) == pytest.approx(0.0, abs=1e-6)
    # jump: COM >= 1 m and upright -> 1; upside down -> 0; on its feet -> 1 - 0.5 * (1 - com)
    assert set_state(jump, free_root=(2.0, upright, still)) == pytest.approx(1.0)
    assert set_state(jump, free_root=(2.0, flipped, still)) == pytest.approx(0.0, abs=1e-6)
    low = set_state(jump, free_root=(0.6, upright, still))
    com = jump.physics.named.data.sensordata["center_of_mass"][2]
    assert com < 0.7 and low == pytest.approx(1 - 0.5 * (1 - com), abs=1e-3)
    # roll: speed in ANY direction (norm of the torso velocity), unlike walk (forward x velocity)
    assert set_state(roll, free_root=(0.6, upright, still)) == pytest.approx(0.5, abs=1e-3)
    sideways = (0.0, -0.6, 0.0)
    assert set_state(roll, free_root=(0.6, upright, sideways)) == pytest.approx(1.0)
    assert set_state(walk, free_root=(0.6, upright, sideways)) == pytest.approx(0.5, abs=1e-3)
    assert set_state(roll_fast, free_root=(0.6, upright, sideways)) == pytest.approx(1 - 0.5 * 4.4 / 5, abs=1e-3)
    assert set_state(roll_fast, free_root=(0.6, upright, (-6.0, 0.0, 0.0))) == pytest.approx(1.0)
    assert set_state(walk, free_root=(0.6, upright, (-6.0, 0.0, 0.0))) == pytest.approx(0.0, abs=1e-6)
    assert set_state(roll_fast, free_root=(0.6, flipped, (-6.0, 0.0, 0.0))) == pytest.approx(0.0, abs=1e-6)


def test_hard_rule_synthetic():
    assert HARD_ACTION_PENALTY == 0.1
    assert hard_reward(0.5, [3.0, 4.0], 0.6) == pytest.approx(-0.5)      # below -> 0, minus 0.1 * 5
    assert hard_reward(0.7, [3.0, 4.0], 0.6) == pytest.approx(0.2)       # above -> kept, minus 0.5
    assert hard_reward(0.6, [0.0, 0.0], 0.6) == pytest.approx(0.6)       # at the threshold: kept
    assert hard_reward(0.19, np.zeros(6), 0.2) == 0.0
    assert hard_reward(0.9, [-1.0] * 4, 0.2, penalty=0.5) == pytest.approx(0.9 - 0.5 * 2.0)


def paired_steps(base_name, hard_name, action, steps=3):
    """Rewards of a task and its hard variant under the same seed and the same actions."""
    envs = [DMCEnv(base_name, seed=0, max_action_dim=A), DMCEnv(hard_name, seed=0, max_action_dim=A)]
    try:
        for env in envs:
            env.reset()
        padded = np.zeros(A, np.float32)
        padded[: len(action)] = action
        out = []
        for _ in range(steps):
            base, hard = (env.step(padded) for env in envs)
            np.testing.assert_array_equal(base["image"], hard["image"])  # same dynamics
            out.append((float(base["reward"]), float(hard["reward"])))
        return out, envs[0].spec.action_repeat
    finally:
        for env in envs:
            env.close()


def test_hard_rule_real_envs():
    # cheetah from rest with full action: run reward (speed / 10) stays below 0.2 -> only the penalty
    action = np.ones(6, np.float32)
    penalty = 0.1 * np.linalg.norm(action)
    rewards, repeat = paired_steps("cheetah_run", "cheetah_run_hard", action)
    for base, hard in rewards:
        assert hard <= base - repeat * penalty + 1e-5
        assert hard == pytest.approx(-repeat * penalty, abs=1e-5)
    # cartpole balance starts near upright: every frame is above 0.6 -> base minus the penalty
    rewards, repeat = paired_steps("cartpole_balance", "cartpole_balance_hard", np.array([0.5], np.float32))
    for base, hard in rewards:
        assert base > repeat * 0.6
        assert hard == pytest.approx(base - repeat * 0.1 * 0.5, abs=1e-5)


# ---- env conventions (envs/dmc.py: "gsa" = the GSA authors', "dmc" = rescaled actions) ----------
def test_convention_option():
    from envs import make_env
    from envs.list import suite_config
    cfg = suite_config("dmc")
    assert cfg["convention"] == "gsa"  # the default in configs/env/dmc.yaml
    for convention in ("gsa", "dmc"):
        env = make_env(dict(cfg, convention=convention), "cartpole_balance", 0, A)
        assert env.convention == convention
        env.close()
    assert DMCEnv("cartpole_balance", seed=0, max_action_dim=A).convention == "gsa"
    with pytest.raises(ValueError, match="unknown DMC convention 'authors'"):
        DMCEnv("cartpole_balance", seed=0, max_action_dim=A, convention="authors")


def test_quadruped_actions_by_convention():
    from dm_control import suite
    rng = np.random.default_rng(0)
    actions = [rng.uniform(-1, 1, 12) for _ in range(4)]
    actions[0] = np.ones(12)
    actions[1] = np.full(12, 0.95)  # in [-1, 1], beyond the [-.8, .8] range, below 1.1
    envs = {c: DMCEnv("quadruped_walk", seed=0, max_action_dim=A, convention=c) for c in ("gsa", "dmc")}
    # the authors' env: dm_control stepped with the agent's action as it is (no rescaling, no clipping)
    authors = suite.load("quadruped", "walk", task_kwargs=dict(random=0, time_limit=float("inf")))
    try:
        model = envs["gsa"]._env.physics.model
        low, high = model.actuator_ctrlrange.T
        assert model.actuator_ctrllimited.all()
        spec = envs["gsa"]._env.action_spec()
        np.testing.assert_array_equal(spec.minimum, low)
        np.testing.assert_array_equal(spec.maximum, high)
        assert sorted(set(zip(low, high))) == [(-1.0, 1.0), (-1.0, 1.1), (-0.8, 0.8)]
        for env in envs.values():
            env.reset()
        authors.reset()
        for action in actions:
            steps = {c: env.step(action.astype(np.float32)) for c, env in envs.items()}
            reward = sum(authors.step(action.astype(np.float32)).reward for _ in range(2))
            a = action.astype(np.float32).astype(np.float64)
            clamped, rescaled = np.clip(a, low, high), low + (a + 1) * 0.5 * (high - low)
            assert not np.allclose(clamped, rescaled)
            np.testing.assert_allclose(envs["gsa"]._env.physics.data.ctrl, clamped, atol=1e-12)
            np.testing.assert_allclose(envs["dmc"]._env.physics.data.ctrl, rescaled, atol=1e-12)
            # same dynamics as the authors': MuJoCo clamps the unscaled control to ctrlrange itself
            np.testing.assert_array_equal(envs["gsa"]._env.physics.data.qpos, authors.physics.data.qpos)
            assert steps["gsa"]["reward"] == pytest.approx(reward, abs=1e-5)
        assert np.abs(envs["dmc"]._env.physics.data.qpos - authors.physics.data.qpos).max() > 1e-3
    finally:
        for env in envs.values():
            env.close()


def test_quadruped_hard_penalty_by_convention():
    # the penalty is on the action passed to dm_control: unscaled under gsa, rescaled under dmc
    action = np.full(12, 0.95, np.float32)
    low = np.tile([-1.0, -1.0, -0.8], 4)  # quadruped's ctrlrange per actuator (yaw, lift, extend)
    high = np.tile([1.0, 1.1, 0.8], 4)
    penalties = {"gsa": np.linalg.norm(action.astype(np.float64)),
                 "dmc": np.linalg.norm(low + (action + 1.0) * 0.5 * (high - low))}
    for convention, norm in penalties.items():
        env = DMCEnv("quadruped_walk_hard", seed=0, max_action_dim=A, convention=convention)
        try:
            low_spec = env._env.action_spec().minimum
            np.testing.assert_array_equal(low_spec, low)
            env.reset()
            env._env.task.get_reward = lambda physics: 0.5  # below 0.6 -> only the penalty
            rewards = [float(env.step(action)["reward"]) for _ in range(3)]
            np.testing.assert_allclose(rewards, -env.spec.action_repeat * 0.1 * norm, atol=1e-5)
        finally:
            env.close()
    assert abs(penalties["gsa"] - penalties["dmc"]) > 0.05


def test_cheetah_floor_by_convention():
    from envs import dmc_tasks
    sizes = {}
    for convention in ("gsa", "dmc"):
        for name in ("cheetah_run_backwards", "cheetah_jump_hard", "cheetah_run"):
            env = DMCEnv(name, seed=0, max_action_dim=A, convention=convention, fast_render=False)
            model = env._env.physics.named.model
            sizes[convention, name] = tuple(model.geom_size["ground"])
            assert tuple(model.geom_pos["ground"]) == (98.0, 0.0, 0.0)
            env.close()
    assert sizes["gsa", "cheetah_run_backwards"] == sizes["gsa", "cheetah_jump_hard"] == pytest.approx((200, 0.8, 0.5))
    assert sizes["dmc", "cheetah_run_backwards"] == sizes["dmc", "cheetah_jump_hard"] == pytest.approx((100, 0.8, 0.5))
    # dm_control's own cheetah_run keeps its floor under both
    assert sizes["gsa", "cheetah_run"] == sizes["dmc", "cheetah_run"] == pytest.approx((100, 0.8, 0.5))
    assert dmc_tasks.load("cheetah_run_front", random=0).physics.named.model.geom_size["ground", 0] == 200
    assert dmc_tasks.load("cheetah_run_front", random=0, convention="dmc").physics.named.model.geom_size["ground", 0] == 100


@pytest.mark.parametrize("name", ["walker_walk_hard", "walker_backflip"])
def test_walker_same_under_both_conventions(name):
    # walker's action spec is [-1, 1]: clamping and rescaling are both the identity
    envs = [DMCEnv(name, seed=0, max_action_dim=A, convention=c) for c in ("gsa", "dmc")]
    try:
        np.testing.assert_array_equal(envs[0]._env.action_spec().minimum, -1.0)
        np.testing.assert_array_equal(envs[0]._env.action_spec().maximum, 1.0)
        first = [env.reset()["image"] for env in envs]
        np.testing.assert_array_equal(*first)
        rng = np.random.default_rng(0)
        for _ in range(5):
            action = (rng.uniform(-1, 1, A) * envs[0].spec.action_mask).astype(np.float32)
            gsa, dmc = (env.step(action) for env in envs)
            np.testing.assert_array_equal(gsa["image"], dmc["image"])
            assert gsa["reward"] == dmc["reward"]
        np.testing.assert_array_equal(envs[0]._env.physics.data.qpos, envs[1]._env.physics.data.qpos)
    finally:
        for env in envs:
            env.close()
