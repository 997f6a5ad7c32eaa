"""CARLA suite: the pure reward/termination rules on synthetic vehicle states, the no-server error,
the server launcher (start, time-out, early exit, cleanup when the parent dies) and a live test.

No CARLA server can run on the project's machines, so the launcher is driven with a stand-in
executable (a Python script that behaves like CarlaUE4.sh: spawns a child in its process group and
listens on -carla-rpc-port, or hangs, or crashes); everything else uses the real carla client.
The live test runs against CARLA_HOST:CARLA_PORT (default localhost:2000) when a server answers.
"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from envs import carla as carla_suite
from envs import driving_rules as rules
from envs import make_env
from envs.list import suite_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- pure rules -----------------------------------------------------------------------------------
def test_vid2act_reward_terms():
    u = (0.0, -1.0)  # Town04 highway runs along -y
    assert rules.vid2act_reward((0.0, -20.0, 0.3), u, 0.0, 0.0) == pytest.approx(1.0)  # 20 m/s * 0.05 s
    assert rules.vid2act_reward((0.0, 20.0), u, 0.0, 0.0) == pytest.approx(-1.0)  # wrong way
    assert rules.vid2act_reward((20.0, 0.0), u, 0.0, 0.0) == pytest.approx(0.0)  # across the road
    assert rules.vid2act_reward((0.0, -20.0), (0.0, -7.0), 0.0, 0.0) == pytest.approx(1.0)  # u normalised
    assert rules.vid2act_reward((0.0, -20.0), u, 5000.0, 0.0) == pytest.approx(0.5)  # 1e-4 per N s
    for steer in (-0.5, 0.5):
        assert rules.vid2act_reward((0.0, -20.0), u, 0.0, steer) == pytest.approx(0.5)  # 1 * |steer|
    assert rules.vid2act_reward((0.0, -20.0), u, 0.0, 0.0, dt=0.1, xi_2=2.0) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="magnitude"):
        rules.vid2act_reward((1.0, 0.0), u, -1.0, 0.0)
    with pytest.raises(ValueError, match="non-zero"):
        rules.progress((1.0, 0.0), (0.0, 0.0), 0.05)
    assert rules.steer_cost_per_frame(1.0, 0.1) == pytest.approx(2.0)  # same cost per second as CARLA
    assert rules.collision_impulse_magnitude([(3.0, 4.0, 0.0), (0.0, 0.0, 2.0)]) == pytest.approx(7.0)
    assert rules.collision_impulse_magnitude([]) == 0.0
    assert rules.crash_impulse(1500.0, -20.0) == pytest.approx(30000.0)


def test_termination_rules():
    assert not rules.is_stuck([0.0] * 4, 0.1, 5)  # too early to tell
    assert rules.is_stuck([9.0] + [0.05] * 5, 0.1, 5)
    assert not rules.is_stuck([0.05] * 4 + [0.2], 0.1, 5)
    assert not rules.is_stuck([0.0] * 10, 0.1, 0)  # window 0 disables it
    assert rules.termination(False, [10.0], 0.1, 5) == "off_road"
    assert rules.termination(True, [10.0], 0.1, 5, crashed=True) is None  # CARLA: collisions only cost
    assert rules.termination(True, [10.0], 0.1, 5, crashed=True, end_on_crash=True) == "crash"
    assert rules.termination(True, [0.0] * 5, 0.1, 5) == "stuck"
    assert rules.termination(True, [5.0] * 5, 0.1, 5) is None
    score = rules.EpisodeScore(dt=0.05, episode_frames=30, stuck_speed=0.1, stuck_seconds=1.0)
    assert score.xi_2 == 1.0 and score.window == 20
    reward, reason = score.frame((20.0, 0.0, 0.0), (1.0, 0.0), 1e4, 0.5, True)
    assert reward == pytest.approx(1.0 - 1.0 - 0.5) and reason is None
    reasons = [score.frame((0.0, 0.0, 0.0), (1.0, 0.0), 0.0, 0.0, True)[1] for _ in range(20)]
    assert reasons == [None] * 19 + ["stuck"] and not score.time_up
    assert score.frame((0.0, 0.0), (1.0, 0.0), 0.0, 0.0, False)[1] == "off_road"


def test_action_mapping_and_noise():
    assert rules.split_throttle_brake(0.3, 0.7) == (0.3, 0.7, 0.0)
    assert rules.split_throttle_brake(-2.0, -0.4) == (-1.0, 0.0, 0.4)
    np.testing.assert_allclose(rules.merge_throttle_brake(0.3, 0.0, 0.4), [0.3, -0.4])
    rng = np.random.default_rng(0)
    assert all(rules.NoiseBursts(0.0, 3, 0.3, 0.3, rng).next([0.1, 0.5]) is None for _ in range(20))
    bursts = rules.NoiseBursts(1.0, 3, 0.3, 0.3, np.random.default_rng(1))
    actions = [bursts.next([0.1, 0.5]) for _ in range(6)]
    assert all(a is not None and np.all(np.abs(a) <= 1.0) for a in actions)
    np.testing.assert_array_equal(actions[0], actions[2])  # one offset per burst
    assert not np.array_equal(actions[2], actions[3])  # a new burst, a new offset
    assert not np.allclose(actions[0], [0.1, 0.5])
    some = rules.NoiseBursts(0.3, 2, 0.3, 0.3, np.random.default_rng(2))
    flags = [some.next([0.0, 0.5]) is not None for _ in range(400)]
    assert 0.2 < np.mean(flags) < 0.6  # bursts of 2 steps, started with p = 0.3 when idle
    np.testing.assert_array_equal(rules.perturb_action([1.0, -1.0], rng, 0.0, 0.0), [1.0, -1.0])
    square = [(0, 0), (10, 0), (10, 10), (0, 10)]
    i, direction, dist = rules.nearest_segment(square, (1.0, 9.0))
    assert i == 3 and dist == pytest.approx(np.sqrt(2)) and np.allclose(direction, [0.0, -1.0])  # wraps


# ---- registry, config, no server ------------------------------------------------------------------
def test_tasks_config_and_lazy_import():
    rows = carla_suite.tasks(suite_config("carla"))
    assert [(r.task, r.note) for r in rows] == [("town01", "source"), ("town02", "source"),
                                                ("town03", "source"), ("town04", "target")]
    assert all((r.native_action_dim, r.episode_length, r.action_repeat, r.embodiment) == (2, 250, 4, "car")
               for r in rows)
    code = "import sys, envs.carla; assert 'carla' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    from conftest import compose
    env = compose("env=carla_source").env
    assert env.suite == "carla" and env.autopilot and env.port == 2000 and env.action_repeat == 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_server_error_names_address_and_command():
    port = free_port()
    cfg = dict(suite="carla", host="127.0.0.1", port=port, client_timeout=1.0)
    for call in (lambda: make_env(cfg, "town04", 0, 6), lambda: carla_suite.prepare(cfg),
                 lambda: carla_suite.connect("127.0.0.1", port, timeout=1.0)):
        with pytest.raises(carla_suite.CarlaUnavailable) as err:
            call()
        message = str(err.value)
        assert f"127.0.0.1:{port}" in message and f"./CarlaUE4.sh -RenderOffScreen -carla-rpc-port={port}" in message
        assert "env.carla_path" in message


def test_silent_server_times_out_with_the_same_error():
    """A port that accepts TCP but never answers RPC: the real carla client times out."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(carla_suite.CarlaUnavailable, match=f"127.0.0.1:{port}.*time-out.*CarlaUE4.sh"):
            carla_suite.connect("127.0.0.1", port, timeout=1.0)
        assert time.monotonic() - start < 10


