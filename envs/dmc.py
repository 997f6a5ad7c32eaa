"""DeepMind Control Suite pixel tasks behind the env contract of envs/base.py.

Owns task-name parsing ("ball_in_cup_catch" -> domain "ball_in_cup", task "catch"), the fast
render settings (no shadows, no multisampling, offscreen buffer = image size), the episode
bookkeeping (action repeat, time limit in frames, terminal vs time-out), the registry of the
benchmark's task names, and GSA's "_hard" variants (hard_reward). Task names resolve to
dm_control's suite, or to the custom tasks of envs/dmc_tasks.py (walker_backflip, ...), or to
"<task>_hard" for any of those.

Two env conventions (env option ``convention``, configs/env/dmc.yaml; default "gsa"):
  gsa  the GSA authors' (zhaoyi11/ncrl src/envs.py): the agent's [-1, 1] action is passed to
       dm_control unscaled, and MuJoCo clamps it to each actuator's ctrlrange (all dm_control
       actuators are ctrllimited with spec bounds == ctrlrange; dm_control itself never checks
       bounds). We clip to the spec bounds, which is that clamp, so physics.data.ctrl holds the
       control MuJoCo applies. A "_hard" task penalises the action passed to dm_control (the
       unscaled one). The custom cheetah tasks use the authors' ground plane (envs/dmc_tasks.py).
  dmc  the action is rescaled affinely from [-1, 1] to the action spec; dm_control's models.
Every dm_control domain but quadruped (and lqr, whose actuators are unlimited) has spec [-1, 1],
where clamp and rescale are both the identity: there (walker, cheetah, cartpole, acrobot, hopper,
...) the conventions differ only in the custom cheetah tasks' floor.
dm_control is imported lazily, after envs.gl.setup_gl() has picked a headless GL backend.
"""
from __future__ import annotations

import numpy as np

from envs.base import EnvSpec, TaskInfo, did_you_mean, make_obs, unpad_action
from envs.gl import setup_gl


def _suite():
    setup_gl()
    from dm_control import suite  # noqa: PLC0415 (needs MUJOCO_GL set first)
    return suite


# Names of the custom tasks defined in envs/dmc_tasks.py (kept here, so that is_custom() and the
# registry rows need no dm_control import; tests check both lists agree).
CUSTOM_TASKS = (
    "walker_walk_backward", "walker_run_backward", "walker_flip", "walker_backflip",
    "cheetah_run_backwards", "cheetah_run_front", "cheetah_run_back", "cheetah_jump",
    "quadruped_stand", "quadruped_jump", "quadruped_roll", "quadruped_roll_fast",
)

# GSA's hard tasks ("<task>_hard", e.g. cheetah_run_hard): per raw simulator step, a reward below
# the threshold becomes 0, then HARD_ACTION_PENALTY x ||action|| is subtracted.
HARD_SUFFIX = "_hard"
HARD_THRESHOLD = 0.6
HARD_THRESHOLDS = {"cheetah": 0.2}  # per-domain exceptions
HARD_ACTION_PENALTY = 0.1

CONVENTIONS = ("gsa", "dmc")  # see the module docstring
DEFAULT_CONVENTION = "gsa"


def hard_reward(reward: float, action, threshold: float, penalty: float = HARD_ACTION_PENALTY) -> float:
    """One raw simulator step of a hard task: (reward if reward >= threshold else 0) - penalty * ||action||_2.

    ``action`` is the native action passed to dm_control: rescaled to the spec under convention
    "dmc", the agent's unscaled [-1, 1] action under "gsa".
    As in the GSA authors' HardTaskWrapper (zhaoyi11/ncrl src/envs.py), applied below the action
    repeat, so an agent step of repeat k pays the penalty k times.
    """
    kept = float(reward) if reward >= threshold else 0.0
    return kept - penalty * float(np.linalg.norm(np.asarray(action, dtype=np.float64)))


def _custom_tasks() -> dict:
    setup_gl()
    from envs import dmc_tasks  # noqa: PLC0415 (imports dm_control)
    return dmc_tasks.TASKS


def valid_tasks() -> list[str]:
    """All task names in the "domain_task" form, e.g. "cartpole_balance": dm_control's suite and the
    custom tasks (each can also be made as "<task>_hard")."""
    return sorted([f"{domain}_{task}" for domain, task in _suite().ALL_TASKS] + list(_custom_tasks()))


def _lookup(name: str) -> tuple[str, str] | None:
    suite, custom = _suite(), _custom_tasks()
    for domain in sorted(suite._DOMAINS, key=len, reverse=True):
        rest = name[len(domain) + 1:]
        if name.startswith(domain + "_") and (rest in suite._DOMAINS[domain].SUITE or name in custom):
            return domain, rest
    return None


