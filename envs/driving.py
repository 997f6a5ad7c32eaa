"""Local pixel driving suite ("driving"): CARLA-like transfer without a CARLA server.

Owns the scenario table (four SOURCE scenarios and one held-out TARGET, mirroring CARLA Town01-03 ->
Town04 highway), the two simulator backends (highway-env, gymnasium CarRacing-v3), the 64x64
rendering and the episode bookkeeping. Reward and termination come from envs/driving_rules.py, the
same pure functions as the CARLA suite, so every scenario is scored like Vid2Act's CARLA task:

  per frame (dt = 1 / sim_hz seconds of simulated time):
    r = v_ego . u_lane * dt  -  collision_cost * impulse  -  steer_cost * (dt / 0.05) * |steer|
  u_lane: direction of the lane (highway-env) or of the track centre line (CarRacing) at the car;
  impulse: vehicle_mass * speed on the frame a highway-env crash happens (0 in CarRacing);
  steer_cost is per 0.05 s of simulated time, i.e. per CARLA frame. Rewards sum over action_repeat.
  Terminal (is_terminal=True): off the road ("off_road"), a crash ("crash", highway-env freezes
  crashed cars), or slower than stuck_speed m/s for stuck_seconds ("stuck"). The time limit
  (episode_frames) only sets is_last.

Scenarios (task names), all with native actions [steer, throttle_brake] in [-1, 1], embodiment "car"
(+steer turns right; throttle_brake > 0 accelerates, < 0 brakes, never reverses):
  highway    TARGET  highway-env HighwayEnv: straight 4-lane highway, 20 IDM cars, start at 25 m/s,
                     speed cap 40 m/s; top-down view following the car. Off-road = beyond the outer lanes.
  racetrack  source  highway-env RacetrackEnv: closed 2-lane circuit of tight curves, a few slow cars.
  roundabout source  highway-env RoundaboutEnv: approach road, 2-lane roundabout and exits with
                     traffic; driving off the end of an exit road is off-road (episode over).
  merge      source  highway-env MergeGenericEnv: 2-lane highway with a merging ramp and traffic;
                     the road ends ~1 km on, off-road after its end.
  carracing  source  gymnasium CarRacing-v3: random closed track, car-centred rotated view (HUD
                     cropped), starts at rest; off-road = no wheel on a road tile. Progress in Box2D
                     units (the car is ~4.6 long: about metres). Laps do not end the episode.
highway-env: steer 1 = STEER_DEG of the scenario (10 deg on highway and merge, 45 elsewhere), acceleration +-5 m/s^2, one simulation tick per
frame (policy_frequency = simulation_frequency = sim_hz), drawn at 2x and box-filtered down.
CarRacing: 50 / sim_hz physics steps of 0.02 s per frame, rendered once per agent step.
"""
from __future__ import annotations

import importlib
import os

import numpy as np

from envs import driving_rules as rules
from envs.base import EnvSpec, TaskInfo, did_you_mean, make_obs, unpad_action

# name -> (note, backend, class, extra simulator config, max speed m/s, view width m, ego x position)
SCENARIOS = {
    "highway": ("target", "highway", "highway_env.envs.highway_env:HighwayEnv",
                dict(lanes_count=4, vehicles_count=20, ego_spacing=2, vehicles_density=1), 40.0, 50.0, 0.3),
    "racetrack": ("source", "highway", "highway_env.envs.racetrack_env:RacetrackEnv",
                  dict(other_vehicles=4), 20.0, 40.0, 0.5),
    "roundabout": ("source", "highway", "highway_env.envs.roundabout_env:RoundaboutEnv", {}, 20.0, 50.0, 0.5),
    "merge": ("source", "highway", "highway_env.envs.merge_env:MergeGenericEnv",
              dict(lanes_count=2, vehicles_count=8, after_merge_length=700), 40.0, 50.0, 0.3),
    "carracing": ("source", "carracing", None, {}, None, None, None),
}
TARGET = "highway"
# Full steering lock (degrees) per highway-env scenario: highway-env's default 45 deg at 25-40 m/s
# throws a randomly acting car off a straight highway within a few steps; curvy tracks need more.
STEER_DEG = {"highway": 10.0, "merge": 10.0, "racetrack": 45.0, "roundabout": 45.0}
EGO_COLOR = (50, 200, 0)
SUPERSAMPLE = 2  # highway-env draws at 2x and averages down: 1-pixel outlines would blacken cars
WHEELBASE_CARRACING = 3.24  # front-to-rear axle distance of the CarRacing car (gymnasium car_dynamics)
DEFAULTS = dict(action_repeat=2, image_size=64, episode_frames=1000, sim_hz=10, collision_cost=1e-4,
                steer_cost=1.0, vehicle_mass=1500.0, stuck_speed=0.1, stuck_seconds=5.0)


