"""DrQ-v2 (core/drqv2.py): update shapes, the n-step indexing on replay windows, the target critic's EMA, the
augmentation, padded action dims, the acting frame stack, checkpoints, and tiny real runs through transfer.build
and the one loop (resumed, evaluated again, labelled by the report)."""
import copy
import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose
from core.drqv2 import DrQV2Agent, transitions
from core.ops import random_shift
from transfer.build import build_trainer

A, NATIVE = 6, 2
MASK = np.array([1, 1, 0, 0, 0, 0], np.float32)  # (A,) two native dims


def small_cfg(**over):
    cfg = OmegaConf.to_container(compose("method=drqv2").method.drqv2)
    cfg.update(channels=8, feature_dim=16, hidden=32, **over)
    return OmegaConf.create(cfg)


def agent_of(cfg=None, size=16):
    torch.manual_seed(0)
    return DrQV2Agent((size, size, 3), MASK, cfg or small_cfg(), torch.device("cpu"))


def window_batch(b=4, t=6, size=16, seed=0):
    """A replay batch (B, T, ...) like core/replay.py's, with junk in the padded action dims."""
    rng = np.random.default_rng(seed)
    return {"image": torch.as_tensor(rng.integers(0, 256, (b, t, size, size, 3), dtype=np.uint8)),
            "action": torch.as_tensor(rng.uniform(-1, 1, (b, t, A)).astype(np.float32)),
            "reward": torch.as_tensor(rng.random((b, t)).astype(np.float32)),
            "is_first": torch.zeros(b, t, dtype=torch.bool), "is_last": torch.zeros(b, t, dtype=torch.bool),
            "is_terminal": torch.zeros(b, t, dtype=torch.bool)}


def test_update_shapes_at_the_published_sizes():
    cfg = compose("method=drqv2").method.drqv2
    agent = DrQV2Agent((64, 64, 3), MASK, cfg, torch.device("cpu"))
    stacks = torch.zeros(5, 9, 64, 64, dtype=torch.uint8)                  # (N, 3k, R, R)
    h = agent.encoder(stacks)
    assert h.shape == (5, 32 * 25 * 25)                                     # (N, E): 64 -> 31 -> 29 -> 27 -> 25
    assert agent.actor(h).shape == (5, A) and agent.critic(h, torch.zeros(5, A)).shape == (5, 2)
    tr = transitions(window_batch(b=3, size=64), 3, 3, 0.99)
    assert tr["obs"].shape == tr["next_obs"].shape == (3, 9, 64, 64) and tr["obs"].dtype == torch.uint8
    assert tr["action"].shape == (3, A)
    assert tr["ret"].shape == tr["discount"].shape == tr["valid"].shape == (3,)
    with pytest.raises(ValueError, match="trainer.batch_length=6"):
        transitions(window_batch(t=5), 3, 3, 0.99)


def test_nstep_transitions_follow_the_replay_convention():
    """Frame t of window b has every pixel = 10 * b + t. Window 0: one episode (full 3-step return, bootstrap
    from frames 3..5); window 1: a new episode starts at t = 4 (m = 1, s' = frames 1..3); window 2: an episode
    starts at t = 1 (the stack repeats frame 1) and ends terminally at t = 5 (no bootstrap); window 3: frame 2
    ends its episode (m = 0, no transition)."""
    batch = window_batch(b=4, t=6, size=2)
    batch["image"] = (10 * torch.arange(4)[:, None] + torch.arange(6)).to(torch.uint8)[:, :, None, None, None].expand(4, 6, 2, 2, 3)
    batch["reward"] = torch.arange(6, dtype=torch.float32).repeat(4, 1)    # reward[t] = t
    batch["is_first"][1, 4] = batch["is_first"][2, 1] = batch["is_first"][3, 3] = True
    batch["is_terminal"][2, 5] = True
    tr = transitions(batch, frames=3, nstep=3, gamma=0.5)
    frames = lambda x: x[:, ::3, 0, 0].tolist()                              # (B, k) frame ids, oldest first
    assert frames(tr["obs"]) == [[0, 1, 2], [10, 11, 12], [21, 21, 22], [30, 31, 32]]
    assert frames(tr["next_obs"]) == [[3, 4, 5], [11, 12, 13], [23, 24, 25], [30, 31, 32]]
    torch.testing.assert_close(tr["ret"], torch.tensor([3 + 0.5 * 4 + 0.25 * 5, 3.0, 3 + 0.5 * 4 + 0.25 * 5, 0.0]))
    torch.testing.assert_close(tr["discount"], torch.tensor([0.125, 0.5, 0.0, 1.0]))
    assert tr["valid"].tolist() == [1.0, 1.0, 1.0, 0.0]
    torch.testing.assert_close(tr["action"], batch["action"][:, 3])        # taken after frame 2 led to frame 3


