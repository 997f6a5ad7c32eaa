"""Sweeps on Hydra's launchers (configs/launcher): a local joblib multirun of 2 real tiny runs, each in its own
run_dir; rerunning the sweep resumes its runs instead of starting over; the SLURM launcher config composes."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT

from transfer.sweep import finished

TINY = ["preset=quick_dmc", "env.action_repeat=2", "env.episode_frames=60", "trainer.warmup=40", "model.ac.horizon=4", "trainer.batch_size=2",
        "trainer.batch_length=8", "trainer.train_ratio=16", "trainer.eval_every=1000000", "trainer.eval_episodes=1",
        "trainer.final_eval_episodes=1", "logger.wandb=disabled", "logger.progress=false", "trainer.threads=1"]


def transfer_run(cwd, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "transfer.run", *args], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_local_multirun_trains_each_run_in_its_run_dir_and_resumes(tmp_path):
    runs = [tmp_path / "runs" / "dreamer" / f"dmc-cartpole_balance-seed{k}" for k in (0, 1)]
    transfer_run(tmp_path, "-m", "launcher=local", *TINY, "trainer.steps=80", "seed=0,1")
    for run in runs:
        assert finished(run, 80)
        assert (run / "checkpoint.pt").exists() and (run / "hydra" / "config.yaml").exists()
    assert len(list((tmp_path / "runs" / "multirun").glob("*/multirun.yaml"))) == 1  # Hydra's record, nothing else
    before = [(run / "metrics.jsonl").read_bytes() for run in runs]

    transfer_run(tmp_path, "-m", "launcher=local", *TINY, "trainer.steps=80", "seed=0,1")  # same sweep: nothing to do
    assert [(run / "metrics.jsonl").read_bytes() for run in runs] == before
    for run in runs:
        assert "already finished at step 80" in (run / "run.log").read_text()

    transfer_run(tmp_path, "-m", "launcher=local", *TINY, "trainer.steps=120", "seed=0,1")  # a larger budget
    for run, old in zip(runs, before):
        assert (run / "metrics.jsonl").read_bytes().startswith(old)  # continued, not restarted
        assert finished(run, 120) and "resumed from" in (run / "run.log").read_text()


def test_slurm_launcher_config_composes(tmp_path):
    out = transfer_run(tmp_path, "launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=60",
                       "--cfg", "hydra")
    text = out.stdout
    assert "_target_: hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in text
    assert "partition: gpu" in text and "timeout_min: 60" in text and "array_parallelism: 64" in text
    assert "subdir: ${abspath:${run_dir}}" in text  # every run in its own run_dir (the local test runs it)


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "experiment").glob("*.yaml")), ids=lambda p: p.stem)
def test_experiment_grids_compose(path):
    """Every method of each paper's experiment config composes, and every task of its grid is known to its env."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from envs import check_env
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        grid = compose("config", overrides=[f"+experiment={path.stem}"], return_hydra_config=True).hydra.sweeper.params
        assert {"method", "task", "seed"} <= set(grid) and grid.seed == "0,1,2"
        for method in grid.method.split(","):
            cfg = compose("config", overrides=[f"+experiment={path.stem}", f"method={method}", "teacher=/t.pt"])
            assert cfg.method.name == method and cfg.trainer.steps >= 150000
            env = OmegaConf.to_container(cfg.env, resolve=True)
            for task in grid.task.split(","):
                check_env(env, task)