def _wrap(angle: float) -> float:
    """An angle in radians wrapped to [-pi, pi)."""
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


def _load(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


class _HighwayBackend:
    """A highway-env scene stepped one tick at a time; its own reward/termination hooks are
    silenced (the suite computes both from the vehicle state)."""

    def __init__(self, scenario: str, image_size: int, sim_hz: int, vehicle_mass: float):
        os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")  # "dummy" renders black frames
        _, _, path, extra, max_speed, view_m, ego_x = SCENARIOS[scenario]
        base = _load(path)
        quiet = type(f"Quiet{base.__name__}", (base,), dict(
            _reward=lambda self, action: 0.0, _is_terminated=lambda self: False,
            _is_truncated=lambda self: False, _info=lambda self, obs, action=None: {}))
        config = dict(extra, observation={"type": "AttributesObservation", "attributes": []},
                      action={"type": "ContinuousAction", "longitudinal": True, "lateral": True,
                              "speed_range": [0.0, max_speed],
                              "steering_range": [-np.deg2rad(STEER_DEG[scenario]), np.deg2rad(STEER_DEG[scenario])]},
                      simulation_frequency=sim_hz, policy_frequency=sim_hz, duration=10 ** 9,
                      screen_width=image_size * SUPERSAMPLE, screen_height=image_size * SUPERSAMPLE,
                      scaling=image_size * SUPERSAMPLE / view_m,
                      centering_position=[ego_x, 0.5], offscreen_rendering=True)
        self.env = quiet(config=config, render_mode="rgb_array")
        self.mass, self.scenario = vehicle_mass, scenario

    def reset(self, seed):
        self.env.reset(seed=seed)
        self.env.vehicle.color = EGO_COLOR  # a plain (continuous-action) Vehicle is drawn yellow otherwise
        self._was_crashed = False

    def tick(self, steer: float, throttle_brake: float) -> dict:
        ego = self.env.vehicle
        speed_before = float(ego.speed)
        self.env.step(np.array([throttle_brake, steer]))  # highway-env order: [acceleration, steering]
        ego = self.env.vehicle
        s, _ = ego.lane.local_coordinates(ego.position)
        heading = ego.lane.heading_at(s)
        crashed = bool(ego.crashed)
        impulse = rules.crash_impulse(self.mass, speed_before) if crashed and not self._was_crashed else 0.0
        self._was_crashed = crashed
        return dict(velocity=np.asarray(ego.velocity, np.float64), road_dir=(np.cos(heading), np.sin(heading)),
                    on_road=bool(ego.on_road), crashed=crashed, impulse=impulse)

    def render(self) -> np.ndarray:
        from PIL import Image  # noqa: PLC0415
        return np.asarray(Image.fromarray(self.env.render()).reduce(SUPERSAMPLE))  # box-filter down

    def view(self, lookahead: float) -> dict:
        """Read-only ego state for scripted drivers (DrivingEnv.driver_view)."""
        ego, network = self.env.vehicle, self.env.road.network
        index, lane = ego.lane_index, ego.lane
        s, lateral = lane.local_coordinates(ego.position)
        ahead_index, ahead_lane, ahead_s = index, lane, s + lookahead
        for _ in range(4):  # follow the road onto the next lanes (highway-env picks the closest one)
            if ahead_s <= ahead_lane.length:
                break
            next_index = network.next_lane(ahead_index, position=ego.position)
            if next_index == ahead_index:
                break  # the road ends: the lane is extrapolated
            end = ahead_lane.position(ahead_lane.length, 0.0)  # lanes may join with a gap (roundabout):
            ahead_s -= ahead_lane.length                          # continue from the end's projection
            ahead_index, ahead_lane = next_index, network.get_lane(next_index)
            ahead_s += ahead_lane.local_coordinates(end)[0]
        target = ahead_lane.position(ahead_s, 0.0) - ego.position
        front, _ = self.env.road.neighbour_vehicles(ego, index)
        gap = np.inf if front is None else float(lane.local_coordinates(front.position)[0] - s - ego.LENGTH)
        # highway-env's y axis points down: angles grow clockwise, i.e. to the right (+steer)
        return dict(speed=float(ego.speed), target_angle=_wrap(np.arctan2(target[1], target[0]) - ego.heading),
                    heading_error=_wrap(ego.heading - lane.heading_at(s)), lateral=float(lateral), gap=gap,
                    gap_speed=np.inf if front is None else float(front.speed), wheelbase=float(ego.LENGTH),
                    steer_rad=float(np.deg2rad(STEER_DEG[self.scenario])))

    def close(self):
        self.env.close()


class _CarRacingBackend:
    """gymnasium CarRacing-v3 driven through its car and Box2D world, so that intermediate frames
    skip the (12 ms) render; reset uses the public reset(seed=...)."""

    def __init__(self, image_size: int, sim_hz: int):
        os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")
        from gymnasium.envs.box2d import car_racing  # noqa: PLC0415 (Box2D + pygame load lazily)
        if car_racing.FPS % sim_hz:
            raise ValueError(f"carracing: sim_hz must divide {car_racing.FPS}, got {sim_hz}")
        self.fps, self.substeps, self.image_size = car_racing.FPS, car_racing.FPS // sim_hz, image_size
        self.env = car_racing.CarRacing(continuous=True)

    def reset(self, seed):
        self.env.reset(seed=seed)
        self.env.t = 1.0  # skip the zoom-in animation of the first simulated second (t only sets zoom)
        self.points = np.array([t[2:4] for t in self.env.track], np.float64)

    def tick(self, steer: float, throttle_brake: float) -> dict:
        steer, gas, brake = rules.split_throttle_brake(steer, throttle_brake)
        car, world = self.env.car, self.env.world
        for _ in range(self.substeps):  # the controls are re-applied per physics step, as in step()
            car.steer(-steer)  # CarRacing negates action[0] the same way (Box2D turns the other way)
            car.gas(gas)  # ramps the wheels' gas by at most 0.1 per call
            car.brake(brake)
            car.step(1.0 / self.fps)
            world.Step(1.0 / self.fps, 6 * 30, 2 * 30)
            self.env.t += 1.0 / self.fps
        velocity = np.array(car.hull.linearVelocity, np.float64)
        _, road_dir, _ = rules.nearest_segment(self.points, np.array(car.hull.position))
        on_road = any(len(wheel.tiles) > 0 for wheel in car.wheels)
        return dict(velocity=velocity, road_dir=road_dir, on_road=on_road, crashed=False, impulse=0.0)

    def render(self) -> np.ndarray:
        from PIL import Image  # noqa: PLC0415
        frame = self.env._render("state_pixels")[:84, 6:90]  # drop the 12-pixel HUD at the bottom
        return np.asarray(Image.fromarray(frame).resize((self.image_size,) * 2, Image.BILINEAR))

    def view(self, lookahead: float) -> dict:
        """Read-only ego state for scripted drivers (DrivingEnv.driver_view); the track centre line
        (self.points, in driving order) is the lane."""
        hull = self.env.car.hull
        position, velocity = np.array(hull.position, np.float64), np.array(hull.linearVelocity, np.float64)
        heading = hull.angle + np.pi / 2  # the car's forward axis is its local +y; Box2D angles grow to the left
        i, road_dir, _ = rules.nearest_segment(self.points, position)
        j, walked = i, 0.0
        while walked < lookahead and j < i + len(self.points):  # walk the centre line ahead
            walked += float(np.linalg.norm(self.points[(j + 1) % len(self.points)] - self.points[j % len(self.points)]))
            j += 1
        target = self.points[j % len(self.points)] - position
        offset = position - self.points[i]
        forward = np.array([np.cos(heading), np.sin(heading)])
        return dict(speed=float(velocity @ forward), target_angle=-_wrap(np.arctan2(target[1], target[0]) - heading),
                    heading_error=-_wrap(heading - np.arctan2(road_dir[1], road_dir[0])),
                    lateral=float(offset @ np.array([road_dir[1], -road_dir[0]])), gap=np.inf, gap_speed=np.inf,
                    wheelbase=WHEELBASE_CARRACING, steer_rad=1.0)

    def close(self):
        self.env.close()


class DrivingEnv:
    """One scenario of the local driving suite behind the env contract of envs/base.py."""

    def __init__(self, task: str, seed: int, max_action_dim: int, action_repeat: int = 2,
                 image_size: int = 64, episode_frames: int = 1000, sim_hz: int = 10,
                 collision_cost: float = 1e-4, steer_cost: float = 1.0, vehicle_mass: float = 1500.0,
                 stuck_speed: float = 0.1, stuck_seconds: float = 5.0):
        check_task(task)
        if max_action_dim < 2:
            raise ValueError(f"{task}: native action dim 2 > max_action_dim {max_action_dim}")
        if SCENARIOS[task][1] == "carracing":
            self._sim = _CarRacingBackend(image_size, sim_hz)
        else:
            self._sim = _HighwayBackend(task, image_size, sim_hz, vehicle_mass)
        self.spec = EnvSpec(suite="driving", task=task, embodiment="car", native_action_dim=2,
                            max_action_dim=max_action_dim, episode_length=episode_frames // action_repeat,
                            action_repeat=action_repeat, image_size=image_size)
        self.dt = 1.0 / sim_hz
        self._score_args = (self.dt, episode_frames, collision_cost, steer_cost, stuck_speed, stuck_seconds, True)
        self._seed = seed  # the first reset uses it; later resets continue the simulator's RNG
        self._done = True

    def reset(self) -> dict:
        self._sim.reset(self._seed)
        self._seed = None
        self._score = rules.EpisodeScore(*self._score_args)  # end_on_crash: highway-env freezes crashed cars
        self._done = False
        return make_obs(self._sim.render(), is_first=True)

    def step(self, padded_action) -> dict:
        if self._done:
            raise RuntimeError(f"{self.spec.task}: step() after the episode ended; call reset()")
        steer, throttle_brake = unpad_action(self.spec, padded_action)
        reward = distance = 0.0
        for _ in range(self.spec.action_repeat):
            state = self._sim.tick(steer, throttle_brake)
            distance += rules.progress(state["velocity"], state["road_dir"], self.dt)
            r, reason = self._score.frame(state["velocity"], state["road_dir"], state["impulse"], steer,
                                          state["on_road"], state["crashed"])
            reward += r
            if reason is not None or self._score.time_up:
                break
        self._done = reason is not None or self._score.time_up
        return make_obs(self._sim.render(), reward=reward, is_last=self._done, is_terminal=reason is not None,
                        speed=self._score.speeds[-1], distance=distance, off_road=reason == "off_road",
                        crash=reason == "crash", stuck=reason == "stuck")

    def driver_view(self, lookahead: float = 10.0) -> dict:
        """Read-only ego state for scripted drivers (teacher/data/policies.py), not part of the observation:
        speed (m/s along the car's heading), target_angle (rad from the heading to the lane centre
        `lookahead` m ahead, + = to the right, the +steer side), heading_error (rad, + = turned right of
        the lane), lateral (m from the lane centre, + = right), gap (m to the car ahead in the lane, inf
        if none) and gap_speed (its speed), wheelbase (m), steer_rad (wheel angle of steer = 1, rad)."""
        if not hasattr(self, "_score"):
            raise RuntimeError(f"{self.spec.task}: driver_view() before the first reset()")
        return self._sim.view(float(lookahead))

    def close(self) -> None:
        self._sim.close()


# ---- suite interface (envs/__init__.py) ----------------------------------------------------------
def prepare(env_cfg: dict) -> None:
    """Workers inherit the SDL driver: "offscreen" renders real pixels headless, "dummy" black ones."""
    os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")


def check_task(task: str) -> None:
    """ValueError with the valid names (and the closest) unless `task` is a scenario; no simulator starts."""
    if task not in SCENARIOS:
        raise ValueError(f"unknown driving task {task!r}.{did_you_mean(task, SCENARIOS)} Valid tasks: {', '.join(SCENARIOS)}")


def make(env_cfg: dict, task: str, seed: int, max_action_dim: int) -> DrivingEnv:
    kwargs = {k: env_cfg[k] for k in DEFAULTS if env_cfg.get(k) is not None}
    return DrivingEnv(task, seed, max_action_dim, **kwargs)


def tasks(env_cfg: dict) -> list[TaskInfo]:
    """Sources first, then the held-out target; no simulator is started."""
    repeat = env_cfg.get("action_repeat") or DEFAULTS["action_repeat"]
    length = (env_cfg.get("episode_frames") or DEFAULTS["episode_frames"]) // repeat
    names = [n for n in SCENARIOS if n != TARGET] + [TARGET]
    return [TaskInfo("driving", n, "car", 2, length, repeat, SCENARIOS[n][0]) for n in names]
