"""Custom DeepMind Control tasks of GSA's DMC benchmark (walker, cheetah, quadruped).

Owns the task classes (dm_control ``base.Task`` subclasses of the suite's own walker / cheetah /
quadruped tasks), the constructor registry ``TASKS`` ("domain_task" -> constructor) and
``load()``. Every task runs on the domain's own physics and model XML from dm_control.suite with
the suite's control timestep, episode initialisation, observations and cameras; only the reward
differs (and, under the "gsa" convention, the custom cheetah tasks' floor; see below). envs/dmc.py consults TASKS before dm_control's suite (and keeps the names, so that its
is_custom() needs no dm_control import).

Reward facts (speeds, heights, margins, weights) follow the GSA authors' custom tasks
(zhaoyi11/ncrl, src/custom_dmc_tasks/{walker,cheetah,quadruped}.py; the walker and cheetah ones are
the TD-MPC2 custom tasks, the quadruped ones URLB-style). Notation used in the docstrings:
``tol(x, [lo, hi], m)`` is dm_control's rewards.tolerance: 1 inside the bounds, falling off over
the margin m outside them, gaussian sigmoid with value 0.1 at the margin unless marked
``linear@v`` (linear, value v at the margin, 0 beyond 2m when v = 0.5, beyond m when v = 0).

Models per env convention (envs/dmc.py): the authors' walker.xml and quadruped.xml equal
dm_control's, so walker and quadruped tasks are the same under "gsa" and "dmc". Their cheetah.xml
differs from dm_control's only in the ground plane, size "200 .8 .5" instead of "100 .8 .5" (both
at x = 98): under "gsa" the custom cheetah tasks use that floor (CHEETAH_GSA_FLOOR), which keeps
the floor in the camera's view when running backwards; dm_control's cheetah_run keeps its own.
"""
from __future__ import annotations

from xml.etree import ElementTree

from envs.gl import setup_gl

setup_gl()  # dm_control picks its GL backend when first imported

import numpy as np  # noqa: E402
from dm_control.rl import control  # noqa: E402
from dm_control.suite import cheetah, common, quadruped, walker  # noqa: E402
from dm_control.utils import rewards  # noqa: E402

INF = float("inf")


def _linear(x, bounds, margin, value_at_margin):
    return rewards.tolerance(x, bounds=bounds, margin=margin, value_at_margin=value_at_margin,
                             sigmoid="linear")


# ---- walker (stand height 1.2 m, walk speed 1 m/s, run speed 8 m/s from dm_control.suite.walker) ----
WALKER_FLIP_SPEED = 0.75 * walker._RUN_SPEED   # 6 m/s
WALKER_THIGH_UP = 1.0                          # m, mean thigh height when upside down
WALKER_LEGS_UP = 1.1                           # m, mean foot height when upside down


class WalkerBackward(walker.PlanarWalker):
    """Walk / run backwards: walker walk/run with the velocity target mirrored.

    r = stand * (5 * move + 1) / 6, with
    stand = (3 * tol(torso_height, [1.2, inf), 0.6) + (1 + torso_upright) / 2) / 4,
    move  = tol(horizontal_velocity, (-inf, -speed], speed / 2, linear@0.5),
    speed = 1 m/s (walker_walk_backward) or 8 m/s (walker_run_backward).
    """

    def get_reward(self, physics):
        standing = rewards.tolerance(physics.torso_height(), bounds=(walker._STAND_HEIGHT, INF),
                                     margin=walker._STAND_HEIGHT / 2)
        stand = (3 * standing + (1 + physics.torso_upright()) / 2) / 4
        move = _linear(physics.horizontal_velocity(), (-INF, -self._move_speed),
                       self._move_speed / 2, 0.5)
        return stand * (5 * move + 1) / 6


