"""`python -m transfer.diagnose`: per-run diagnostics of a real gsa run on Meta-World reach."""
import json
import math

import numpy as np
import pytest

from conftest import collect_random, compose, pretrain_cfg
from teacher.data.collect import main as collect
from teacher.pretrain import Pretrainer
from core import checkpoint
from core.logger import without_redone
from transfer.diagnose import diagnose, from_metrics, own_episodes, policy_fit, replay_episodes
from transfer.build import build_trainer

FAST = ["preset=quick", "trainer.warmup=40", "model.ac.horizon=4", "trainer.batch_size=4", "trainer.batch_length=8", "trainer.train_ratio=32",
        "trainer.eval_every=1000000", "trainer.final_eval_episodes=1", "trainer.log_every=20", "logger.wandb=disabled",
        "logger.progress=false", "method.retrieval.queries=2", "method.bc.steps=4", "method.bc.batch=8",
        "method.schedule.duration=200", "method.retrieval.k=4", "method.shift.every=0"]


@pytest.fixture(scope="module")
def gsa_run(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    collect_random(data, tasks=("cartpole_balance",), episodes=2, frames=40)
    collect_random(data, tasks=("drawer-open",), episodes=1, frames=40, suite="metaworld")
    collect(["--dataset", str(data), "--suite", "metaworld", "--tasks", "reach", "--policy", "expert", "--noise", "0.1",
             "--episodes", "3", "--workers", "0", "--env-config", "episode_frames=100"])
    teacher = tmp_path_factory.mktemp("teacher")
    Pretrainer(pretrain_cfg(data, teacher, "steps=2", "eval_every=2"), teacher).run()
    run = tmp_path_factory.mktemp("run")
    trainer = build_trainer(compose(*FAST, "method=gsa", f"teacher={teacher / 'teacher.pt'}", "task=reach",
                              "env.episode_frames=40", "trainer.steps=120", f"run_dir={run}"), run)
    try:
        trainer.run()
    finally:
        trainer.close()
    return run, data


def test_diagnose_a_gsa_run(gsa_run):
    run, data = gsa_run
    out = diagnose(run, episodes=2)
    assert json.loads((run / "diagnostics.json").read_text()) == out
    assert out["dataset"] == str(data)                       # found through the run's teacher
    assert out["retrieval_trajectories"] == 4 and out["dataset_target_trajectories"] == 3
    assert out["retrieval_target_share"] == 0.75               # the 4 sawyer episodes: 3 of reach, 1 of drawer-open
    assert out["retrieval_embodiment_share"] == 1.0
    assert out["prior_kind"] == "bc" and out["prior_alone_episodes"] == 2
    assert 0.0 <= out["prior_alone_success"] <= out["prior_alone_success_any"] <= 1.0
    assert 0.0 <= out["prior_start_success"] <= 1.0 and math.isfinite(out["prior_start_return"])  # before the run
    assert out["guided_fraction_first"] == 1.0 and 0.0 <= out["guided_fraction_last"] <= 1.0
    assert out["train_episodes"] >= 2
    assert 0 <= out["train_successes_guided"] <= out["train_successes"] <= out["train_episodes"]
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    shares = [r["train/guided"] for r in rows if "train/success" in r]   # every training episode logs its share
    assert len(shares) == out["train_episodes"] and shares[0] == 1.0 and all(0 <= x <= 1 for x in shares)
    assert out["reward_fit_episodes"] == 3 and math.isfinite(out["reward_fit_r2"])
    assert out["reward_fit_real_return"] > 0 and math.isfinite(out["reward_fit_pred_return"])
    assert out["policy_expert_mse"] >= 0 and 0.0 <= out["policy_expert_sign"] <= 1.0   # the run's actor was loaded
    assert len(out["policy_action_mean"]) == len(out["expert_action_mean"]) == 4        # reach: 4 native dims
    assert all(-1.0 <= x <= 1.0 for x in out["policy_action_mean"])
    assert math.isfinite(out["policy_imagined_return"]) and math.isfinite(out["policy_final_return"])
    assert out["policy_final_sampled"] == 1.0   # the default final evaluation samples (DreamerV3's protocol)
    assert 0 <= out["own_episodes"] <= 10     # this short run's episodes are mostly guided


def test_diagnose_a_run_whose_dataset_is_gone(gsa_run, capsys):
    run, data = gsa_run
    moved = data.with_name(data.name + "_moved")
    data.rename(moved)
    try:
        out = diagnose(run, episodes=1)
    finally:
        moved.rename(data)
    assert "dataset" in capsys.readouterr().err and out["dataset"] is None
    assert not {"retrieval_trajectories", "prior_alone_success", "reward_fit_r2"} & set(out)  # need the data
    assert out["train_episodes"] >= 2 and 0 <= out["own_episodes"] <= 10  # the rest is still diagnosed


def test_own_episodes_line_up_with_the_logged_ones(gsa_run):
    """The replay's complete episodes are the logged training episodes, in order (same returns); the model's
    returns for the last ones (filtered, open-loop with their actions, the actor imagined) are finite."""
    run, _ = gsa_run
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [r["train/return"] for r in rows if "train/return" in r]
    episodes = replay_episodes(run)
    assert len(episodes) == len(logged) >= 2                          # 120 frames of 40-frame episodes
    for ep, ret in zip(episodes, logged):
        assert len(ep["reward"]) == 21 and ep["is_first"][0] and not ep["is_first"][1:].any()  # reset + 20 steps
        assert not ep["action"][0].any() and np.isclose(ep["reward"].sum(), ret, rtol=1e-5, atol=1e-4)
    state = checkpoint.load(run / "checkpoint.pt")
    out = own_episodes(run, state, state["config"], sampled=False, n=2, unguided=False)
    assert out["own_episodes"] == 2 and np.isclose(out["own_real_return"], np.mean(logged[-2:]), rtol=1e-5, atol=1e-4)
    assert all(math.isfinite(out[k]) for k in ("own_filtered_return", "own_openloop_return", "own_imagined_return"))
    assert own_episodes(run, state, state["config"], sampled=False, n=2, unguided=False) == out   # seeded rollouts


def test_a_resumed_runs_redone_episodes_count_once(gsa_run, tmp_path):
    """A killed run resumes from its last checkpoint and logs the steps after it again: the training episodes
    (and their successes) of the log are counted once, the resumed run's rows kept."""
    run, _ = gsa_run
    lines = (run / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in lines]
    cut = [r["step"] for r in rows if "train/return" in r][0]  # the killed run's checkpoint: at its 1st episode
    redone = [r for r in rows if r["step"] > cut and "train/return" in r]
    assert redone and all("run/resumed" not in r for r in rows)
    marker = {"step": cut, "run/resumed": 1.0}
    copy = tmp_path / "resumed"
    copy.mkdir()
    resumed = [r for r in rows if "final/return" not in r] + [marker] + redone   # killed before its end, resumed
    (copy / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in resumed))
    assert from_metrics(copy)["train_episodes"] == from_metrics(run)["train_episodes"] >= 2
    kept = without_redone(resumed)
    assert [r for r in kept if "train/return" in r][-len(redone):] == redone   # the resumed ones
    assert without_redone(rows) == rows
    old_log = rows + redone   # a log from before the marker: the step going back is the sign
    assert [r for r in without_redone(old_log) if "train/return" in r] == [r for r in rows if "train/return" in r]


