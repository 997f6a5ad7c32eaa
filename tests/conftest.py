import os
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n N: N worker processes share the cores, one thread each
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch
    torch.set_num_threads(1)


# Test files, heaviest first (seconds per file in one `pytest -n auto --dist loadfile --durations=0` run on 2
# AVX2 cores, 2026-12-02: test_vid2act 203, test_continual 155, test_sweep 119, test_registry 116, test_pretrain
# 107, test_gsa 104, test_training 103, test_launchers 87, ... 13 s). pytest-xdist hands whole files to its workers
# in collection order; its default order (files with the most tests first) left test_vid2act, the longest, for
# last, so one worker ran it alone for minutes at the end. The other files keep their order, after these.
HEAVIEST_FIRST = ("test_vid2act.py", "test_continual.py", "test_sweep.py", "test_registry.py", "test_pretrain.py",
                  "test_gsa.py", "test_training.py", "test_launchers.py", "test_continual_gsa.py", "test_hybrid.py",
                  "test_noncurated.py", "test_diagnose.py", "test_prior_seeds.py", "test_collect.py",
                  "test_drqv2.py", "test_vae_prior.py", "test_video.py", "test_retrieval_scale.py", "test_dmc_tasks.py",
                  "test_metaworld.py", "test_episodes.py", "test_envs.py", "test_pessimism.py")


def pytest_configure(config):
    if getattr(config.option, "loadscopereorder", None):
        config.option.loadscopereorder = False  # pytest-xdist: keep the order of pytest_collection_modifyitems


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(HEAVIEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: tests keep their order in a file


def compose(*overrides):
    """Hydra config exactly as `python -m transfer.run` would build it."""
    from hydra import compose as hydra_compose, initialize_config_dir
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        return hydra_compose("config", overrides=list(overrides))


def train_run(run_dir, *overrides):
    """The Trainer `python -m transfer.run OVERRIDES run_dir=RUN_DIR` builds, run to its budget and closed."""
    from transfer.build import build_trainer
    trainer = build_trainer(compose(*overrides, f"run_dir={run_dir}"), run_dir)
    try:
        trainer.run()
    finally:
        trainer.close()
    return trainer


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


def pretrain_cfg(dataset, run_dir, *overrides):
    """`python -m teacher.pretrain` config for a tiny, fast pretraining run."""
    from hydra import compose as hydra_compose, initialize_config_dir
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        return hydra_compose("pretrain", overrides=[
            f"dataset={dataset}", f"run_dir={run_dir}", "model=tiny", "batch_size=4", "batch_length=12",
            "workers=0", "heldout=0.25", "eval_batches=2", "openloop.context=4", "openloop.samples=2",
            "logger.wandb=disabled", "logger.progress=false", "device=cpu", *overrides])


def collect_random(root, tasks=("cartpole_balance", "reacher_easy"), episodes=4, frames=60, seed=0, suite="dmc",
                   image_size=64):
    """Real env data from a uniform random policy, collected in-process by `python -m teacher.data.collect`."""
    from teacher.data.collect import main
    main(["--dataset", str(root), "--suite", suite, "--tasks", *tasks, "--policy", "random", "--episodes",
          str(episodes), "--workers", "0", "--seed", str(seed), "--env-config", f"episode_frames={frames}",
          f"image_size={image_size}"])
    return root
