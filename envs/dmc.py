"""DeepMind Control Suite pixel tasks behind the env contract of envs/base.py.

Owns task-name parsing ("ball_in_cup_catch" -> domain "ball_in_cup", task "catch"), the fast
render settings (no shadows, no multisampling, offscreen buffer = image size) and the episode
bookkeeping (action repeat, time limit in frames, terminal vs time-out).
dm_control is imported lazily, after envs.gl.setup_gl() has picked a headless GL backend.
"""
from __future__ import annotations

import numpy as np

from envs.base import EnvSpec, TaskInfo, make_obs, unpad_action
from envs.gl import setup_gl


def _suite():
    setup_gl()
    from dm_control import suite  # noqa: PLC0415 (needs MUJOCO_GL set first)
    return suite


def valid_tasks() -> list[str]:
    """All suite task names in the "domain_task" form, e.g. "cartpole_balance"."""
    return sorted(f"{domain}_{task}" for domain, task in _suite().ALL_TASKS)


def parse_task(name: str) -> tuple[str, str]:
    """"walker_walk" -> ("walker", "walk"); matches the longest known domain name."""
    suite = _suite()
    for domain in sorted(suite._DOMAINS, key=len, reverse=True):
        rest = name[len(domain) + 1:]
        if name.startswith(domain + "_") and rest in suite._DOMAINS[domain].SUITE:
            return domain, rest
    raise ValueError(f"unknown DMC task {name!r}; valid tasks: {', '.join(valid_tasks())}")


def fast_render_settings(physics, image_size: int) -> None:
    """Cheap offscreen rendering; must run before the first render (contexts are made lazily)."""
    vis = physics.model.vis
    vis.quality.shadowsize = 0
    vis.quality.offsamples = 0
    vis.global_.offwidth = image_size
    vis.global_.offheight = image_size
    if physics._contexts:  # already rendered once: rebuild the contexts with the new sizes
        physics._free_rendering_contexts()


class DMCEnv:
    """One DMC task rendered to (image_size, image_size, 3) uint8 pixels."""

    def __init__(self, task: str, seed: int, max_action_dim: int, action_repeat: int = 2,
                 image_size: int = 64, episode_frames: int = 1000, camera: int | None = None,
                 fast_render: bool = True):
        domain, task_name = parse_task(task)
        # time_limit=inf: the episode length is counted here, in frames.
        self._env = _suite().load(domain, task_name,
                                  task_kwargs=dict(random=seed, time_limit=float("inf")))
        action_spec = self._env.action_spec()
        native = int(np.prod(action_spec.shape))
        if native > max_action_dim:
            raise ValueError(f"{task}: native action dim {native} > max_action_dim {max_action_dim}")
        self._low = np.broadcast_to(action_spec.minimum, (native,)).astype(np.float64)
        self._high = np.broadcast_to(action_spec.maximum, (native,)).astype(np.float64)
        self.camera = (2 if domain == "quadruped" else 0) if camera is None else camera
        self.image_size = image_size
        self.episode_frames = episode_frames
        self.spec = EnvSpec(suite="dmc", task=task, embodiment=domain, native_action_dim=native,
                            max_action_dim=max_action_dim,
                            episode_length=episode_frames // action_repeat,
                            action_repeat=action_repeat, image_size=image_size)
        if fast_render:
            fast_render_settings(self._env.physics, image_size)
        self._frames = 0
        self._done = True

    def render(self) -> np.ndarray:
        return self._env.physics.render(height=self.image_size, width=self.image_size,
                                        camera_id=self.camera)

    def reset(self) -> dict:
        self._env.reset()
        self._frames = 0
        self._done = False
        return make_obs(self.render(), is_first=True)

    def step(self, padded_action) -> dict:
        if self._done:
            raise RuntimeError(f"{self.spec.task}: step() after the episode ended; call reset()")
        action = unpad_action(self.spec, padded_action)
        action = self._low + (action + 1.0) * 0.5 * (self._high - self._low)
        reward, ended, terminal = 0.0, False, False
        for _ in range(self.spec.action_repeat):
            time_step = self._env.step(action)
            self._frames += 1
            reward += time_step.reward or 0.0
            ended = time_step.last() or self._frames >= self.episode_frames
            if time_step.last():  # a task termination (the time limit is counted here)
                terminal = time_step.discount == 0.0
            if ended:
                break
        self._done = ended
        return make_obs(self.render(), reward=reward, is_last=ended, is_terminal=terminal)

    def close(self) -> None:
        self._env.close()


# ---- suite interface (envs/__init__.py) ----------------------------------------------------------
def prepare(env_cfg: dict) -> None:
    setup_gl()  # probe GL once in the parent; the workers inherit MUJOCO_GL


def make(env_cfg: dict, task: str, seed: int, max_action_dim: int) -> DMCEnv:
    keys = ("action_repeat", "image_size", "episode_frames", "camera")
    return DMCEnv(task, seed, max_action_dim, **{k: env_cfg[k] for k in keys if env_cfg.get(k) is not None})


# Native action dims of the embodiments in the registry.
ACTION_DIMS = {"cartpole": 1, "acrobot": 1, "walker": 6, "cheetah": 6, "quadruped": 12, "hopper": 4}
# The 22 DMC tasks of GSA Table 4, cheetah run hard, and Vid2Act's DMC source tasks.
BENCHMARK = [
    "cartpole_balance", "acrobot_swingup", "acrobot_swingup_sparse", "acrobot_swingup_hard",
    "walker_stand", "walker_walk", "walker_run", "walker_backflip", "walker_walk_backward",
    "walker_walk_hard", "walker_run_backward",
    "cheetah_run", "cheetah_run_front", "cheetah_run_back", "cheetah_run_backwards", "cheetah_jump",
    "quadruped_walk", "quadruped_stand", "quadruped_run", "quadruped_jump", "quadruped_roll",
    "quadruped_roll_fast", "cheetah_run_hard", "hopper_stand",
]


def tasks(env_cfg: dict) -> list[TaskInfo]:
    """The registry rows. Any other dm_control suite task ("domain_task") can be made as well."""
    repeat = env_cfg.get("action_repeat") or 2
    length = (env_cfg.get("episode_frames") or 1000) // repeat
    rows = []
    for name in BENCHMARK:
        domain = name.split("_")[0]
        note = "hard" if name.endswith("_hard") else ("custom" if is_custom(name) else "")
        rows.append(TaskInfo("dmc", name, domain, ACTION_DIMS[domain], length, repeat, note))
    return rows


def is_custom(name: str) -> bool:
    """True for the tasks this project adds to dm_control (defined in envs/dmc_tasks.py)."""
    return False  # replaced once envs/dmc_tasks.py exists
