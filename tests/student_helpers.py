"""What the vid2act and hybrid tests share (tests/test_vid2act.py, tests/test_hybrid.py): the fast run settings,
the module-scoped real data and tiny teachers (each test module builds its own), and run helpers."""
import json

import pytest

from conftest import collect_random, pretrain_cfg, train_run
from teacher.pretrain import Pretrainer

FAST = ["preset=quick_dmc", "env.action_repeat=2", "env.episode_frames=40", "trainer.warmup=40", "model.ac.horizon=4", "trainer.batch_size=4",
        "trainer.batch_length=8", "trainer.train_ratio=32", "trainer.eval_every=1000000",
        "trainer.final_eval_episodes=1", "trainer.log_every=20", "logger.wandb=disabled", "logger.progress=false",
        "method.action_replay.batch=4", "method.action_replay.length=6", "method.action_replay.units=32",
        "method.distill.units=32"]
MIXTURE_STEPS = 600   # pretraining updates of the trained mixture teacher (~3 min on 2 cores)
MATCH_FRAMES = 800    # student frames of the matching-source run (150 updates)
GSA_FAST = ["method.retrieval.queries=2", "method.retrieval.k=3", "method.bc.steps=4", "method.bc.batch=8",
            "method.schedule.duration=200"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    collect_random(root, tasks=("cartpole_balance", "walker_walk"), episodes=3, frames=40)
    return root


@pytest.fixture(scope="module")
def mixture(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("mixture")
    Pretrainer(pretrain_cfg(data, run, "kind=mixture", "steps=2", "eval_every=2"), run).run()
    return run / "teacher.pt"


@pytest.fixture(scope="module")
def generalist(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("generalist")
    Pretrainer(pretrain_cfg(data, run, "steps=2", "eval_every=2"), run).run()
    return run / "teacher.pt"


def run(tmp_path, *overrides):
    return train_run(tmp_path, *FAST, *overrides)


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def component(trainer):
    """The run's distillation part (frozen teacher, source domains, distiller)."""
    return trainer.artifacts["distillation"]


def replay(trainer):
    """The run's action-replay part (the VAE), or None when it is switched off."""
    return trainer.artifacts.get("action_replay")
