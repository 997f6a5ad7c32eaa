"""Pessimism in imagination (student/pessimism.py): the penalised reward and the part in the real loop."""
import json

import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose
from student.pessimism import NextStateSpread, Pessimism, Reference, RewardSpread
from transfer.build import build_trainer
from transfer.report.runs import method_label

FAST = ["env.action_repeat=2", "env.episode_frames=60", "trainer.warmup=40", "model.ac.horizon=4", "trainer.batch_size=2",
        "trainer.batch_length=8", "trainer.train_ratio=16", "trainer.eval_every=1000000",
        "trainer.final_eval_episodes=1", "trainer.log_every=20", "logger.wandb=disabled", "logger.progress=false"]


def _agent():
    cfg = compose("preset=quick_dmc", "model.bf16=false")
    from core.agent import Agent
    import numpy as np
    torch.manual_seed(0)
    agent = Agent({"image": (64, 64, 3)}, np.ones(2, bool), cfg.model, torch.device("cpu"))
    with torch.no_grad():  # a reward head that is not constant (its last layer starts at zero)
        for p in agent.wm.reward.parameters():
            p.normal_(0, 0.5)
    return agent


def test_penalised_reward_is_the_reward_minus_the_heads_spread():
    agent = _agent()
    wm, rssm = agent.wm, agent.wm.rssm
    ensemble = NextStateSpread(rssm.feat_dim, 2, rssm.stoch_dim, heads=3, layers=1, units=16)
    feats, actions = torch.randn(5, 7, rssm.feat_dim), torch.rand(4, 7, 2) * 2 - 1  # (H+1, N, F), (H, N, A)
    plain = wm.predict_reward(feats[1:])                                               # (H, N)
    with torch.no_grad():
        reward, metrics = Pessimism(ensemble, scale=2.0).reward(wm, feats, actions)
        guesses = ensemble.predict(feats[:-1], actions)                                # (K, H, N, S*C)
        per_head = torch.stack([wm.predict_reward(torch.cat([feats[1:, :, :rssm.deter], g], -1)) for g in guesses])
    assert reward.shape == (4, 7)
    torch.testing.assert_close(reward, plain - 2.0 * per_head.std(0))
    assert (reward <= plain + 1e-6).all() and (reward < plain - 1e-4).any()
    torch.testing.assert_close(metrics["pessimism_spread"], per_head.std(0).mean())
    for head in ensemble.heads[1:]:  # heads that agree: no penalty
        head.load_state_dict(ensemble.heads[0].state_dict())
    with torch.no_grad():
        torch.testing.assert_close(Pessimism(ensemble, 2.0).reward(wm, feats, actions)[0], plain, atol=1e-5, rtol=0)


def test_reward_ensemble_spread_and_its_loss_on_labelled_rows_only():
    agent = _agent()
    wm, rssm = agent.wm, agent.wm.rssm
    ensemble = RewardSpread(rssm.feat_dim, len(wm.twohot.bins), heads=3, layers=1, units=16)
    feats, actions = torch.randn(5, 7, rssm.feat_dim), torch.zeros(4, 7, 2)
    with torch.no_grad():
        reward, metrics = Pessimism(ensemble, scale=0.5).reward(wm, feats, actions)
        per_head = torch.stack([wm.twohot.decode(h(feats[1:])) for h in ensemble.heads])   # (K, H, N)
    torch.testing.assert_close(reward, wm.predict_reward(feats[1:]) - 0.5 * per_head.std(0))
    assert metrics["pessimism_spread"] > 0  # randomly initialised heads disagree
    post = {"deter": torch.randn(2, 3, rssm.deter), "stoch": torch.zeros(2, 3, rssm.stoch, rssm.classes),
            "logits": torch.zeros(2, 3, rssm.stoch, rssm.classes)}
    batch = {"reward": torch.randn(2, 3), "reward_mask": torch.tensor([[1.0, 1, 1], [0, 0, 0]])}
    loss = ensemble.loss(agent, batch, post)["reward_ensemble"]                          # (B, T)
    assert loss.shape == (2, 3) and (loss[1] == 0).all() and (loss[0] > 0).all()