def test_one_update_moves_the_target_critic_by_tau():
    agent = agent_of()
    old = [p.detach().clone() for p in agent.critic_target.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(old, agent.critic.parameters()))   # starts as the critic
    metrics = agent.train_step(window_batch())
    assert agent.updates == 1 and all(v.shape == () and torch.isfinite(v) for v in metrics.values())
    tau = agent.cfg.tau
    for before, target, online in zip(old, agent.critic_target.parameters(), agent.critic.parameters()):
        torch.testing.assert_close(target, (1 - tau) * before + tau * online)
    assert any(not torch.equal(a, b) for a, b in zip(old, agent.critic.parameters()))


def test_random_shift_changes_images_not_shapes():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (8, 9, 16, 16), dtype=torch.uint8)
    shifted = random_shift(images, 4)
    assert shifted.shape == images.shape and shifted.dtype == images.dtype
    assert not torch.equal(shifted, images)


def test_padded_action_dims_stay_exactly_zero():
    agent = agent_of()
    obs = {"image": np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8), "is_first": np.ones(3, bool)}
    state = agent.initial_state(3)
    for explore in (True, False):
        action, _ = agent.policy(obs, state, explore=explore)
        assert action.shape == (3, A) and np.all(action[:, NATIVE:] == 0) and np.any(action[:, :NATIVE] != 0)
    h = agent.encoder(torch.zeros(4, 9, 16, 16, dtype=torch.uint8))
    sampled = agent.actor.sample(agent.actor(h), std=1.0, clip=0.3)
    assert torch.all(sampled[:, NATIVE:] == 0)
    # the critic is trained on masked actions: junk in the replay's padded dims changes nothing
    clean = window_batch()
    clean["action"] = clean["action"] * torch.as_tensor(MASK)
    runs = []
    for batch in (window_batch(), clean):
        agent = agent_of()
        torch.manual_seed(1)
        runs.append(agent.train_step(batch)["critic_loss"])
    assert torch.equal(runs[0], runs[1])


