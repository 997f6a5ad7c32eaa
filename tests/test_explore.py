"""Reward-free exploration (ensemble disagreement) through the one training loop, and its import."""
import json
import types

import numpy as np
import pytest
import torch

from conftest import compose
from teacher.data.dataset import OfflineDataset
from teacher.data.writer import DatasetWriter
from teacher.data.explore import Disagreement
from transfer.explore import collect
from transfer.build import build_trainer

FAST = ["env.action_repeat=2", "env.episode_frames=60", "trainer.warmup=40", "model.ac.horizon=4", "trainer.batch_size=2",
        "trainer.batch_length=8", "trainer.train_ratio=16", "trainer.eval_every=1000000",
        "trainer.final_eval_episodes=1", "trainer.log_every=20", "logger.wandb=disabled", "logger.progress=false"]


def test_disagreement_reward_is_ensemble_variance():
    torch.manual_seed(0)
    module = Disagreement(feat_dim=6, act_dim=2, target_dim=4, heads=3, layers=1, units=8)
    feats, actions = torch.randn(5, 7, 6), torch.randn(4, 7, 2)       # (H+1, N, F), (H, N, A)
    reward = module.reward(None, feats, actions)
    assert reward.shape == (4, 7) and (reward >= 0).all()
    preds = module.predict(feats[:-1], actions)                        # (K, H, N, S*C)
    torch.testing.assert_close(reward, preds.var(0).mean(-1))
    for head in module.heads[1:]:                                      # identical heads: no disagreement
        head.load_state_dict(module.heads[0].state_dict())
    assert module.reward(None, feats, actions).abs().max() < 1e-10


def test_explore_collect_trains_and_imports_episodes(tmp_path):
    args = types.SimpleNamespace(tasks=["cartpole_balance"], episodes=2, seed=0, dataset=str(tmp_path),
                                 env_config=["action_repeat=2", "episode_frames=60"],
                                 run_config=[o for o in FAST if not o.startswith("env.")])
    with DatasetWriter(tmp_path) as writer:
        collect(args, writer)
    run = tmp_path / "explore_runs" / "cartpole_balance-seed0"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "train/loss_disagreement" in r]
    assert train and all(np.isfinite(r["train/loss_disagreement"]) for r in train)
    data = OfflineDataset(tmp_path)
    assert len(data) == 2 and data.transitions == 60
    assert {m["policy"] for m in data.meta} == {"explore"} and {m["action_dim"] for m in data.meta} == {1}
    first = data.read(0)
    assert first["image"].shape == (31, 64, 64, 3) and first["action"].shape == (31, 1)
    assert np.all(first["action"][0] == 0)
    with DatasetWriter(tmp_path) as writer:  # a second call imports nothing twice
        collect(args, writer)
    assert len(OfflineDataset(tmp_path)) == 2


def test_collect_points_explore_to_its_command(capsys):
    from teacher.data.collect import main
    with pytest.raises(SystemExit):
        main(["--dataset", "x", "--suite", "dmc", "--tasks", "walker_walk", "--policy", "explore"])
    assert "python -m transfer.explore" in capsys.readouterr().err


def test_explore_method_uses_the_intrinsic_reward(tmp_path):
    cfg = compose("preset=quick_dmc", "method=explore", *FAST, "trainer.steps=60", f"run_dir={tmp_path}")
    trainer = build_trainer(cfg, tmp_path)
    try:
        assert trainer.agent.ac.reward_fn is not None
        assert "disagreement" in dict(trainer.agent.wm.named_children())
        ids = {id(p) for p in trainer.agent.wm_opt.params}
        assert all(id(p) in ids for p in trainer.agent.wm.disagreement.parameters())  # trained with the world model
    finally:
        trainer.close()
    with pytest.raises(ValueError, match="unknown method component"):
        build_trainer(compose("preset=quick_dmc", "method=explore", "method.components=[nope]", f"run_dir={tmp_path}/x"),
                tmp_path / "x")


def test_replay_episodes_are_stitched_across_checkpoint_files(tmp_path):
    """Checkpoints split an episode over replay files: it is imported once, whole; a running one is not."""
    from teacher.data.explore import replay_episodes
    (tmp_path / "replay").mkdir()

    def save(name, flags):  # flags: "f" first, "l" last, "." middle
        n = len(flags)
        np.savez(tmp_path / "replay" / name, image=np.full((n, 2, 2, 3), len(name), np.uint8),
                 action=np.ones((n, 3), np.float32), reward=np.arange(n, dtype=np.float32),
                 is_first=np.array([c == "f" for c in flags]), is_last=np.array([c == "l" for c in flags]),
                 is_terminal=np.zeros(n, bool))
    save("s00-0000000-4.npz", "f..l")
    save("s00-0000001-3.npz", "f..")     # checkpoint in the middle of episode 2
    save("s00-0000002-5.npz", ".lf..")   # its end, then episode 3 still running
    episodes = list(replay_episodes(tmp_path))
    assert [job.split("/")[-1] for job, _ in episodes] == ["s00-0000000-4.npz:0", "s00-0000001-3.npz:0"]
    assert [len(ep["reward"]) for _, ep in episodes] == [4, 5]
    second = episodes[1][1]
    assert second["is_first"][0] and second["is_last"][-1] and second["is_first"].sum() == 1