# ---- launcher with a stand-in server --------------------------------------------------------------
FAKE = """#!{python}
import os, signal, socket, subprocess, sys, time
def graceful(*_):  # records a SIGTERM (a graceful stop), as opposed to the guard's SIGKILL
    open(os.environ["FAKE_PIDS"] + ".term", "w").close()
    sys.exit(0)
signal.signal(signal.SIGTERM, graceful)
port = int([a for a in sys.argv if a.startswith("-carla-rpc-port=")][0].split("=")[1])
assert "-RenderOffScreen" in sys.argv
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # like the UE4 binary
with open(os.environ["FAKE_PIDS"], "w") as f:
    f.write(f"{{os.getpid()}} {{child.pid}}")
mode = os.environ["FAKE_MODE"]
print("fake server starting", mode, flush=True)
if mode == "crash":
    sys.exit(3)
if mode == "listen":
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen()
time.sleep(600)
"""


@pytest.fixture
def fake(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the server logs land here
    path = tmp_path / "CarlaUE4.sh"
    path.write_text(FAKE.format(python=sys.executable))
    path.chmod(0o755)
    monkeypatch.setenv("FAKE_PIDS", str(tmp_path / "pids"))
    monkeypatch.setenv("FAKE_MODE", "listen")
    return path


def fake_pids(tmp_path, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not (tmp_path / "pids").exists() or not (tmp_path / "pids").read_text():
        assert time.monotonic() < deadline, "the stand-in server never started"
        time.sleep(0.05)
    return [int(p) for p in (tmp_path / "pids").read_text().split()]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def wait_dead(pids, timeout=10.0) -> bool:
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not any(alive(p) for p in pids)


def test_launcher_starts_and_stops_the_process_group(fake, tmp_path):
    port = free_port()
    cfg = dict(host="127.0.0.1", port=port, carla_path=str(fake), start_timeout=30.0)
    server = carla_suite.ensure_server(cfg)
    try:
        pids = fake_pids(tmp_path)
        assert carla_suite.port_open("127.0.0.1", port) and all(alive(p) for p in pids)
        assert carla_suite.ensure_server(cfg) is None  # already answering: nothing launched
        guard = server.guard
    finally:
        server.stop()
    assert wait_dead(pids) and not carla_suite.port_open("127.0.0.1", port)
    assert (tmp_path / "pids.term").exists()  # SIGTERM first
    assert guard.returncode == 0 and server.proc is None and server not in carla_suite._LIVE
    server.stop()  # idempotent


def test_launcher_time_out_kills_the_server(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "hang")
    port = free_port()
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=f"127.0.0.1:{port} within 2 s.*start_timeout"):
        carla_suite.CarlaServer(str(fake), port, "127.0.0.1", timeout=1.5).start()
    assert time.monotonic() - start < 15
    assert wait_dead(fake_pids(tmp_path)) and not carla_suite._LIVE


def test_launcher_reports_an_early_exit(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "crash")
    with pytest.raises(RuntimeError, match="exited with code 3(.|\n)*fake server starting crash"):
        carla_suite.CarlaServer(str(fake), free_port(), "127.0.0.1", timeout=30).start()
    assert wait_dead(fake_pids(tmp_path))
    with pytest.raises(FileNotFoundError, match="carla_path"):
        carla_suite.CarlaServer(str(tmp_path / "missing.sh"), free_port()).start()


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_server_dies_with_its_parent(fake, tmp_path, signum):
    """The launching process is killed (SIGKILL: the guard cleans up; SIGTERM: the handler does)."""
    port = free_port()
    code = (f"import time\nfrom envs.carla import CarlaServer\n"
            f"CarlaServer({str(fake)!r}, {port}, '127.0.0.1', 30, (), {str(tmp_path / 'log')!r}).start()\n"
            f"print('ready', flush=True)\ntime.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().strip() == "ready"
        pids = fake_pids(tmp_path)
        assert all(alive(p) for p in pids)
        parent.send_signal(signum)
        assert parent.wait(20) == -signum
        assert wait_dead(pids), "the server outlived its parent"
        assert not carla_suite.port_open("127.0.0.1", port)
        # SIGTERM: our handler stops the server gracefully; SIGKILL: only the guard's SIGKILL is left
        assert (tmp_path / "pids.term").exists() == (signum == signal.SIGTERM)
    finally:
        parent.kill()
        parent.wait()


# ---- live server ----------------------------------------------------------------------------------
def test_live_server_town04():
    host, port = os.environ.get("CARLA_HOST", "localhost"), int(os.environ.get("CARLA_PORT", "2000"))
    if not carla_suite.port_open(host, port):
        pytest.skip(f"no CARLA server at {host}:{port} (start one with "
                    f"./CarlaUE4.sh -RenderOffScreen -carla-rpc-port={port}, or set CARLA_HOST/CARLA_PORT)")
    env = make_env(dict(suite_config("carla"), host=host, port=port, episode_frames=40), "town04", 0, 6)
    try:
        obs = env.reset()
        assert obs["is_first"] and obs["image"].shape == (64, 64, 3) and obs["image"].std() > 5.0
        rewards = []
        for _ in range(10):
            obs = env.step(np.array([0.0, 0.6, 0, 0, 0, 0], np.float32))
            rewards.append(float(obs["reward"]))
            assert obs["image"].dtype == np.uint8 and obs["reward"].dtype == np.float32
            if obs["is_last"]:
                break
        assert obs["is_last"] and not obs["is_terminal"]  # 40 frames = 10 agent steps on the highway
        assert sum(rewards[-3:]) > 0.0  # throttle on the highway: progress along the lane
    finally:
        env.close()
