"""CARLA suite ("carla"): Vid2Act's first-person driving (paper 5.5) against a real CARLA server.

Owns the connection (one clear error when no server answers), the server launcher (CarlaUE4.sh
-RenderOffScreen -carla-rpc-port=P in its own process group; killed at exit, on SIGTERM/SIGHUP, on a
failed start, and by a guard process when the launching process dies, even by SIGKILL) and the env:
synchronous mode at 20 FPS (fixed_delta_seconds 0.05), ego vehicle.audi.a2, 30 Traffic-Manager
autopilot cars (TM synchronous), a front RGB camera (64x64, fov 60, x=1.6, z=1.7), a collision
sensor, actions [steer, throttle_brake], action repeat 4, 1000 frames (250 agent steps). Reward and
termination are envs/driving_rules.py: per frame v_ego . u_lane * 0.05 - 1e-4 impulse - 1 |steer|
(u_lane: forward vector of the driving-lane waypoint under the car); terminal off a driving lane
("off_road") or below stuck_speed for stuck_seconds ("stuck").
Tasks: town04 TARGET (Iso-Dream's highway start: lane 1-4 at x = 1.5 + 3.5 lane, y = 0, heading of
the lane; traffic within 60 m), town01-03 SOURCES (random spawn points). Collection (autopilot=true,
configs/env/carla_source.yaml): the TM autopilot drives, the agent's action is ignored, and
driving_rules.NoiseBursts takes over for short bursts with a noisy copy of the autopilot's action;
obs["log_action"] (padded) is the action really executed (mean of the per-frame controls): store it.
One env per server. The carla client package is imported lazily (the module imports without it).
"""
from __future__ import annotations

import atexit
import contextlib
import functools
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from envs import driving_rules as rules
from envs.base import EnvSpec, TaskInfo, did_you_mean, make_obs, unpad_action

TOWNS = {"town01": ("Town01", "source"), "town02": ("Town02", "source"), "town03": ("Town03", "source"),
         "town04": ("Town04", "target")}
DEFAULTS = dict(host="localhost", port=2000, tm_port=8000, carla_path=None, server_args=[], start_timeout=180.0,
                client_timeout=20.0, action_repeat=4, image_size=64, episode_frames=1000, fps=20, vehicles=30,
                ego="vehicle.audi.a2", fov=60, collision_cost=1e-4, steer_cost=1.0, stuck_speed=0.1, stuck_seconds=5.0,
                autopilot=False, noise_prob=0.1, noise_steps=3, steer_noise=0.3, throttle_noise=0.3)


class CarlaUnavailable(RuntimeError):
    """No CARLA server answers at host:port (and none may be launched)."""


def no_server_message(host: str, port: int, detail: str = "") -> str:
    return (f"CARLA: no simulator server answers at {host}:{port}{' (' + detail + ')' if detail else ''}. "
            f"Start one (CARLA 0.9.16 server, carla-simulator/carla releases) with "
            f"`./CarlaUE4.sh -RenderOffScreen -carla-rpc-port={port}` and set env.host/env.port to it, or set "
            f"env.carla_path=/path/to/CarlaUE4.sh to let us launch it.")


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _carla():
    try:
        import carla  # noqa: PLC0415 (optional client, imported only when an env is built)
    except ImportError as err:
        raise ImportError("the CARLA suite needs the client package: pip install carla==0.9.16") from err
    return carla


def connect(host: str, port: int, timeout: float = 20.0):
    """A carla.Client that answered get_server_version(), or CarlaUnavailable saying what to do."""
    if not port_open(host, port, min(timeout, 2.0)):
        raise CarlaUnavailable(no_server_message(host, port, "connection refused"))
    client = _carla().Client(host, port)
    try:
        client.set_timeout(timeout)
        client.get_server_version()
    except RuntimeError as err:
        raise CarlaUnavailable(no_server_message(host, port, str(err))) from err
    return client


# ---- server launcher: the guard waits for EOF on its stdin, which only this process holds open, so
# when this process dies in any way (SIGKILL included) it kills the server's process group.
_GUARD = ("import os, signal, sys\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
          "if sys.stdin.buffer.read() != b'stop': os.killpg(int(sys.argv[1]), signal.SIGKILL)\n")
_LIVE: list["CarlaServer"] = []
_PREVIOUS: dict[int, object] = {}  # signal -> the handler ours replaced


def _stop_all() -> None:
    for server in list(_LIVE):
        server.stop()