def test_policy_fit_compares_native_dims_where_the_expert_moves():
    expert = [np.array([[0.5, -0.05, 2.0, 0.0], [-0.5, 0.3, -0.2, 0.0]])]     # 2.0 is clipped to 1
    same = policy_fit([np.clip(expert[0], -1, 1)], expert, 3)
    assert same["policy_expert_mse"] == 0.0 and same["policy_expert_sign"] == 1.0
    flipped = policy_fit([-np.clip(expert[0], -1, 1)], expert, 3)
    assert flipped["policy_expert_sign"] == 0.0 and flipped["expert_action_mean"] == [0.0, 0.125, 0.4]


def test_target_embodiment_without_episodes_of_the_task():
    """GSA's hard DMC tasks have no episodes of their own in a dataset (its cheetah data are cheetah_run's):
    the embodiment for retrieval purity comes from the suite."""
    from transfer.diagnose import target_embodiment
    assert target_embodiment({"env": {"suite": "dmc"}, "task": "cheetah_run_hard"}) == "cheetah"
    assert target_embodiment({"env": {"suite": "dmc"}, "task": "walker_walk"}) == "walker"
    assert target_embodiment({"env": {"suite": "metaworld", "action_repeat": 2}, "task": "door-unlock"}) == "sawyer"