class WalkerFlip(walker.PlanarWalker):
    """Flip (forward) / backflip: be upside down (feet up) while travelling at 6 m/s.

    r = upside_down * (5 * move + 1) / 6, with
    upside_down = (3 * tol(mean foot height, [1.1, inf), 0.55)
                   + 2 * tol(mean thigh height, [1.0, inf), 0.5)) / 5,
    move = tol(direction * horizontal_velocity, [6, inf), 3, linear@0.5),
    direction = +1 (walker_flip) or -1 (walker_backflip: moving backwards, x velocity <= -6).
    """

    def __init__(self, direction: int, random=None):
        super().__init__(move_speed=WALKER_FLIP_SPEED, random=random)
        self._direction = direction

    def get_reward(self, physics):
        xpos = physics.named.data.xpos
        thighs = (xpos["left_thigh", "z"] + xpos["right_thigh", "z"]) / 2
        feet = (xpos["left_foot", "z"] + xpos["right_foot", "z"]) / 2
        thigh_up = rewards.tolerance(thighs, bounds=(WALKER_THIGH_UP, INF), margin=WALKER_THIGH_UP / 2)
        legs_up = rewards.tolerance(feet, bounds=(WALKER_LEGS_UP, INF), margin=WALKER_LEGS_UP / 2)
        upside_down = (3 * legs_up + 2 * thigh_up) / 5
        move = _linear(self._direction * physics.horizontal_velocity(), (self._move_speed, INF),
                       self._move_speed / 2, 0.5)
        return upside_down * (5 * move + 1) / 6


# ---- cheetah (run speed 10 m/s from dm_control.suite.cheetah) --------------------------------------
CHEETAH_BACKWARDS_SPEED = 0.8 * cheetah._RUN_SPEED   # 8 m/s
CHEETAH_ONE_FOOT_SPEED = 0.6 * cheetah._RUN_SPEED    # 6 m/s
CHEETAH_JUMP_HEIGHT = 1.2                            # m
CHEETAH_JUMP_DRIFT = 0.5                             # m/s, |speed| allowed while jumping
CHEETAH_GSA_FLOOR = 200.0                            # half-length (x) of the ground plane under "gsa"
CHEETAH_DMC_FLOOR = 100.0                            # dm_control's cheetah.xml


def cheetah_model(floor: float = CHEETAH_DMC_FLOOR) -> tuple[str, dict]:
    """(xml, assets) of dm_control's cheetah with the ground plane "ground" of half-length ``floor``
    (other size fields and the position x = 98 unchanged)."""
    xml, assets = cheetah.get_model_and_assets()
    if floor == CHEETAH_DMC_FLOOR:
        return xml, assets
    root = ElementTree.fromstring(xml)
    ground = root.find(".//geom[@name='ground']")
    size = ground.get("size").split()
    if float(size[0]) != CHEETAH_DMC_FLOOR:  # a new dm_control model: recheck it against the authors'
        raise RuntimeError(f"dm_control's cheetah ground has size {ground.get('size')!r}, "
                           f"expected {CHEETAH_DMC_FLOOR:g} .8 .5")
    ground.set("size", " ".join([f"{floor:g}"] + size[1:]))
    return ElementTree.tostring(root, encoding="unicode"), assets


class CheetahRunBackwards(cheetah.Cheetah):
    """Run backwards: r = tol(speed, (-inf, -8], 8, linear@0), i.e. min(1, max(0, -speed / 8)).

    speed = x velocity of the torso subtree's centre of mass (cheetah Physics.speed()).
    """

    def get_reward(self, physics):
        return _linear(physics.speed(), (-INF, -CHEETAH_BACKWARDS_SPEED), CHEETAH_BACKWARDS_SPEED, 0.0)


