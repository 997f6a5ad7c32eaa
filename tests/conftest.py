import os
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def compose(*overrides):
    """Hydra config exactly as `python -m transfer.run` would build it."""
    from hydra import compose as hydra_compose, initialize_config_dir
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        return hydra_compose("config", overrides=list(overrides))


@pytest.fixture
def tiny_cfg():
    return compose("model=tiny")


def check_padding_ignored(envs, steps, rng, scale=1.0):
    """Two envs built alike: one gets padded actions with junk in the padded dims, the other the
    same actions masked. Resets, rewards and images must agree (the padding never reaches the sim)."""
    import numpy as np
    firsts = [env.reset() for env in envs]
    np.testing.assert_array_equal(firsts[0]["image"], firsts[1]["image"])
    size = envs[0].spec.max_action_dim
    for _ in range(steps):
        noisy = (rng.uniform(-1, 1, size) * scale).astype(np.float32)
        clean, dirty = envs[0].step(noisy * envs[0].spec.action_mask), envs[1].step(noisy)
        assert clean["reward"] == dirty["reward"]
        np.testing.assert_array_equal(clean["image"], dirty["image"])
