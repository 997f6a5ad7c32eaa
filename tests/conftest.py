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
