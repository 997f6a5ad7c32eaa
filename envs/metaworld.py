"""Meta-World v3 pixel tasks (the 50 MT1 tasks, Sawyer arm) behind the env contract of envs/base.py.

Owns task-name parsing ("drawer-open" or "drawer-open-v3"), the static task list, the camera
(corner2 moved to GSA's position [0.75, 0.075, 0.7], corner images flipped upright as in GSA),
the fast render settings (no shadows, no multisampling, offscreen buffer = image size), goal
resampling (a new MT1 goal each reset, drawn from the env's seed), success logging, and the
episode bookkeeping (action repeat, time limit in simulator frames; Meta-World has no terminals,
so is_terminal is always False and Meta-World's own 500-step truncation is ignored).
metaworld is imported lazily, after envs.gl.setup_gl() has picked a headless GL backend.
"""
from __future__ import annotations

import atexit
import weakref

import numpy as np

from envs.base import EnvSpec, TaskInfo, did_you_mean, make_obs, unpad_action
from envs.gl import setup_gl
from envs.metaworld_goals import cached_goals

EMBODIMENT = "sawyer"
NATIVE_ACTION_DIM = 4
# The 50 Meta-World v3 tasks (metaworld.MT1.ENV_NAMES without "-v3"); tests/test_metaworld.py
# checks this static list against metaworld's own.
TASKS = (
    "assembly", "basketball", "bin-picking", "box-close", "button-press-topdown",
    "button-press-topdown-wall", "button-press", "button-press-wall", "coffee-button",
    "coffee-pull", "coffee-push", "dial-turn", "disassemble", "door-close", "door-lock",
    "door-open", "door-unlock", "hand-insert", "drawer-close", "drawer-open", "faucet-open",
    "faucet-close", "hammer", "handle-press-side", "handle-press", "handle-pull-side",
    "handle-pull", "lever-pull", "pick-place-wall", "pick-out-of-hole", "pick-place",
    "plate-slide", "plate-slide-side", "plate-slide-back", "plate-slide-back-side",
    "peg-insert-side", "peg-unplug-side", "soccer", "stick-push", "stick-pull", "push",
    "push-wall", "push-back", "reach", "reach-wall", "shelf-place", "sweep-into", "sweep",
    "window-open", "window-close",
)
# Defaults = GSA (zhaoyi11/ncrl src/envs.py: 200 simulator frames per episode, action repeat 2).
DEFAULTS = dict(action_repeat=2, image_size=64, episode_frames=200, camera="corner2")
# Camera positions overriding the XML ones: GSA (and DrM) bring corner2 closer to the table.
CAMERA_POS = {"corner2": (0.75, 0.075, 0.7)}
# Cameras whose up axis points down in the world (they render upside down): flipped vertically,
# exactly as GSA does (image[::-1]), so our frames match GSA-style offline data.
FLIPPED_CAMERAS = ("corner", "corner2", "corner3", "corner4")
# The cameras of every Meta-World v3 scene (the same 7 in each task's model).
CAMERAS = ("corner2", "corner", "corner3", "corner4", "topview", "behindGripper", "gripperPOV")


def parse_task(name: str) -> str:
    """"drawer-open" or "drawer-open-v3" -> "drawer-open"; ValueError listing the valid names."""
    base = name[:-3] if name.endswith("-v3") else name
    if base not in TASKS:
        raise ValueError(f"unknown Meta-World task {name!r}.{did_you_mean(base, TASKS)} Use one of the 50 v3 task "
                         f"names (an optional '-v3' suffix is accepted): {', '.join(sorted(TASKS))}")
    return base


def fast_render_settings(model, image_size: int) -> None:
    """Cheap offscreen rendering; must run before the first render (the GL context is lazy)."""
    model.vis.quality.shadowsize = 0
    model.vis.quality.offsamples = 0
    model.vis.global_.offwidth = image_size
    model.vis.global_.offheight = image_size


