"""Headless OpenGL backend selection for MuJoCo rendering (owns MUJOCO_GL / PYOPENGL_PLATFORM).

``setup_gl()`` must run before dm_control or mujoco's renderer is imported. It respects a
user-set MUJOCO_GL; otherwise it probes "egl" then "osmesa", each in a subprocess that imports
mujoco and renders a tiny model offscreen (so a broken driver cannot crash the caller), and
caches the first working backend in the environment variables, which child processes inherit:
the probe runs once per process tree. Importing this module does not import mujoco.
"""
from __future__ import annotations

import os
import subprocess
import sys

BACKENDS = ("egl", "osmesa")

_PROBE = """
import mujoco, numpy as np
model = mujoco.MjModel.from_xml_string(
    "<mujoco><worldbody><light pos='0 0 2'/><geom type='sphere' size='0.5' rgba='1 0 0 1'/>"
    "</worldbody></mujoco>")
data = mujoco.MjData(model)
mujoco.mj_forward(model, data)
renderer = mujoco.Renderer(model, 8, 8)
renderer.update_scene(data)
image = renderer.render()
assert image.shape == (8, 8, 3), image.shape
renderer.close()
print("ok")
"""


def probe(backend: str, timeout: float = 60.0) -> str | None:
    """Renders a tiny model with ``backend`` in a subprocess; returns None or the error text."""
    env = dict(os.environ, MUJOCO_GL=backend, PYOPENGL_PLATFORM=backend)
    try:
        result = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                                text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"probe timed out after {timeout:.0f} s"
    if result.returncode == 0 and "ok" in result.stdout:
        return None
    lines = (result.stderr or result.stdout).strip().splitlines()
    return " | ".join(lines[-3:]) or f"exit code {result.returncode}"


def setup_gl() -> str:
    """Returns the MuJoCo GL backend in use, choosing and caching one if MUJOCO_GL is unset."""
    chosen = os.environ.get("MUJOCO_GL", "").strip()
    if chosen:
        return chosen
    errors = []
    for backend in BACKENDS:
        error = probe(backend)
        if error is None:
            os.environ["MUJOCO_GL"] = backend
            os.environ["PYOPENGL_PLATFORM"] = backend
            return backend
        errors.append(f"{backend}: {error}")
    raise RuntimeError(
        "No headless OpenGL backend works for MuJoCo. Install one: apt-get install libegl1 "
        "libegl-mesa0 libgl1-mesa-dri libopengl0 (EGL) or libosmesa6 (OSMesa), or set MUJOCO_GL.\n"
        + "\n".join(errors))
