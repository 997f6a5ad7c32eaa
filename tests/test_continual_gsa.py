"""GSA's continual variant (tests/test_continual.py has the sequence runner, PackNet and resume): a sequence keeps
its world model, replay and offline data from task to task, rehearses, and evaluates every earlier task."""
import json

import numpy as np
import pytest

from conftest import collect_random, pretrain_cfg
from core import checkpoint
from test_continual import TASKS, rows, sequence_file
from transfer import continual


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny generalist teacher on real cartpole random data."""
    data = tmp_path_factory.mktemp("data")
    collect_random(data, tasks=(TASKS[0],), episodes=3, frames=40)
    run = tmp_path_factory.mktemp("teacher")
    from teacher.pretrain import Pretrainer
    Pretrainer(pretrain_cfg(data, run, "steps=2", "eval_every=2"), run).run()
    return run / "teacher.pt"


def test_gsa_sequence_keeps_its_replay_and_rehearses(tmp_path, teacher, capsys):
    seq, root = sequence_file(tmp_path, teacher), tmp_path / "root"
    assert continual.main([str(seq), "--root", str(root), "--variants", "gsa", "--set", "frames=120"]) == 0
    chain = root / "seq" / "gsa" / "seed0"
    second = checkpoint.load(chain / f"1-{TASKS[1]}" / "checkpoint.pt")
    first = checkpoint.load(chain / f"0-{TASKS[0]}" / "checkpoint.pt")
    adopted = [f for f in second["replay_files"] if f.startswith("p")]
    assert len(adopted) == len(first["replay_files"]) and second["replay_files"][:len(adopted)] == adopted
    assert (chain / f"1-{TASKS[1]}" / "retrieved.json").exists()
    assert rows(chain / "forgetting.jsonl") == [(0, 0), (1, 0), (1, 1)]
    rows_ = [json.loads(x) for x in (chain / "forgetting.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["return"]) and r["episodes"] == 1 and r["packnet_mask"] is None for r in rows_)