def _on_signal(signum, frame) -> None:
    _stop_all()
    if callable(previous := _PREVIOUS.get(signum)):
        return previous(signum, frame)
    signal.signal(signum, signal.SIG_DFL)  # default action: die of the same signal
    os.kill(os.getpid(), signum)


@functools.cache
def _install_cleanup(main_thread: bool) -> None:
    atexit.register(_stop_all)
    for signum in (signal.SIGTERM, signal.SIGHUP) if main_thread else ():  # handlers: main thread only
        if (previous := signal.getsignal(signum)) is not signal.SIG_IGN:
            _PREVIOUS[signum] = previous
            signal.signal(signum, _on_signal)


class CarlaServer:
    """A CARLA server process started from CarlaUE4.sh; start() returns once host:port listens."""

    def __init__(self, path: str, port: int, host: str = "localhost", timeout: float = 180.0, args=(), log_path=None):
        self.path, self.port, self.host, self.timeout, self.args = str(path), int(port), host, timeout, list(args)
        self.log_path = log_path or os.path.join(tempfile.gettempdir(), f"carla-server-{port}.log")
        self.proc = self.guard = None

    def start(self) -> "CarlaServer":
        if not (os.path.isfile(self.path) and os.access(self.path, os.X_OK)):
            raise FileNotFoundError(f"env.carla_path={self.path!r} is not an executable CarlaUE4.sh")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([self.path, "-RenderOffScreen", f"-carla-rpc-port={self.port}", *self.args],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)  # own process group = pid
        self.guard = subprocess.Popen([sys.executable, "-c", _GUARD, str(self.proc.pid)], stdin=subprocess.PIPE,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        _install_cleanup(threading.current_thread() is threading.main_thread())
        _LIVE.append(self)
        deadline = time.monotonic() + self.timeout
        while not port_open(self.host, self.port, 0.5):
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.stop()
                raise RuntimeError(f"CARLA server {self.path} exited with code {code} before listening on "
                                   f"{self.host}:{self.port}; its log:\n{self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"CARLA server {self.path} did not listen on {self.host}:{self.port} within "
                                   f"{self.timeout:.0f} s and was killed; raise env.start_timeout or read "
                                   f"{self.log_path}:\n{self._log_tail()}")
            time.sleep(0.2)
        return self

    def _log_tail(self, lines: int = 20) -> str:
        with open(self.log_path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM to the whole process group, SIGKILL to what is left after 5 s; idempotent."""
        if self.proc is None:
            return
        for signum in (signal.SIGTERM, signal.SIGKILL):  # SIGKILL also reaches stragglers of the group
            try:
                os.killpg(self.proc.pid, signum)
            except ProcessLookupError:
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5.0)
        if self.guard is not None:
            try:
                self.guard.communicate(b"stop", timeout=5.0)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                self.guard.kill()
        self.proc = self.guard = None
        _LIVE[:] = [server for server in _LIVE if server is not self]


def ensure_server(cfg: dict) -> CarlaServer | None:
    """Nothing if host:port answers; else launch env.carla_path, or raise CarlaUnavailable."""
    cfg = {**DEFAULTS, **{k: v for k, v in cfg.items() if v is not None}}
    if port_open(cfg["host"], cfg["port"]):
        return None
    if not cfg["carla_path"]:
        raise CarlaUnavailable(no_server_message(cfg["host"], cfg["port"], "connection refused"))
    return CarlaServer(cfg["carla_path"], cfg["port"], cfg["host"], cfg["start_timeout"], cfg["server_args"]).start()


# ---- env ------------------------------------------------------------------------------------------
class CarlaEnv:
    """One CARLA town behind the env contract of envs/base.py (see the module docstring)."""

    def __init__(self, task: str, seed: int, max_action_dim: int, cfg: dict | None = None):
        check_task(task)
        c = self.cfg = {**DEFAULTS, **{k: v for k, v in (cfg or {}).items() if v is not None}}
        self.spec = EnvSpec(suite="carla", task=task, embodiment="car", native_action_dim=2,
                            max_action_dim=max_action_dim, episode_length=c["episode_frames"] // c["action_repeat"],
                            action_repeat=c["action_repeat"], image_size=c["image_size"])
        ensure_server(c)
        carla = self.carla = _carla()
        self.client = connect(c["host"], c["port"], c["client_timeout"])
        self.world = self.client.get_world()
        if not self.world.get_map().name.endswith(TOWNS[task][0]):
            self.world = self.client.load_world(TOWNS[task][0])
        self.map = self.world.get_map()
        settings = self.world.get_settings()
        settings.synchronous_mode, settings.fixed_delta_seconds = True, 1.0 / c["fps"]
        self.world.apply_settings(settings)
        self.tm = self.client.get_trafficmanager(c["tm_port"])
        self.tm.set_synchronous_mode(True)
        self.tm.set_random_device_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.noise = rules.NoiseBursts(c["noise_prob"], c["noise_steps"], c["steer_noise"], c["throttle_noise"],
                                       self.rng)
        self.actors, self.traffic, self._done, self.driving_lane = [], [], True, carla.LaneType.Driving

    # -- scene
    def _highway_spot(self, y: float):
        """Iso-Dream's Town04 start: lane 1-4 at x = 1.5 + 3.5 lane, placed on that lane's waypoint
        (its heading), or None where this map version has no driving lane there."""
        carla, x = self.carla, 1.5 + 3.5 * int(self.rng.integers(1, 5))
        wp = self.map.get_waypoint(carla.Location(x=x, y=float(y)), project_to_road=False, lane_type=self.driving_lane)
        loc = wp and wp.transform.location
        return wp and carla.Transform(carla.Location(x=loc.x, y=loc.y, z=loc.z + 0.3), wp.transform.rotation)

    def _starts(self, n: int, ego=None) -> list:
        """Spawn transforms: n traffic cars around the ego (ego given), or ego candidates, best first."""
        starts = [t for t in self.map.get_spawn_points() if ego is None or t.location.distance(ego.location) > 10]
        self.rng.shuffle(starts)
        if self.spec.task == "town04":  # the highway stretch first; random spawn points as a fallback
            ys = [0.0] if ego is None else [y for y in self.rng.uniform(-60, 60, 3 * n) if abs(y) > 8]
            starts = [t for t in map(self._highway_spot, ys) if t is not None] + starts
        return starts[:n]

    def _destroy(self) -> None:
        for sensor in self.actors[1:]:
            sensor.stop()
        ids = [a.id for a in reversed(self.actors)] + self.traffic  # sensors before their car
        self.client.apply_batch_sync([self.carla.command.DestroyActor(i) for i in ids], False)
        self.actors, self.traffic = [], []

    def reset(self) -> dict:
        carla, c, world = self.carla, self.cfg, self.world
        self._destroy()
        lib = world.get_blueprint_library()
        ego_bp = lib.find(c["ego"])
        ego_bp.set_attribute("role_name", "hero")
        ego, start = next(((a, t) for t in self._starts(10 ** 6) if (a := world.try_spawn_actor(ego_bp, t))),
                          (None, None))  # (a freshly spawned actor reports its transform only after a tick)
        if ego is None:
            raise RuntimeError(f"CARLA {self.spec.task}: could not spawn {c['ego']} at any spawn point")
        cam_bp = lib.find("sensor.camera.rgb")
        for key in ("image_size_x", "image_size_y", "fov"):
            cam_bp.set_attribute(key, str(c["fov" if key == "fov" else "image_size"]))
        camera = world.spawn_actor(cam_bp, carla.Transform(carla.Location(x=1.6, z=1.7)), attach_to=ego)
        collision = world.spawn_actor(lib.find("sensor.other.collision"), carla.Transform(), attach_to=ego)
        self.actors, self.autopilot_on = [ego, camera, collision], bool(c["autopilot"])
        self.images, self.impulses = queue.Queue(), []
        camera.listen(self.images.put)
        collision.listen(lambda e: self.impulses.append((e.normal_impulse.x, e.normal_impulse.y, e.normal_impulse.z)))
        cars = [b for b in lib.filter("vehicle.*") if int(b.get_attribute("number_of_wheels")) == 4]
        batch = [carla.command.SpawnActor(cars[int(self.rng.integers(len(cars)))], t).then(
            carla.command.SetAutopilot(carla.command.FutureActor, True, c["tm_port"]))
            for t in self._starts(c["vehicles"], start)]
        self.traffic = [r.actor_id for r in self.client.apply_batch_sync(batch, False) if not r.error]
        self.score = rules.EpisodeScore(1.0 / c["fps"], c["episode_frames"], c["collision_cost"], c["steer_cost"],
                                        c["stuck_speed"], c["stuck_seconds"])
        ego.set_autopilot(self.autopilot_on, c["tm_port"])
        for _ in range(2):  # let the sensors attach and the cars settle
            image, _ = self._tick()
        k = ego.get_control()  # the autopilot's first action (zeros without autopilot): noise bursts start from it
        self.last_auto = rules.merge_throttle_brake(k.steer, k.throttle, k.brake)
        self.impulses.clear()
        self._done = False
        return make_obs(image, is_first=True)

    def _tick(self):
        frame = self.world.tick(self.cfg["client_timeout"])
        while True:
            image = self.images.get(timeout=self.cfg["client_timeout"])
            if image.frame >= frame:
                break
        pixels = np.frombuffer(image.raw_data, np.uint8).reshape(image.height, image.width, 4)[:, :, 2::-1]
        ego = self.actors[0]
        v, loc = ego.get_velocity(), ego.get_location()
        waypoint = self.map.get_waypoint(loc, project_to_road=False, lane_type=self.driving_lane)
        lane = waypoint or self.map.get_waypoint(loc, project_to_road=True, lane_type=self.driving_lane)
        forward = lane.transform.get_forward_vector()
        impulses, self.impulses = self.impulses, []
        return pixels, dict(velocity=(v.x, v.y, v.z), road_dir=(forward.x, forward.y, forward.z),
                            on_road=waypoint is not None, impulse=rules.collision_impulse_magnitude(impulses))

    def _drive(self, action):
        """Applies the agent's action, or in autopilot mode a noise burst (returned) or nothing (None:
        the autopilot drives)."""
        ego, port = self.actors[0], self.cfg["tm_port"]
        if self.cfg["autopilot"]:
            action = self.noise.next(self.last_auto)
            if (action is None) != self.autopilot_on:
                self.autopilot_on = action is None
                ego.set_autopilot(self.autopilot_on, port)
        if action is not None:
            steer, throttle, brake = rules.split_throttle_brake(*action)
            ego.apply_control(self.carla.VehicleControl(throttle=throttle, steer=steer, brake=brake))
        return action

    def step(self, padded_action) -> dict:
        if self._done:
            raise RuntimeError(f"{self.spec.task}: step() after the episode ended; call reset()")
        action = unpad_action(self.spec, padded_action)
        reward, reason, executed, impulse = 0.0, None, [], 0.0
        override = self._drive(action)
        for _ in range(self.spec.action_repeat):
            image, s = self._tick()
            control = self.actors[0].get_control()  # what was really applied during this tick
            executed.append(rules.merge_throttle_brake(control.steer, control.throttle, control.brake))
            r, reason = self.score.frame(s["velocity"], s["road_dir"][:2], s["impulse"], executed[-1][0], s["on_road"])
            reward, impulse = reward + r, impulse + s["impulse"]
            if reason is not None or self.score.time_up:
                break
        if self.cfg["autopilot"] and override is None:
            self.last_auto = executed[-1]
        padded = np.zeros(self.spec.max_action_dim, np.float32)
        padded[:2] = np.mean(executed, axis=0) if self.cfg["autopilot"] else action
        self._done = reason is not None or self.score.time_up
        return make_obs(image, reward=reward, is_last=self._done, is_terminal=reason is not None,
                        action=padded, speed=self.score.speeds[-1], off_road=reason == "off_road",
                        stuck=reason == "stuck", collision_impulse=impulse)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):  # RuntimeError: the server went away, nothing to clean
            self._destroy()
            settings = self.world.get_settings()
            settings.synchronous_mode, settings.fixed_delta_seconds = False, None
            self.world.apply_settings(settings)
            self.tm.set_synchronous_mode(False)


# ---- suite interface (envs/__init__.py) ----------------------------------------------------------
def prepare(env_cfg: dict) -> None:
    """Launches the server (env.carla_path) in the parent, so it outlives workers; they connect."""
    ensure_server(env_cfg)


def check_task(task: str) -> None:
    """ValueError with the valid names (and the closest) unless `task` is a town; no server is contacted."""
    if task not in TOWNS:
        raise ValueError(f"unknown carla task {task!r}.{did_you_mean(task, TOWNS)} Valid tasks: {', '.join(TOWNS)}")


def make(env_cfg: dict, task: str, seed: int, max_action_dim: int) -> CarlaEnv:
    return CarlaEnv(task, seed, max_action_dim, {k: v for k, v in env_cfg.items() if k != "suite"})


def tasks(env_cfg: dict) -> list[TaskInfo]:
    repeat = env_cfg.get("action_repeat") or DEFAULTS["action_repeat"]
    length = (env_cfg.get("episode_frames") or DEFAULTS["episode_frames"]) // repeat
    return [TaskInfo("carla", n, "car", 2, length, repeat, note) for n, (_, note) in TOWNS.items()]