class MetaWorldEnv:
    """One Meta-World v3 task rendered to (image_size, image_size, 3) uint8 pixels."""

    def __init__(self, task: str, seed: int, max_action_dim: int, action_repeat: int = 2,
                 image_size: int = 64, episode_frames: int = 200, camera: str = "corner2",
                 fast_render: bool = True):
        base = parse_task(task)
        if NATIVE_ACTION_DIM > max_action_dim:
            raise ValueError(f"{task}: native action dim {NATIVE_ACTION_DIM} > max_action_dim "
                             f"{max_action_dim}; raise max_action_dim")
        if action_repeat < 1 or episode_frames < 1:
            raise ValueError(f"{task}: action_repeat ({action_repeat}) and episode_frames "
                             f"({episode_frames}) must be >= 1")
        setup_gl()
        import gymnasium as gym  # noqa: PLC0415 (needs MUJOCO_GL set first)
        import metaworld  # noqa: F401, PLC0415 (registers the Meta-World/* gymnasium ids)
        import mujoco  # noqa: PLC0415

        # MT1 draws 50 goals from `seed`; "pseudorandom" + sampling on reset walks through them
        # in a seeded shuffled order, so consecutive episodes get different goals.
        with cached_goals():  # the 50 goals are drawn once per task and seed (envs/metaworld_goals.py)
            self._env = gym.make("Meta-World/MT1", env_name=f"{base}-v3", seed=int(seed),
                                 render_mode="rgb_array", camera_name=camera, width=image_size,
                                 height=image_size, task_select="pseudorandom",
                                 disable_env_checker=True)
        self._env.get_wrapper_attr("toggle_sample_tasks_on_reset")(True)
        sim = self._env.unwrapped
        # Our time limit governs: Meta-World raises once its own max_path_length (500) is reached.
        sim.max_path_length = max(sim.max_path_length, episode_frames)
        cam_id = mujoco.mj_name2id(sim.model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if cam_id < 0:
            raise ValueError(f"unknown Meta-World camera {camera!r}; use one of {', '.join(CAMERAS)}")
        if camera in CAMERA_POS:
            sim.model.cam_pos[cam_id] = CAMERA_POS[camera]
        if fast_render:
            fast_render_settings(sim.model, image_size)
        self._flip = camera in FLIPPED_CAMERAS
        self.image_size = image_size
        self.episode_frames = episode_frames
        self.spec = EnvSpec(suite="metaworld", task=base, embodiment=EMBODIMENT,
                            native_action_dim=NATIVE_ACTION_DIM, max_action_dim=max_action_dim,
                            episode_length=episode_frames // action_repeat,
                            action_repeat=action_repeat, image_size=image_size)
        self.state = None  # latest 39-d simulator observation (for scripted experts, not replay)
        self._frames = 0
        self._done = True
        self._exit_hook = False

    @property
    def goal(self) -> np.ndarray:
        """The current episode's goal position (the last 3 dims of the goal-observable state)."""
        if self.state is None:
            raise RuntimeError(f"{self.spec.task}: no goal before the first reset()")
        return self.state[-3:].copy()

    def render(self) -> np.ndarray:
        image = self._env.render()
        if not self._exit_hook:  # registered after the GL backend's own atexit hook: runs first
            atexit.register(_close_at_exit, weakref.ref(self))
            self._exit_hook = True
        return image[::-1] if self._flip else image

    def reset(self) -> dict:
        self.state, _ = self._env.reset()
        self._frames = 0
        self._done = False
        return make_obs(self.render(), is_first=True, success=0.0)

    def step(self, padded_action) -> dict:
        if self._done:
            raise RuntimeError(f"{self.spec.task}: step() after the episode ended; call reset()")
        action = unpad_action(self.spec, padded_action).astype(np.float32)
        reward, success = 0.0, False
        for _ in range(self.spec.action_repeat):
            # Meta-World's own terminated (never set) and truncated (500 steps) are ignored.
            self.state, frame_reward, _, _, info = self._env.step(action)
            self._frames += 1
            reward += float(frame_reward)
            success = success or bool(info.get("success", False))
            if self._frames >= self.episode_frames:
                break
        self._done = self._frames >= self.episode_frames
        return make_obs(self.render(), reward=reward, is_last=self._done, is_terminal=False,
                        success=float(success))

    def close(self) -> None:
        self._env.close()  # idempotent


def _close_at_exit(ref) -> None:
    """Frees a forgotten env's GL context before EGL/OSMesa shut down (else errors at exit)."""
    env = ref()
    if env is not None:
        env.close()


# ---- suite interface (envs/__init__.py) ----------------------------------------------------------
def prepare(env_cfg: dict) -> None:
    setup_gl()  # probe GL once in the parent; the workers inherit MUJOCO_GL


def check_task(task: str) -> None:
    """ValueError with the valid names (and the closest) unless `task` is one of the 50; no simulator starts."""
    parse_task(task)


def check_options(env_cfg: dict) -> None:
    """ValueError for a camera the scenes do not have; no simulator starts."""
    camera = env_cfg.get("camera")
    if camera is not None and camera not in CAMERAS:
        raise ValueError(f"unknown Meta-World camera {camera!r}.{did_you_mean(camera, CAMERAS)} "
                         f"Cameras: {', '.join(CAMERAS)}")


def make(env_cfg: dict, task: str, seed: int, max_action_dim: int) -> MetaWorldEnv:
    return MetaWorldEnv(task, seed, max_action_dim,
                        **{k: env_cfg[k] for k in DEFAULTS if env_cfg.get(k) is not None})


def tasks(env_cfg: dict) -> list[TaskInfo]:
    """The 50 registry rows, static (no simulator started)."""
    repeat = env_cfg.get("action_repeat") or DEFAULTS["action_repeat"]
    length = (env_cfg.get("episode_frames") or DEFAULTS["episode_frames"]) // repeat
    return [TaskInfo("metaworld", name, EMBODIMENT, NATIVE_ACTION_DIM, length, repeat)
            for name in TASKS]
