"""method=vid2act on real envs with real (tiny) teachers: distillation weights, the action-replay VAE, actor
inputs, ablation switches and a frozen teacher (method=hybrid: tests/test_hybrid.py)."""
import json

import numpy as np
import pytest
import torch

from conftest import collect_random, compose, pretrain_cfg
from student.distill import DomainDistiller
from student.vae import ActionVAE
from teacher.model import build_teacher, read_teacher
from teacher.pretrain import Pretrainer
from transfer.build import build_trainer
from transfer.report.plot import plot_weights

from student_helpers import (FAST, MATCH_FRAMES, MIXTURE_STEPS, component, data, generalist,  # noqa: F401 (fixtures)
                             mixture, replay, rows, run)


def test_vid2act_end_to_end_keeps_teacher_frozen(tmp_path, mixture):
    before = build_teacher(read_teacher(mixture)).state_dict()
    trainer = run(tmp_path, "method=vid2act", f"teacher={mixture}", "task=cartpole_balance", "trainer.steps=120")
    v = component(trainer)
    for k, value in v.teacher.state_dict().items():  # bit-identical after training
        assert torch.equal(value, before[k]), k
    assert v.names == ["cartpole_balance", "walker_walk"] and trainer.agent.updates > 0
    assert trainer.agent.ac.actor.net[0].in_features == trainer.agent.wm.rssm.feat_dim + 50
    logged = rows(tmp_path)
    weights = [(r["distill/weight_cartpole_balance"], r["distill/weight_walker_walk"]) for r in logged
               if "distill/weight_cartpole_balance" in r]
    assert weights and all(abs(a + b - 1) < 1e-4 for a, b in weights)
    assert any("vae/mse" in r for r in logged) and any("train/loss_distill" in r for r in logged)
    assert plot_weights(tmp_path).exists()


def test_vid2act_needs_a_mixture_teacher(tmp_path, generalist):
    with pytest.raises(ValueError, match="mixture"):
        build_trainer(compose(*FAST, "method=vid2act", f"teacher={generalist}", f"run_dir={tmp_path}"), tmp_path)


def test_vid2act_ablations(tmp_path, mixture):
    base = ["method=vid2act", f"teacher={mixture}", "task=cartpole_balance", "trainer.steps=60"]
    uniform = component(run(tmp_path / "u", *base, "method.distill.weights=uniform"))
    w = [r["distill/weight_walker_walk"] for r in rows(tmp_path / "u") if "distill/weight_walker_walk" in r]
    assert w and all(x == pytest.approx(0.5) for x in w) and uniform.best is None
    no_replay = run(tmp_path / "n", *base, "method.action_replay.enabled=false")
    assert replay(no_replay) is None and no_replay.agent.ac.actor_input is None
    assert no_replay.agent.ac.actor.net[0].in_features == no_replay.agent.wm.rssm.feat_dim


def test_residual_distiller_needs_equal_feature_sizes():
    d = DomainDistiller(20, 20, 3, conditioned=True, units=16, residual=True)
    f = torch.randn(2, 4, 1, 20)
    assert torch.equal(d.distilled(f), f.expand(2, 4, 3, 20))
    with pytest.raises(ValueError, match="residual"):
        DomainDistiller(20, 24, 3, conditioned=True, residual=True)


@pytest.mark.parametrize("dims", [(1, 12), (4, 12), (6, 6)])
def test_vae_shapes_and_masks(dims):
    native, padded = dims
    mask = np.zeros(padded, np.float32)
    mask[:native] = 1
    vae = ActionVAE(feat_dim=20, action_mask=mask, domains=3, units=32, hidden=50)
    feat, domain = torch.randn(2, 5, 20), torch.randint(0, 3, (2, 5))
    assert vae.features(feat, domain).shape == (2, 5, 50)
    action = vae.act(feat, domain)
    assert action.shape == (2, 5, padded) and torch.all(action[..., native:] == 0)
    mean = vae.act(feat, domain, sample=False)  # z = 0: deterministic, the same padding
    assert torch.equal(mean, vae.act(feat, domain, sample=False)) and torch.all(mean[..., native:] == 0)
    at_zero = torch.tanh(vae.out(vae.features(feat, domain, torch.zeros(2, 5, vae.latent)))) * vae.mask
    assert torch.equal(mean, at_zero)
    target = torch.zeros(10, padded)
    target[:, :native] = torch.rand(10, native) * 2 - 1
    junk = target.clone()
    junk[:, native:] = 5.0  # padded dims never count
    torch.manual_seed(0)
    a, _ = vae.loss(feat.flatten(0, 1), target, domain.flatten())
    torch.manual_seed(0)
    b, _ = vae.loss(feat.flatten(0, 1), junk, domain.flatten(), mask=torch.as_tensor(mask).expand(10, padded))
    assert torch.allclose(a, b)


