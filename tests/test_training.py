"""The real training loop on a real DMC env with the tiny model: one iteration in-process, and a
SIGKILL / resume cycle through `python -m transfer.run` exactly as a user runs it."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import ROOT, compose
from core import checkpoint
from transfer.build import build_trainer

FAST = ["preset=quick_dmc", "env.action_repeat=2", "env.episode_frames=60", "trainer.warmup=40", "model.ac.horizon=4", "trainer.batch_size=2",
        "trainer.batch_length=8", "trainer.train_ratio=16", "trainer.eval_every=1000000",
        "trainer.eval_episodes=1", "trainer.final_eval_episodes=1", "trainer.log_every=20"]


def test_one_training_iteration_on_dmc(tmp_path):
    cfg = compose(*FAST, "trainer.steps=120", "logger.wandb=offline", "trainer.eval_policy=mode", f"run_dir={tmp_path}")
    trainer = build_trainer(cfg, tmp_path)
    try:
        before = [p.detach().clone() for p in trainer.agent.parameters()]
        result = trainer.run()
    finally:
        trainer.close()
    assert trainer.step == 120
    # 16 / (2 * 8) = 1 update per agent step once step >= 40 frames: at steps 40, 42, ..., 120
    assert trainer.agent.updates == 41
    # episodes of 30 agent steps: 31 observations each (reset + 30); the loop stops before storing
    # the last observation of episode 2
    assert len(trainer.replay) == 61
    assert trainer.episodes == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.agent.parameters()))
    assert np.isfinite(result["final/return"]) and result["final/episodes"] == 1
    assert np.isfinite(result["final/imagined_return"])  # the model's return for the actor from the same frames
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "train/wm_loss" in r]
    assert train and all(np.isfinite(r["train/wm_loss"]) for r in train)
    assert any("train/return" in r for r in rows)      # episodes of 30 agent steps finished
    assert list((tmp_path / "tensorboard").glob("events.*"))
    assert (tmp_path / "wandb").is_dir()
    assert len(list((tmp_path / "replay").glob("*.npz"))) >= 2
    assert result["final/sampled"] == 0.0
    # where the wall time went (benchmarks.throughput reads the last perf row): every section, shares summing to 1
    perf = [r for r in rows if "perf/time_other" in r][-1]
    shares = {k: v for k, v in perf.items() if k.startswith("perf/time_")}
    assert {"acting", "env_wait", "sample", "world_model", "actor_critic", "evaluation", "checkpoint",
            "other"} <= {k[len("perf/time_"):] for k in shares}
    assert all(v >= 0 for v in shares.values()) and sum(shares.values()) == pytest.approx(1.0)
    assert shares["perf/time_world_model"] > 0 and shares["perf/time_actor_critic"] > 0
    assert perf["perf/peak_rss_mb"] > 100 and perf["perf/worker_peak_rss_mb"] > 10  # torch alone takes > 100 MiB

    # evaluated again from its checkpoint with sampled actions (DreamerV3's protocol): a new final row
    from omegaconf import OmegaConf
    from transfer.evaluate import main as evaluate_main
    from transfer.report.runs import read_run
    (tmp_path / "hydra").mkdir()
    OmegaConf.save(cfg, tmp_path / "hydra" / "config.yaml")  # as transfer.run's Hydra writes it
    assert evaluate_main([str(tmp_path), "--policy", "sample", "--episodes", "1"]) == 0
    finals = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if "final/return" in line]
    assert [(r["step"], r["final/sampled"]) for r in finals] == [(120, 0.0), (120, 1.0)]
    assert read_run(tmp_path).score("return")[0] == finals[-1]["final/return"]  # the report scores the latest
    # a run made before trainer.eval_policy existed rebuilds with the behaviour it had (the actor's mean)
    from omegaconf import open_dict
    from transfer.evaluate import rebuild
    with open_dict(cfg):
        del cfg.trainer["eval_policy"]
    OmegaConf.save(cfg, tmp_path / "hydra" / "config.yaml")
    old = rebuild(tmp_path)
    try:
        assert old.cfg.trainer.eval_policy == "mode" and old.step == 120 and old.cfg.logger.wandb == "disabled"
    finally:
        old.close()


def test_unknown_eval_policy_fails_clearly(tmp_path):
    with pytest.raises(ValueError, match="trainer.eval_policy='greedy': use one of sample, mode"):
        build_trainer(compose(*FAST, "trainer.eval_policy=greedy"), tmp_path)


def run_cli(args, run_dir, **kw):
    env = dict(os.environ, PYTHONUNBUFFERED="1", HYDRA_FULL_ERROR="1")
    return subprocess.Popen([sys.executable, "-m", "transfer.run", *args, f"run_dir={run_dir}", "logger.wandb=disabled"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **kw)


def test_sigkill_then_resume(tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    proc = run_cli([*FAST, "trainer.steps=100000", "trainer.checkpoint_every=100"], tmp_path)
    deadline = time.time() + 240
    while not ckpt.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "no checkpoint within 240 s"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the trainer and its env workers, with no chance to clean up
    proc.wait()
    state = checkpoint.load(ckpt)
    step, files, updates = state["step"], state["replay_files"], state["agent"]["updates"]
    assert step >= 100 and updates > 0
    replay_steps = sum(int(f.split("-")[-1].split(".")[0]) for f in files)
    assert replay_steps >= step // 2  # one stored step per policy call (action repeat 2)

    target = step + 200
    out = run_cli([*FAST, f"trainer.steps={target}"], tmp_path).communicate(timeout=300)[0]
    m = re.search(r"resumed from .* at step (\d+) \(replay (\d+) steps, (\d+) updates\)", out)
    assert m, out
    assert (int(m[1]), int(m[2]), int(m[3])) == (step, replay_steps, updates)
    final = checkpoint.load(ckpt)
    assert final["step"] == target
    assert final["replay_files"][: len(files)] == files  # the old data is kept, new data appended
    assert sum(int(f.split("-")[-1].split(".")[0]) for f in final["replay_files"]) >= replay_steps + 100
    assert final["agent"]["updates"] > updates
    from core.logger import without_redone
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows) >= target
    assert [r["step"] for r in rows if "run/resumed" in r] == [step]   # readers drop what the killed run redid
    episodes = [r["step"] for r in without_redone(rows) if "train/return" in r]
    assert episodes and episodes == sorted(set(episodes))   # each training episode once, in order (envs=1)

    # a finished run is not retrained
    out = run_cli([*FAST, f"trainer.steps={target}"], tmp_path).communicate(timeout=120)[0]
    assert "already finished" in out


def test_unknown_config_key_fails_clearly(tmp_path):
    out = run_cli(["trainer.stepz=5"], tmp_path).communicate(timeout=60)[0]
    assert "Could not override 'trainer.stepz'" in out


def test_presets_compose():
    quick = compose("preset=quick")
    assert (quick.env.suite, quick.task, quick.model.wm.deter) == ("metaworld", "drawer-close", 128)
    dmc = compose("preset=quick_dmc", "method=gsa")
    assert (dmc.env.suite, dmc.task, dmc.env.action_repeat, dmc.method.schedule.duration) == ("dmc", "cartpole_balance", 8, 8000)
    assert compose("preset=quick", "env=dmc", "task=cartpole_balance").env.suite == "dmc"  # the command line wins
    user = compose("method=dreamer", "env=dmc", "task=walker_walk")
    assert user.model.wm.deter == 1024 and user.trainer.steps == 500000
    assert compose("preset=quick", "model=small").model.wm.deter == 1024


def test_teacher_methods_without_teacher_run_the_embedded_default():
    from transfer.run import embedded_default
    for method in ("gsa", "finetune", "hybrid", "vid2act"):
        argv = [f"method={method}", "seed=1"]
        assert embedded_default(argv) == ["preset=quick", *argv]
        quick = compose(*embedded_default(argv))
        assert quick.model.wm.deter == 128 and quick.trainer.steps == 12000
    for argv in (["method=gsa", "teacher=t.pt"], ["method=gsa", "preset=none"], ["method=dreamer"], [],
                 ["method=gsa", "default_teacher.enabled=false"], ["method=nope"]):
        assert embedded_default(argv) == argv


def test_episode_stats_success_any_and_final():
    from transfer.loop import EpisodeStats

    def obs(first=False, last=False, reward=0.0, success=0.0):
        return dict(is_first=first, is_last=last, reward=np.float32(reward), log_success=success)

    stats = EpisodeStats(2)
    assert stats.update([obs(first=True), obs(first=True)]) == []
    assert stats.update([obs(reward=1, success=1), obs(reward=2)]) == []
    done = stats.update([obs(reward=1, last=True), obs(reward=3, success=1, last=True)])
    assert done == [dict(env=0, ret=2.0, length=2, success=1.0, success_final=0.0),
                    dict(env=1, ret=5.0, length=2, success=1.0, success_final=1.0)]
    stats.update([obs(first=True), obs(first=True)])  # a new episode forgets the old success
    assert stats.update([obs(last=True), obs(last=True)])[0]["success"] == 0.0


def test_first_run_and_rerun_with_cached_default_teacher_start_alike(tmp_path):
    """The first run builds the embedded default teacher in-process (drawing from the global generators);
    a rerun reads it from the cache. With the same seed both must start from the same weights and make
    the same first updates."""
    small = [f"default_teacher.dir={tmp_path / 'teacher'}", "default_teacher.dmc_tasks=[cartpole_balance]",
             "default_teacher.dmc_episodes=1", "default_teacher.dmc_frames=40", "default_teacher.metaworld_tasks=[reach]",
             "default_teacher.metaworld_noise=[0.5]", "default_teacher.metaworld_episodes=1", "default_teacher.workers=0",
             "default_teacher.steps=2", "default_teacher.batch_size=2", "default_teacher.batch_length=8"]

    def run(name):
        cfg = compose(*FAST, "method=finetune", *small, "trainer.steps=44", "logger.wandb=disabled",
                      "logger.progress=false", f"run_dir={tmp_path / name}")
        trainer = build_trainer(cfg, tmp_path / name)
        built = [p.detach().clone() for p in trainer.agent.parameters()]
        try:
            trainer.run()
        finally:
            trainer.close()
        return built, list(trainer.agent.parameters()), trainer.agent.updates

    first, cached = run("first"), run("rerun")
    assert (tmp_path / "teacher" / "pretrain" / "teacher.pt").exists()
    assert first[2] == cached[2] == 3   # updates at steps 40, 42 and 44
    assert all(torch.equal(a, b) for a, b in zip(first[0], cached[0]))   # same initial weights
    assert all(torch.equal(a, b) for a, b in zip(first[1], cached[1]))   # same first updates


def test_overlapped_env_stepping_gives_the_serial_loops_results(tmp_path):
    """trainer.overlap: the workers step the next action while the updates run. Same seed, same replay content
    (every stored step), the same updates and the same final weights as the serial loop."""
    def run(name, overlap):
        cfg = compose(*FAST, "trainer.steps=100", "trainer.envs=2", f"trainer.overlap={overlap}", "logger.wandb=disabled",
                      "logger.progress=false", f"run_dir={tmp_path / name}")
        trainer = build_trainer(cfg, tmp_path / name)
        try:
            trainer.run()
        finally:
            trainer.close()
        steps = [dict(np.load(tmp_path / name / "replay" / f)) for f in trainer.replay.files]
        return steps, [p.detach().clone() for p in trainer.agent.parameters()], trainer.agent.updates

    serial, overlapped = run("serial", False), run("overlap", True)
    assert serial[2] == overlapped[2] > 0
    assert len(serial[0]) == len(overlapped[0]) > 0
    for a, b in zip(serial[0], overlapped[0]):
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert all(torch.equal(a, b) for a, b in zip(serial[1], overlapped[1]))


def test_imagined_return_sums_the_predicted_rewards_over_the_steps(tiny_cfg):
    from core.agent import Agent
    agent = Agent({"image": (64, 64, 3)}, np.ones(6, np.float32), tiny_cfg.model, torch.device("cpu"))
    start = {k: v.expand(3, *v.shape[1:]) for k, v in agent.initial_state(1).items()}   # (3, ...) start states
    seen = []
    agent.wm.predict_reward = lambda feat: seen.append(feat.shape) or torch.full(feat.shape[:-1], 0.5)
    assert agent.imagined_return(start, steps=7, samples=2) == pytest.approx(3.5)   # 7 steps x 0.5
    assert seen == [(7, 6, agent.wm.rssm.feat_dim)]                                 # (steps, N * samples, F)
    # sampled=False: the actor acts with its mean, so the rollout's actions are the mean actions of its states
    acted = []
    draw, mode = agent.ac.actor.draw, agent.ac.actor.mode
    agent.ac.actor.draw = lambda *a: acted.append("sample") or draw(*a)
    agent.ac.actor.mode = lambda mean: acted.append("mean") or mode(mean)
    assert agent.imagined_return(start, steps=7, samples=2, sampled=False) == pytest.approx(3.5)
    assert acted == ["mean"] * 7
    agent.imagined_return(start, steps=3, samples=1)
    assert acted[7:] == ["sample"] * 3
