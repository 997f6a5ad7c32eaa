"""Pure reward / termination / control rules shared by the driving suites (envs/driving.py, envs/carla.py).

Everything here takes plain numbers and numpy arrays (no simulator objects), so the rules are
tested on synthetic vehicle states (tests/test_carla.py) and both suites score driving the same way.

Vid2Act's CARLA reward (paper 5.5), per simulator frame of length dt seconds:

    r_t = v_ego . u_road * dt  -  xi_1 * collision_impulse  -  xi_2 * |steer|

v_ego: the ego velocity (m/s, world frame); u_road: unit vector of the lane / highway direction at
the ego position; collision_impulse: summed normal impulse of the collisions during the frame (N s);
steer: the executed steering command in [-1, 1]. CARLA: dt = 0.05, xi_1 = 1e-4, xi_2 = 1.
An episode terminates when the ego leaves the road, when it is stuck (slower than a threshold for a
whole window of frames), and, where a simulator freezes crashed cars (highway-env), on a crash.

Actions use one native layout everywhere: [steer, throttle_brake] in [-1, 1]; throttle_brake > 0 is
throttle, < 0 is brake (Iso-Dream's CARLA mapping).
"""
from __future__ import annotations

import collections

import numpy as np

CARLA_DT = 0.05     # s per CARLA frame (20 FPS synchronous mode)
XI_COLLISION = 1e-4  # xi_1, per N s of collision impulse
XI_STEER = 1.0       # xi_2, per frame of CARLA_DT seconds at full steering lock


def unit(vector) -> np.ndarray:
    """The direction of a 2-D/3-D vector as a unit vector; raises on a zero vector."""
    vector = np.asarray(vector, dtype=np.float64)
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError(f"road direction must be a non-zero finite vector, got {vector.tolist()}")
    return vector / norm


def progress(velocity, road_dir, dt: float) -> float:
    """Distance travelled along the road direction during dt: v . u * dt (negative when reversing
    or driving against the lane). Uses the first len(road_dir) components of velocity."""
    u = unit(road_dir)
    v = np.asarray(velocity, dtype=np.float64)[: u.shape[0]]
    return float(v @ u) * float(dt)


def vid2act_reward(velocity, road_dir, collision_impulse: float, steer: float, dt: float = CARLA_DT,
                   xi_1: float = XI_COLLISION, xi_2: float = XI_STEER) -> float:
    """One frame of Vid2Act's reward: v . u * dt - xi_1 * impulse - xi_2 * |steer|."""
    if collision_impulse < 0:
        raise ValueError(f"collision impulse is a magnitude, got {collision_impulse}")
    return progress(velocity, road_dir, dt) - xi_1 * float(collision_impulse) - xi_2 * abs(float(steer))


def steer_cost_per_frame(xi_2: float, dt: float, reference_dt: float = CARLA_DT) -> float:
    """xi_2 for frames of dt seconds such that the steering penalty per second of simulated time
    matches CARLA's (xi_2 per 0.05 s frame): the local suite ticks at other rates."""
    return float(xi_2) * float(dt) / float(reference_dt)


def collision_impulse_magnitude(impulses) -> float:
    """Sum of |normal impulse| over the collision events of one frame; impulses: (N, 3) or []."""
    impulses = np.asarray(impulses, dtype=np.float64).reshape(-1, 3)
    return float(np.linalg.norm(impulses, axis=1).sum())


def crash_impulse(mass: float, relative_speed: float) -> float:
    """Impulse proxy for simulators that only flag a crash (highway-env): m * |delta v| (N s)."""
    return float(mass) * abs(float(relative_speed))


def is_stuck(speeds, min_speed: float, window: int) -> bool:
    """True once the last `window` frame speeds (m/s) are all below min_speed; False while fewer
    than `window` frames are known (a car starting from rest gets that long to get going)."""
    if window <= 0:
        return False
    speeds = np.asarray(speeds, dtype=np.float64).reshape(-1)
    return speeds.shape[0] >= window and bool(np.all(speeds[-window:] < min_speed))


def termination(on_road: bool, speeds, min_speed: float, window: int, crashed: bool = False,
                end_on_crash: bool = False) -> str | None:
    """Why the episode terminates now ("off_road", "crash", "stuck"), or None to go on.
    All three are true terminals (is_terminal); the time limit is counted by the env."""
    if not on_road:
        return "off_road"
    if crashed and end_on_crash:
        return "crash"
    if is_stuck(speeds, min_speed, window):
        return "stuck"
    return None