def test_bf16_updates_keep_values_and_targets_fp32_and_close_to_fp32():
    """model.bf16=true: the same weights and batch give the fp32 update's losses to ~1% (the convolutions and hidden
    layers run in bf16, every head's last layer in fp32), Q values and actions are fp32, padded dims stay 0."""
    cfg = small_cfg()
    agents = {}
    for bf16 in (False, True):
        torch.manual_seed(0)
        agents[bf16] = DrQV2Agent((16, 16, 3), MASK, cfg, torch.device("cpu"), bf16)
    assert agents[True].bf16 and not agents[False].bf16
    losses = {}
    for bf16, agent in agents.items():
        torch.manual_seed(1)
        losses[bf16] = agent.train_step(window_batch())
    for name in ("critic_loss", "critic_q1", "actor_loss"):
        assert torch.allclose(losses[True][name], losses[False][name], rtol=0.02, atol=1e-3), name
    obs = {"image": np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8), "is_first": np.ones(3, bool)}
    action, state = agents[True].policy(obs, agents[True].initial_state(3), explore=False)
    assert action.dtype == np.float32 and np.all(action[:, NATIVE:] == 0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = agents[True].encoder(state["stack"])
        assert agents[True].critic(h, torch.zeros(3, A)).dtype == torch.float32
    with pytest.raises(ValueError, match="model.bf16='yes'"):
        DrQV2Agent((16, 16, 3), MASK, cfg, torch.device("cpu"), "yes")


def test_frame_stack_restarts_at_is_first():
    agent = agent_of()
    state = agent.initial_state(2)

    def step(values, first):
        nonlocal state
        image = np.stack([np.full((16, 16, 3), v, np.uint8) for v in values])
        _, state = agent.policy({"image": image, "is_first": np.array(first)}, state)
        return state["stack"][:, ::3, 0, 0].tolist()                         # (N, k) frame values, oldest first

    assert step([1, 5], [True, True]) == [[1, 1, 1], [5, 5, 5]]
    assert step([2, 6], [False, False]) == [[1, 1, 2], [5, 5, 6]]
    assert step([3, 9], [False, True]) == [[1, 2, 3], [9, 9, 9]]            # env 1 starts an episode


def test_full_state_round_trip():
    agent = agent_of()
    agent.train_step(window_batch())
    other = agent_of(size=16)
    torch.manual_seed(5)
    other.load_full_state(copy.deepcopy(agent.full_state()))   # as if read from a checkpoint file
    assert other.updates == 1
    assert all(torch.equal(a, b) for a, b in zip(agent.state_dict().values(), other.state_dict().values()))
    torch.manual_seed(3), agent.train_step(window_batch(seed=1))
    torch.manual_seed(3), other.train_step(window_batch(seed=1))          # same Adam moments: same next update
    assert all(torch.equal(a, b) for a, b in zip(agent.parameters(), other.parameters()))


TINY = ["method=drqv2", "env=dmc", "task=cartpole_balance", "env.episode_frames=60", "trainer.warmup=40",
        "trainer.batch_size=8", "trainer.train_ratio=24", "trainer.eval_every=1000000", "trainer.eval_episodes=1",
        "trainer.final_eval_episodes=1", "trainer.log_every=20", "method.drqv2.hidden=64",
        "method.drqv2.std_schedule.duration=200", "logger.wandb=disabled", "logger.progress=false"]


def test_tiny_run_through_the_loop_resumes_and_evaluates(tmp_path):
    """A real cartpole run (episodes of 30 agent steps): 0.5 updates per agent step after the 40-frame warm-up,
    then resumed to 200 frames, then evaluated again from its checkpoint with sampled actions."""
    from core import checkpoint
    from transfer.diagnose import has_world_model
    from transfer.evaluate import main as evaluate_main
    from transfer.report.runs import method_label, read_run

    def run(steps):
        cfg = compose(*TINY, f"trainer.steps={steps}", f"run_dir={tmp_path}")
        trainer = build_trainer(cfg, tmp_path)
        try:
            return cfg, trainer, trainer.run()
        finally:
            trainer.close()

    cfg, trainer, result = run(120)
    assert (cfg.trainer.batch_length, cfg.trainer.eval_policy) == (6, "mode")
    assert type(trainer.agent).__name__ == "DrQV2Agent" and trainer.step == 120
    first = trainer.agent.updates
    assert 15 <= first <= 21                    # 0.5 per stepped agent step from frame 40 to 120
    assert trainer.agent.std() == pytest.approx(1.0 - 0.9 * 120 / 200)      # the schedule reads the loop's step
    assert np.isfinite(result["final/return"]) and result["final/sampled"] == 0.0
    assert "final/imagined_return" not in result  # no world model: nothing imagined
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "train/critic_loss" in r]
    assert train and all(np.isfinite(r["train/critic_loss"]) and np.isfinite(r["train/actor_loss"]) for r in train)
    replay = trainer.replay.sample(4, 6)
    assert np.all(replay["action"][..., NATIVE - 1:] == 0)                  # cartpole: 1 native dim of 12

    cfg, trainer, _ = run(200)                                              # resumed from its checkpoint
    assert trainer.step == 200 and trainer.agent.updates > first
    state = checkpoint.load(tmp_path / "checkpoint.pt")
    assert state["agent"]["updates"] == trainer.agent.updates and not has_world_model(state)

    (tmp_path / "hydra").mkdir()
    OmegaConf.save(cfg, tmp_path / "hydra" / "config.yaml")                 # as transfer.run's Hydra writes it
    assert evaluate_main([str(tmp_path), "--policy", "sample", "--episodes", "1"]) == 0
    finals = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if "final/return" in line]
    assert [(r["step"], r["final/sampled"]) for r in finals][-1] == (200, 1.0)
    assert method_label(OmegaConf.to_container(cfg.method)) == "drqv2"
    assert read_run(tmp_path).method == "drqv2"


def test_unknown_agent_fails_clearly(tmp_path):
    with pytest.raises(ValueError, match="method.agent='drq': use one of dreamer, drqv2. Did you mean"):
        build_trainer(compose(*TINY, "method.agent=drq"), tmp_path)


def test_update_benchmark_writes_both_precisions(tmp_path, monkeypatch, capsys):
    from benchmarks import drqv2_update
    monkeypatch.setattr("sys.argv", ["drqv2_update", "--batch", "4", "--image-size", "16", "--repeats", "1",
                                     "--rounds", "1", "--device", "cpu", "--out", str(tmp_path)])
    drqv2_update.main()
    (path,) = tmp_path.glob("drqv2-update-cpu*.json")
    result = json.loads(path.read_text())
    assert result["meta"]["batch"] == [4, 6] and set(result["ms_per_update"]) == {"fp32", "bf16"}
    assert all(ms > 0 for ms in result["ms_per_update"].values()) and "bf16 speed-up" in capsys.readouterr().out
