"""`python -m transfer.report.replay_stats` on a run directory written by hand (replay episodes and metrics.jsonl
in transfer.run's layout), with the expected numbers worked out by hand. reward-fit needs a trained
checkpoint and is not run here; only its error for a run without one is checked."""
import json

import numpy as np
import pytest

from transfer.report import replay_stats


def write_episode(path, actions):
    """One replay episode: a reset row (action 0) and then the given actions, 12 padded dims wide."""
    steps = len(actions) + 1
    action = np.zeros((steps, 12), np.float32)
    action[1:, :actions.shape[1]] = actions
    action[1:, 4:] = 1.0                          # padded dims: must not count
    np.savez(path, action=action, image=np.zeros((steps, 2, 2, 3), np.uint8),
             reward=np.zeros(steps, np.float32), is_first=np.arange(steps) == 0)


@pytest.fixture
def run(tmp_path):
    run = tmp_path / "hybrid-s1"
    (run / "replay").mkdir(parents=True)
    for i in range(10):                           # episodes 0-9: the same action at every step
        write_episode(run / "replay" / f"ep{i:02d}.npz", np.tile([0.5, -0.5, 1.0, 0.0], (99, 1)))
    write_episode(run / "replay" / "ep04x.npz", np.ones((50, 4)))   # under 99 actions: left out
    alternating = np.zeros((100, 4))              # episode 10: dim 0 alternates +-1, dim 1 is 0.96
    alternating[:, 0] = np.where(np.arange(100) % 2, 1.0, -1.0)
    alternating[:, 1] = 0.96
    write_episode(run / "replay" / "ep10.npz", alternating)
    rows = [{"step": 1000, "train/success": 1.0, "train/return": 100.0},
            {"step": 2000, "eval/return": 7.0},    # not a training episode
            {"step": 3000, "train/success": 0.0, "train/return": 50.0},
            {"step": 4000, "train/success": 1.0, "train/return": 150.0},   # a block's end belongs to it
            {"step": 9000, "train/success": 0.0, "train/return": 10.0},
            {"step": 21000, "train/success": 1.0, "train/return": 999.0}]  # after 20k: not shown
    (run / "metrics.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n\n")
    return run


def test_actions_per_block_of_ten_episodes(run, capsys):
    assert replay_stats.main(["actions", str(run)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "hybrid-s1",
        # 990 actions of (0.5, -0.5, 1.0, 0.0): std 0, one dim of four above 0.95
        "   episodes   0-  9  mean [ 0.5 -0.5  1.   0. ]  std [0. 0. 0. 0.]  saturated 0.25",
        # 100 actions: dim 0 mean 0, std 1; dims 0 and 1 saturated (200 of 400 values)
        "   episodes  10- 19  mean [0.   0.96 0.   0.  ]  std [1. 0. 0. 0.]  saturated 0.50"]


def test_training_success_per_4k_block(run, capsys):
    assert replay_stats.main(["training-success", str(run)]) == 0
    head, line = capsys.readouterr().out.splitlines()
    assert head.split() == ["run", "0-4k", "4-8k", "8-12k", "12-16k", "16-20k"]
    # 0-4k: steps 1000, 3000, 4000: success 2/3, return (100 + 50 + 150) / 3 = 100; 8-12k: step 9000 alone
    assert line == f"{'hybrid-s1':28s}{'0.67 /   100':>14s}{'-':>14s}{'0.00 /    10':>14s}{'-':>14s}{'-':>14s}"
    assert replay_stats.training_blocks(run) == [(pytest.approx(2 / 3), 100.0), None, (0.0, 10.0), None, None]


@pytest.mark.parametrize("command", ["actions", "training-success", "reward-fit"])
def test_a_missing_run_directory_fails_with_one_line(tmp_path, capsys, command):
    missing = tmp_path / "no-such-run"
    assert replay_stats.main([command, str(missing)]) == 1
    out = capsys.readouterr()
    assert out.out == "" and len(out.err.splitlines()) == 1 and str(missing) in out.err


def test_a_run_without_the_files_a_command_reads_is_named(run, capsys):
    assert replay_stats.main(["reward-fit", str(run)]) == 1    # replay/ and metrics.jsonl, no checkpoint
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and str(run) in err and "checkpoint.pt" in err and "hydra/config.yaml" in err