def resolve_task(name: str) -> tuple[str, str, float | None]:
    """name -> (domain, base task, hard threshold or None).

    Exact names win (dm_control has its own reacher_hard, point_mass_hard, finger_turn_hard);
    otherwise "<known task>_hard" is GSA's hard variant of that task.
    """
    found = _lookup(name)
    if found is not None:
        return (*found, None)
    if name.endswith(HARD_SUFFIX):
        found = _lookup(name[: -len(HARD_SUFFIX)])
        if found is not None:
            return (*found, HARD_THRESHOLDS.get(found[0], HARD_THRESHOLD))
    known = valid_tasks()
    raise ValueError(f"unknown DMC task {name!r}.{did_you_mean(name, known + [t + HARD_SUFFIX for t in known])} "
                     f"Valid tasks (each also as <task>{HARD_SUFFIX}): {', '.join(known)}")


def parse_task(name: str) -> tuple[str, str]:
    """"walker_walk" -> ("walker", "walk"); "cheetah_run_hard" -> ("cheetah", "run_hard")."""
    domain, task, threshold = resolve_task(name)
    return domain, task + (HARD_SUFFIX if threshold is not None else "")


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
    """One DMC task rendered to (image_size, image_size, 3) uint8 pixels.

    ``hard_threshold`` is None, or the threshold of a "_hard" task whose per-frame rewards go
    through hard_reward(). ``convention`` is "gsa" or "dmc" (module docstring).
    """

    def __init__(self, task: str, seed: int, max_action_dim: int, action_repeat: int = 2,
                 image_size: int = 64, episode_frames: int = 1000, camera: int | None = None,
                 fast_render: bool = True, convention: str = DEFAULT_CONVENTION):
        if convention not in CONVENTIONS:
            raise ValueError(f"unknown DMC convention {convention!r}; use one of {', '.join(CONVENTIONS)}")
        self.convention = convention
        domain, task_name, self.hard_threshold = resolve_task(task)
        # time_limit=inf: the episode length is counted here, in frames.
        task_kwargs = dict(random=seed, time_limit=float("inf"))
        custom = _custom_tasks()
        if f"{domain}_{task_name}" in custom:
            self._env = custom[f"{domain}_{task_name}"](convention=convention, **task_kwargs)
        else:
            self._env = _suite().load(domain, task_name, task_kwargs=task_kwargs)
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
        action = unpad_action(self.spec, padded_action)  # (native,) in [-1, 1]
        if self.convention == "gsa":  # unscaled; clipping to the spec = MuJoCo's ctrlrange clamp
            applied = np.clip(action, self._low, self._high)
        else:  # "dmc": affine rescaling to the spec
            action = applied = self._low + (action + 1.0) * 0.5 * (self._high - self._low)
        reward, ended, terminal = 0.0, False, False
        for _ in range(self.spec.action_repeat):
            time_step = self._env.step(applied)
            self._frames += 1
            frame_reward = time_step.reward or 0.0
            if self.hard_threshold is not None:
                frame_reward = hard_reward(frame_reward, action, self.hard_threshold)
            reward += frame_reward
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


def check_task(task: str) -> None:
    """ValueError with the valid names (and the closest) unless dm_control (or our custom tasks) knows `task`."""
    resolve_task(task)


OPTIONS = ("action_repeat", "image_size", "episode_frames", "camera", "convention")  # the env config keys read


def check_options(env_cfg: dict) -> None:
    """ValueError for an unknown convention or a camera that is not an index; no simulator starts."""
    convention, camera = env_cfg.get("convention"), env_cfg.get("camera")
    if convention is not None and convention not in CONVENTIONS:
        raise ValueError(f"unknown DMC convention {convention!r}.{did_you_mean(convention, CONVENTIONS)} "
                         f"Use one of {', '.join(CONVENTIONS)}")
    if camera is not None and (isinstance(camera, bool) or not isinstance(camera, int) or camera < 0):
        raise ValueError(f"env.camera must be a camera index >= 0 (or null: 2 for quadruped, 0 otherwise); "
                         f"got {camera!r}")


def make(env_cfg: dict, task: str, seed: int, max_action_dim: int) -> DMCEnv:
    return DMCEnv(task, seed, max_action_dim, **{k: env_cfg[k] for k in OPTIONS if env_cfg.get(k) is not None})


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


def embodiment(task: str) -> str:
    """The body a task runs on, for any name `resolve_task` accepts ("cheetah_run_hard" -> "cheetah")."""
    return resolve_task(task)[0]


def is_custom(name: str) -> bool:
    """True for the tasks this project adds to dm_control (defined in envs/dmc_tasks.py) and their
    "_hard" variants; hard variants of dm_control's own tasks (cheetah_run_hard) are not custom."""
    base = name[: -len(HARD_SUFFIX)] if name.endswith(HARD_SUFFIX) else name
    return name in CUSTOM_TASKS or base in CUSTOM_TASKS