def test_vae_reconstruction_error_falls():
    torch.manual_seed(0)
    mask = np.array([1, 1, 1, 0, 0], np.float32)
    vae = ActionVAE(feat_dim=8, action_mask=mask, domains=2, units=64, hidden=16)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    w = torch.randn(2, 8, 3)
    mses = []
    for _ in range(300):
        feat, domain = torch.randn(64, 8), torch.randint(0, 2, (64,))
        action = torch.zeros(64, 5)
        action[:, :3] = torch.tanh(torch.einsum("nf,nfa->na", feat, w[domain]))  # each domain its own policy
        loss, m = vae.loss(feat, action, domain)
        opt.zero_grad(), loss.backward(), opt.step()
        mses.append(float(m["vae/mse"]))
    assert np.mean(mses[-20:]) < 0.5 * np.mean(mses[:20])


@pytest.mark.parametrize("fit", ["weighted", "uniform"])
def test_distiller_weights_favour_the_informative_domain(fit):
    torch.manual_seed(0)
    distiller = DomainDistiller(teacher_dim=6, student_dim=6, domains=2, conditioned=False, units=32, fit=fit)
    opt = torch.optim.Adam(distiller.parameters(), lr=3e-3)
    last = []
    for _ in range(400):
        student = torch.randn(8, 4, 6)
        unrelated = torch.randn_like(student) + 1.0  # uninformative, and distinguishable (like a wrong label's features)
        teacher = torch.stack([student + 0.05 * torch.randn_like(student), unrelated], 2)  # (B, T, K, F)
        loss, w = distiller(teacher, student)
        opt.zero_grad(), loss.mean().backward(), opt.step()
        last = (last + [float(w.detach().mean((0, 1))[0])])[-50:]
    assert np.mean(last) > 0.65  # starts at ~0.5


IMAGE = 32  # the matching-source run at 32 x 32 pixels: half the CPU of 64 x 64 (58 s against 114 s, one core), and
# its own source's weight still ends well above 0.6 (0.77 against 0.87; AVX512 CPU, 2026-12-01)


@pytest.fixture(scope="module")
def trained_mixture(tmp_path_factory):
    """A mixture teacher trained long enough to use its label: sources cartpole_balance (the target's own
    task) and walker_walk, random-policy episodes. With far fewer updates the label hardly changes the
    teacher's features and which source wins is a coin flip (benchmarks/results/domain_weights*.json)."""
    data = collect_random(tmp_path_factory.mktemp("sources"), tasks=("cartpole_balance", "walker_walk"),
                          episodes=4, frames=100, image_size=IMAGE)
    run = tmp_path_factory.mktemp("trained_mixture")
    Pretrainer(pretrain_cfg(data, run, "kind=mixture", f"steps={MIXTURE_STEPS}", f"eval_every={MIXTURE_STEPS}",
                            "batch_size=8", "batch_length=16"), run).run()
    return run / "teacher.pt"


def test_matching_source_gets_the_larger_weight(tmp_path, trained_mixture):
    """A tiny real vid2act run on cartpole_balance: the learned weight of its own source rises above the
    unrelated one's (the weights start at 0.5 each)."""
    run(tmp_path, "method=vid2act", f"teacher={trained_mixture}", "task=cartpole_balance", "env.episode_frames=100",
        f"env.image_size={IMAGE}",
        f"trainer.steps={MATCH_FRAMES}", "trainer.warmup=200", "trainer.batch_length=16", "trainer.log_every=100",
        "method.action_replay.length=8")
    w = [r["distill/weight_cartpole_balance"] for r in rows(tmp_path) if "distill/weight_cartpole_balance" in r]
    assert len(w) >= 3 and w[-1] > 0.6 and w[-1] > w[0], w


def test_cached_mixture_teacher_must_match_the_configured_sources(tmp_path, mixture):
    from teacher.embedded import ensure
    cached = tmp_path / "mix" / "pretrain" / "teacher.pt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(mixture.read_bytes())
    common = [f"default_teacher.mixture_dir={tmp_path / 'mix'}", "default_teacher.mixture_steps=2"]
    same = compose(*common, "default_teacher.mixture_tasks=[walker_walk,cartpole_balance]")
    assert ensure(same, "mixture") == cached   # label order does not matter
    other = compose(*common, "default_teacher.mixture_tasks=[cartpole_balance,drawer-open]")
    with pytest.raises(ValueError, match="move or delete"):
        ensure(other, "mixture")


def test_label_fit_reports_every_label_of_a_mixture_teacher(data, mixture, generalist, tmp_path):
    from teacher.label_fit import main
    out = main([str(mixture), str(data), "--max-episodes", "2", "--json", str(tmp_path / "fit.json")])
    assert sorted(out) == ["cartpole_balance", "walker_walk"]
    assert all(np.isfinite(v) and v >= 0 for r in out.values() for v in r.values())
    assert json.loads((tmp_path / "fit.json").read_text()) == out
    with pytest.raises(ValueError, match="needs a mixture teacher"):
        main([str(generalist), str(data)])
    with pytest.raises(FileNotFoundError, match="manifest.jsonl"):
        main([str(mixture), str(tmp_path)])