class CheetahRunOneFoot(cheetah.Cheetah):
    """Run front / run back: run forward on one pair of legs with the other foot high in the air.

    r = up * (5 * run + 1) / 6, with
    up  = (3 * tol(raised_foot_z, [1.2, inf), 0.6) + 2 * tol(torso_z, [1.2, inf), 0.6)) / 5,
    run = tol(speed, [6, inf), 6, linear@0);
    raised foot = "bfoot" for cheetah_run_front (runs on the front leg), "ffoot" for cheetah_run_back.
    """

    def __init__(self, raised_foot: str, random=None):
        super().__init__(random=random)
        self._raised_foot = raised_foot

    def get_reward(self, physics):
        xpos = physics.named.data.xpos
        torso_up = rewards.tolerance(xpos["torso", "z"], bounds=(CHEETAH_JUMP_HEIGHT, INF),
                                     margin=CHEETAH_JUMP_HEIGHT / 2)
        foot_up = rewards.tolerance(xpos[self._raised_foot, "z"], bounds=(CHEETAH_JUMP_HEIGHT, INF),
                                    margin=CHEETAH_JUMP_HEIGHT / 2)
        up = (3 * foot_up + 2 * torso_up) / 5
        run = _linear(physics.speed(), (CHEETAH_ONE_FOOT_SPEED, INF), CHEETAH_ONE_FOOT_SPEED, 0.0)
        return up * (5 * run + 1) / 6


class CheetahJump(cheetah.Cheetah):
    """Jump: the mean of "stand on the back foot" and "stand on the front foot" rewards.

    r = (stand(ffoot) + stand(bfoot)) / 2, with
    stand(foot) = (5 * tol((torso_z + foot_z) / 2, [1.2, inf), 0.6) + still) / 6,
    still = tol(speed, [-0.5, 0.5], 0.5, linear@0). Both feet high -> r = 1 (a jump in place).
    """

    def get_reward(self, physics):
        xpos = physics.named.data.xpos
        still = _linear(physics.speed(), (-CHEETAH_JUMP_DRIFT, CHEETAH_JUMP_DRIFT), CHEETAH_JUMP_DRIFT, 0.0)
        stands = []
        for foot in ("ffoot", "bfoot"):
            height = rewards.tolerance((xpos["torso", "z"] + xpos[foot, "z"]) / 2,
                                       bounds=(CHEETAH_JUMP_HEIGHT, INF), margin=CHEETAH_JUMP_HEIGHT / 2)
            stands.append((5 * height + still) / 6)
        return sum(stands) / 2


# ---- quadruped (walk speed 0.5 m/s, run speed 5 m/s from dm_control.suite.quadruped) ---------------
QUADRUPED_JUMP_HEIGHT = 1.0   # m, height of the centre of mass


def quadruped_upright(physics) -> float:
    """tol(torso_upright, [1, inf), 2, linear@0) = (1 + cos(tilt)) / 2: 1 upright, 0 upside down."""
    return _linear(physics.torso_upright(), (1.0, INF), 2.0, 0.0)


class QuadrupedStand(quadruped.Move):
    """Stand: r = upright (see quadruped_upright)."""

    def __init__(self, random=None):
        super().__init__(desired_speed=0.0, random=random)

    def get_reward(self, physics):
        return quadruped_upright(physics)


class QuadrupedJump(quadruped.Move):
    """Jump: r = upright * tol(com_height, [1.0, inf), 1.0, linear@0.5).

    com_height = z of the torso subtree's centre of mass (sensor "center_of_mass"): 0.5 * upright
    at height 0, ~0.79 * upright standing (com ~0.57 m), 1 * upright at >= 1 m.
    """

    def __init__(self, random=None):
        super().__init__(desired_speed=0.0, random=random)

    def get_reward(self, physics):
        com_height = physics.named.data.sensordata["center_of_mass"][2]
        return quadruped_upright(physics) * _linear(
            com_height, (QUADRUPED_JUMP_HEIGHT, INF), QUADRUPED_JUMP_HEIGHT, 0.5)