def split_throttle_brake(steer: float, throttle_brake: float) -> tuple[float, float, float]:
    """Native action [steer, throttle_brake] in [-1, 1] -> (steer, throttle, brake), throttle and
    brake in [0, 1] and never both positive."""
    steer = float(np.clip(steer, -1.0, 1.0))
    tb = float(np.clip(throttle_brake, -1.0, 1.0))
    return steer, max(tb, 0.0), max(-tb, 0.0)


def merge_throttle_brake(steer: float, throttle: float, brake: float) -> np.ndarray:
    """(steer, throttle, brake) -> native action [steer, throttle - brake] clipped to [-1, 1]."""
    return np.clip(np.array([steer, float(throttle) - float(brake)], np.float32), -1.0, 1.0)


def perturb_action(action, rng: np.random.Generator, steer_std: float, throttle_std: float) -> np.ndarray:
    """Gaussian action noise for autopilot data collection, clipped to [-1, 1] (native layout)."""
    action = np.asarray(action, dtype=np.float64).reshape(2)
    noise = rng.normal(0.0, 1.0, 2) * np.array([steer_std, throttle_std])
    return np.clip(action + noise, -1.0, 1.0).astype(np.float32)


class EpisodeScore:
    """Per-frame reward and termination of one episode, shared by both suites' step loops.
    xi_2 is per CARLA frame (0.05 s): frames of other lengths pay it pro rata (steer_cost_per_frame);
    the stuck window is stuck_seconds of simulated time."""

    def __init__(self, dt: float, episode_frames: int, xi_1: float = XI_COLLISION, xi_2: float = XI_STEER,
                 stuck_speed: float = 0.1, stuck_seconds: float = 5.0, end_on_crash: bool = False):
        self.dt, self.episode_frames, self.xi_1 = float(dt), int(episode_frames), float(xi_1)
        self.xi_2 = steer_cost_per_frame(xi_2, dt)
        self.stuck_speed, self.window = float(stuck_speed), int(round(stuck_seconds / dt))
        self.end_on_crash, self.frames, self.speeds = end_on_crash, 0, collections.deque(maxlen=max(self.window, 1))

    def frame(self, velocity, road_dir, impulse: float, steer: float, on_road: bool,
              crashed: bool = False) -> tuple[float, str | None]:
        """Scores one simulator frame: (reward, termination reason or None)."""
        self.frames += 1
        self.speeds.append(float(np.linalg.norm(np.asarray(velocity, dtype=np.float64))))
        reward = vid2act_reward(velocity, road_dir, impulse, steer, self.dt, self.xi_1, self.xi_2)
        return reward, termination(on_road, self.speeds, self.stuck_speed, self.window, crashed, self.end_on_crash)

    @property
    def time_up(self) -> bool:
        return self.frames >= self.episode_frames


class NoiseBursts:
    """Noise injection for autopilot data collection (as in CIL, Codevilla et al. 2018).

    Call next(autopilot_action) once per agent step. Outside a burst, a burst starts with
    probability `prob`; it lasts `steps` agent steps, during which the returned override is the
    autopilot's action at the burst start plus ONE Gaussian offset drawn at the burst start
    (std steer_std / throttle_std), clipped to [-1, 1]: the car drifts, and the data then shows
    the autopilot recovering. Returns None when the autopilot should drive unperturbed.
    """

    def __init__(self, prob: float, steps: int, steer_std: float, throttle_std: float,
                 rng: np.random.Generator):
        if not 0.0 <= prob <= 1.0 or steps < 1:
            raise ValueError(f"noise bursts need 0 <= prob <= 1 and steps >= 1, got {prob}, {steps}")
        self.prob, self.steps, self.rng = prob, steps, rng
        self.std = (steer_std, throttle_std)
        self.left, self.action = 0, None

    def next(self, autopilot_action) -> np.ndarray | None:
        if self.left == 0 and self.prob > 0 and self.rng.random() < self.prob:
            self.left = self.steps
            self.action = perturb_action(autopilot_action, self.rng, *self.std)
        if self.left == 0:
            return None
        self.left -= 1
        return self.action.copy()


def nearest_segment(points, position) -> tuple[int, np.ndarray, float]:
    """Closest point of a closed polyline (N, 2) to position (2,): its index i, the unit direction of
    the segment i -> i+1 (wrapping around) and the distance to point i."""
    points = np.asarray(points, dtype=np.float64)
    dists = np.linalg.norm(points - np.asarray(position, dtype=np.float64)[:2], axis=1)
    i = int(np.argmin(dists))
    return i, unit(points[(i + 1) % len(points)] - points[i]), float(dists[i])
