"""method=hybrid on real envs with a real (tiny) generalist teacher: guidance by the action-replay VAE's prior,
the identity distiller and pretrained VAE at the start, the prior's latent mode, and the ablation switches."""
import numpy as np
import pytest
import torch

from conftest import compose
from student.distill import teacher_features
from student.vid2act import ReplayGuidance
from teacher.model import build_teacher, read_teacher
from transfer.build import build_trainer
from transfer.diagnose import diagnose

from student_helpers import FAST, GSA_FAST, component, data, generalist, replay, rows, run  # noqa: F401 (fixtures)


def test_hybrid_end_to_end_with_vae_prior(tmp_path, generalist):
    before = build_teacher(read_teacher(generalist)).state_dict()
    trainer = run(tmp_path, "method=hybrid", f"teacher={generalist}", "task=cartpole_balance", "trainer.steps=120",
                  *GSA_FAST)
    v = component(trainer)
    assert v.names == ["cartpole_balance"]  # only cartpole's action dim is compatible: one retrieved domain
    assert not (tmp_path / "bc_prior.pt").exists() and replay(trainer).last_prior is not None
    guided = [r["guidance/fraction"] for r in rows(tmp_path) if "guidance/fraction" in r]
    assert guided and guided[0] == 1.0  # warm-up episodes are guided whole, by the VAE
    for k, value in v.teacher.state_dict().items():
        assert torch.equal(value, before[k]), k
    # the VAE prior acting alone, as transfer.diagnose measures it on the rebuilt run: it takes every step
    out = diagnose(tmp_path, episodes=2)
    assert out["prior_kind"] == "vae" and out["prior_alone_episodes"] == 2 and out["prior_alone_return"] > 0
    assert 0.0 <= out["prior_alone_success"] <= out["prior_alone_success_any"] <= 1.0
    resumed = build_trainer(compose(*FAST, f"run_dir={tmp_path}", "method=hybrid", f"teacher={generalist}",
                              "task=cartpole_balance", "trainer.steps=120", *GSA_FAST), tmp_path)
    try:
        assert isinstance(resumed.priors[0](1), ReplayGuidance)  # acts with the VAE's replayed action
        alone = resumed.evaluate_prior(1)
        assert alone["prior/guided"] == 1.0 and alone["prior/episodes"] == 1
    finally:
        resumed.close()


def test_hybrid_starts_from_an_identity_distiller_and_a_pretrained_vae(tmp_path, generalist):
    """The student starts as the teacher, so the residual distiller makes the distillation loss 0 at the
    start; the VAE guidance prior is trained before the first acting step (its error falls)."""
    cfg = compose(*FAST, f"run_dir={tmp_path}", "method=hybrid", f"teacher={generalist}", "task=cartpole_balance",
                  "trainer.steps=60", *GSA_FAST, "method.action_replay.pretrain_steps=60")
    trainer = build_trainer(cfg, tmp_path)
    try:
        v, wm = component(trainer), trainer.agent.wm
        sb = v.source.sample(3, 6, np.random.default_rng(0))
        batch = {k: torch.as_tensor(sb[k]) for k in ("image", "action", "is_first")}
        with torch.no_grad():  # same seed: the same stochastic latents are drawn in both filterings
            torch.manual_seed(0)
            tf = teacher_features(v.teacher, batch)
            torch.manual_seed(0)
            loss, _ = v.distiller(tf, wm.rssm.feat(wm.observe(batch)[0]))
        assert loss.shape == (3, 6) and loss.abs().max() < 1e-6
        row = next(r for r in trainer.logger_rows if "vae/pretrain_first_mse" in r)
        assert row["vae/pretrain_final_mse"] < row["vae/pretrain_first_mse"]
    finally:
        trainer.close()


def test_the_vae_prior_acts_with_its_mean_action_by_default(tmp_path, generalist):
    """The hybrid's guidance prior is the decoder's action at z = 0 (method.action_replay.prior_z=zero, the
    default); with prior_z=sample it replays with a sampled latent, as the decoder does for Vid2Act's actor."""
    cfg = compose(*FAST, f"run_dir={tmp_path}", "method=hybrid", f"teacher={generalist}", "task=cartpole_balance",
                  "trainer.steps=60", *GSA_FAST)
    assert cfg.method.action_replay.prior_z == "zero"
    assert compose("method=vid2act").method.action_replay.prior_z == "sample"  # Vid2Act's replay
    with pytest.raises(ValueError, match="prior_z='mean': use sample"):
        bad = compose(*FAST, f"run_dir={tmp_path / 'bad'}", "method=hybrid", f"teacher={generalist}",
                      "task=cartpole_balance", *GSA_FAST, "method.action_replay.prior_z=mean")
        build_trainer(bad, tmp_path / "bad")
    trainer = build_trainer(cfg, tmp_path)
    try:
        agent, part = trainer.agent, replay(trainer)
        obs = {"image": np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8),
               "is_first": np.ones(2, bool)}
        for prior_z in ("zero", "sample"):
            part.prior_sample = prior_z == "sample"
            _, latent = agent.policy(obs, agent.initial_state(2), explore=False)
            with torch.no_grad(), agent.autocast():  # as acting computes it (bf16 where model.bf16 resolves on)
                mean = part.vae.act(agent.wm.rssm.feat(latent), latent["domain"].long(), sample=False).float().numpy()
            assert np.allclose(part.last_prior, mean, atol=1e-6) == (prior_z == "zero"), prior_z
    finally:
        trainer.close()


def test_hybrid_ablations(tmp_path, generalist):
    base = ["method=hybrid", f"teacher={generalist}", "task=cartpole_balance", "trainer.steps=60", *GSA_FAST]
    bc = run(tmp_path / "bc", *base, "method.prior=bc")
    assert (tmp_path / "bc" / "bc_prior.pt").exists() and replay(bc).last_prior is None
    off = run(tmp_path / "off", *base, "method.distill.enabled=false")
    assert not any("train/loss_distill" in r for r in rows(tmp_path / "off"))
    assert any("train/loss_action_replay" in r for r in rows(tmp_path / "off"))
    with_input = run(tmp_path / "in", *base, "method.actor_input=true")
    assert with_input.agent.ac.actor_input is not None