class QuadrupedRoll(quadruped.Move):
    """Roll / roll fast: move in ANY direction (speed = norm of the torso velocimeter reading).

    r = upright * tol(||torso_velocity||, [speed, inf), speed, linear@0.5),
    speed = 0.5 m/s (quadruped_roll) or 5 m/s (quadruped_roll_fast); at rest r = 0.5 * upright.
    """

    def get_reward(self, physics):
        speed = float(np.linalg.norm(physics.torso_velocity()))
        return quadruped_upright(physics) * _linear(
            speed, (self._desired_speed, INF), self._desired_speed, 0.5)


# ---- constructors -----------------------------------------------------------------------------------
# Each constructor takes the env convention (envs/dmc.py); only the cheetah ones use it.
def _walker(make_task):
    def build(random=None, time_limit=INF, environment_kwargs=None, convention="gsa"):
        physics = walker.Physics.from_xml_string(*walker.get_model_and_assets())
        return control.Environment(physics, make_task(random), time_limit=time_limit,
                                   control_timestep=walker._CONTROL_TIMESTEP, **(environment_kwargs or {}))
    return build


def _cheetah(make_task):
    def build(random=None, time_limit=INF, environment_kwargs=None, convention="gsa"):
        floor = CHEETAH_GSA_FLOOR if convention == "gsa" else CHEETAH_DMC_FLOOR
        physics = cheetah.Physics.from_xml_string(*cheetah_model(floor))
        return control.Environment(physics, make_task(random), time_limit=time_limit,
                                   **(environment_kwargs or {}))
    return build


def _quadruped(make_task):
    def build(random=None, time_limit=INF, environment_kwargs=None, convention="gsa"):
        # Same model as dm_control's quadruped walk: floor of 20 s x 0.5 m/s, no terrain / walls / ball.
        xml = quadruped.make_model(floor_size=quadruped._DEFAULT_TIME_LIMIT * quadruped._WALK_SPEED)
        physics = quadruped.Physics.from_xml_string(xml, common.ASSETS)
        return control.Environment(physics, make_task(random), time_limit=time_limit,
                                   control_timestep=quadruped._CONTROL_TIMESTEP, **(environment_kwargs or {}))
    return build


TASKS = {
    "walker_walk_backward": _walker(lambda r: WalkerBackward(walker._WALK_SPEED, random=r)),
    "walker_run_backward": _walker(lambda r: WalkerBackward(walker._RUN_SPEED, random=r)),
    "walker_flip": _walker(lambda r: WalkerFlip(+1, random=r)),
    "walker_backflip": _walker(lambda r: WalkerFlip(-1, random=r)),
    "cheetah_run_backwards": _cheetah(lambda r: CheetahRunBackwards(random=r)),
    "cheetah_run_front": _cheetah(lambda r: CheetahRunOneFoot("bfoot", random=r)),
    "cheetah_run_back": _cheetah(lambda r: CheetahRunOneFoot("ffoot", random=r)),
    "cheetah_jump": _cheetah(lambda r: CheetahJump(random=r)),
    "quadruped_stand": _quadruped(lambda r: QuadrupedStand(random=r)),
    "quadruped_jump": _quadruped(lambda r: QuadrupedJump(random=r)),
    "quadruped_roll": _quadruped(lambda r: QuadrupedRoll(quadruped._WALK_SPEED, random=r)),
    "quadruped_roll_fast": _quadruped(lambda r: QuadrupedRoll(quadruped._RUN_SPEED, random=r)),
}


def load(name: str, random=None, time_limit: float = INF, environment_kwargs=None,
         convention: str = "gsa") -> control.Environment:
    """Builds custom task ``name`` ("domain_task") as a dm_control control.Environment under env
    convention ``convention`` ("gsa" or "dmc", envs/dmc.py)."""
    if name not in TASKS:
        raise ValueError(f"unknown custom DMC task {name!r}; custom tasks: {', '.join(sorted(TASKS))}")
    if convention not in ("gsa", "dmc"):
        raise ValueError(f"unknown DMC convention {convention!r}; use gsa or dmc")
    return TASKS[name](random=random, time_limit=time_limit, environment_kwargs=environment_kwargs,
                       convention=convention)
