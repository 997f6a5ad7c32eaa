"""Imported once by the env workers' fork server (envs/workers.py), so that every worker forks with the
simulators' Python modules loaded instead of importing them again. Nothing here may fail: whatever does not
import is left for the worker to import, and to report, itself. dm_control picks its GL backend when it is
imported, so the MuJoCo suites are preloaded only where the parent has chosen one (envs.gl.setup_gl) before the
server started."""
import contextlib
import importlib
import os

with contextlib.suppress(Exception):
    import numpy  # noqa: F401

if os.environ.get("MUJOCO_GL"):
    for _name in ("dm_control.suite", "metaworld"):
        with contextlib.suppress(Exception):
            importlib.import_module(_name)