def test_relative_penalty_is_zero_at_the_data_level_and_counts_typical_rewards_above_it():
    agent = _agent()
    wm, rssm = agent.wm, agent.wm.rssm
    ensemble = RewardSpread(rssm.feat_dim, len(wm.twohot.bins), heads=3, layers=1, units=16)
    part = Pessimism(ensemble, scale=2.0, reference=Reference(decay=0.5))
    b, t = 2, 4
    post = {"deter": torch.randn(b, t, rssm.deter), "stoch": torch.zeros(b, t, rssm.stoch, rssm.classes),
            "logits": torch.zeros(b, t, rssm.stoch, rssm.classes)}
    batch = {"reward": torch.full((b, t), -3.0), "action": torch.zeros(b, t, 2),
             "is_first": torch.zeros(b, t, dtype=torch.bool), "reward_mask": torch.ones(b, t)}
    part.loss(agent, batch, post)  # the first batch sets the yardsticks
    feats = rssm.feat(post).transpose(0, 1)                                                # (T, B, F)
    with torch.no_grad():
        level = ensemble.spread(wm, feats, batch["action"][:, 1:].transpose(0, 1)).mean()
    torch.testing.assert_close(part.reference.spread, level)
    torch.testing.assert_close(part.reference.reward, torch.tensor(3.0))
    part.reference.spread.fill_(1.0)
    spread = torch.tensor([[0.5, 1.0, 1.5, 3.0]])                                          # (H, N)
    torch.testing.assert_close(part.penalty(spread), 2.0 * 3.0 * torch.tensor([[0.0, 0.0, 0.5, 2.0]]))
    batch["reward"] = torch.full((b, t), -1.0)
    part.loss(agent, batch, post)  # the mean of the first 1 / (1 - decay) = 2 batches: (3 + 1) / 2
    torch.testing.assert_close(part.reference.reward, torch.tensor(2.0))
    batch["reward"] = torch.full((b, t), -6.0)
    part.loss(agent, batch, post)  # then the EMA: 0.5 x 2 + 0.5 x 6
    torch.testing.assert_close(part.reference.reward, torch.tensor(4.0))


def test_the_penalty_sends_gradients_to_the_actions_but_not_to_the_frozen_model():
    from core.actor_critic import frozen
    agent = _agent()
    wm, rssm = agent.wm, agent.wm.rssm
    ensemble = agent.attach("pessimism", NextStateSpread(rssm.feat_dim, 2, rssm.stoch_dim, 3, 1, 16))
    feats, actions = torch.randn(3, 4, rssm.feat_dim), torch.zeros(2, 4, 2, requires_grad=True)
    with frozen(wm):
        reward, _ = Pessimism(ensemble, 1.0).reward(wm, feats, actions)
        reward.sum().backward()
    assert actions.grad is not None and actions.grad.abs().sum() > 0
    assert all(p.grad is None for p in wm.parameters())


def test_pessimism_part_trains_in_the_loop_logs_and_resumes(tmp_path):
    run = tmp_path / "run"
    cfg = compose("preset=quick_dmc", "method=dreamer", "method.pessimism.scale=1.0", "method.pessimism.kind=reward",
                  "method.pessimism.relative=true", *FAST, "trainer.steps=120",
                  "trainer.checkpoint_every=60", f"run_dir={run}")
    trainer = build_trainer(cfg, run)
    try:
        agent = trainer.agent
        assert agent.ac.reward_fn is not None and "pessimism" in dict(agent.wm.named_children())
        ids = {id(p) for p in agent.wm_opt.params}
        assert all(id(p) in ids for p in agent.wm.pessimism.parameters())  # trained by the world-model optimiser
        before = [p.detach().clone() for p in agent.wm.pessimism.parameters()]
        trainer.run()
        assert any(not torch.equal(a, b) for a, b in zip(before, agent.wm.pessimism.parameters()))
        trained = {k: v.clone() for k, v in agent.wm.pessimism.state_dict().items()}
        assert float(trained["reference.seen"]) >= 1.0 and float(trained["reference.spread"]) > 0
    finally:
        trainer.close()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "train/pessimism_spread" in r]
    assert train and all(r["train/pessimism_spread"] >= 0 and "train/loss_reward_ensemble" in r
                         and r["train/pessimism_ratio"] > 0 for r in train)
    resumed = build_trainer(cfg, run)  # the ensemble comes back from the checkpoint
    try:
        for k, v in resumed.agent.wm.pessimism.state_dict().items():
            torch.testing.assert_close(v, trained[k])
    finally:
        resumed.close()
    assert method_label(OmegaConf.to_container(cfg.method)) == "dreamer pessimism=1 pessimism-reward relative"
    assert method_label(OmegaConf.to_container(compose("method=dreamer").method)) == "dreamer"
    with pytest.raises(ValueError, match="use dynamics .* or reward"):
        build_trainer(compose("preset=quick_dmc", "method.pessimism.scale=1", "method.pessimism.kind=x", *FAST,
                              f"run_dir={tmp_path / 'x'}"), tmp_path / "x")


def test_pessimism_is_off_by_default_and_refuses_a_second_reward_fn(tmp_path):
    trainer = build_trainer(compose("preset=quick_dmc", *FAST, f"run_dir={tmp_path / 'a'}"), tmp_path / "a")
    try:
        assert trainer.agent.ac.reward_fn is None and "pessimism" not in dict(trainer.agent.wm.named_children())
    finally:
        trainer.close()
    cfg = compose("preset=quick_dmc", "method=explore", "method.components=[disagreement,pessimism]",
                  "+method.pessimism={scale: 1.0, kind: dynamics, heads: 2, layers: 1, units: 8}", *FAST, f"run_dir={tmp_path / 'b'}")
    with pytest.raises(ValueError, match="already replaces the imagined reward"):
        build_trainer(cfg, tmp_path / "b")
