import numpy as np
import pytest
import torch

from conftest import compose
from core.agent import Agent
from core.optim import LaProp
from core.world_model import WorldModel

A, NATIVE = 12, 3


def make_agent(cfg):
    mask = np.zeros(A, np.float32)
    mask[:NATIVE] = 1
    return Agent({"image": (64, 64, 3)}, mask, cfg.model, torch.device("cpu"))


def fake_batch(b=2, t=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    action = torch.rand(b, t, A, generator=g) * 2 - 1
    action[..., NATIVE:] = 0
    is_first = torch.zeros(b, t, dtype=torch.bool)
    is_first[:, 0] = True
    return dict(image=torch.randint(0, 256, (b, t, 64, 64, 3), dtype=torch.uint8, generator=g),
                action=action, reward=torch.rand(b, t, generator=g), is_first=is_first,
                is_terminal=torch.zeros(b, t, dtype=torch.bool))


def test_rssm_observe_and_imagine_shapes(tiny_cfg):
    agent = make_agent(tiny_cfg)
    w = tiny_cfg.model.wm
    rssm = agent.wm.rssm
    batch = fake_batch(b=3, t=7)
    losses, post, _ = agent.wm.loss(batch)
    assert post["deter"].shape == (3, 7, w.deter)
    assert post["stoch"].shape == (3, 7, w.stoch, w.classes)
    assert torch.allclose(post["stoch"].sum(-1), torch.ones(3, 7, w.stoch))  # one-hot samples
    for v in losses.values():
        assert v.shape == (3, 7) and torch.isfinite(v).all()
    start = {k: v.flatten(0, 1) for k, v in post.items()}
    feats, actions, _ = agent.ac.imagine(agent.wm, start, horizon=4)
    assert feats.shape == (5, 21, rssm.feat_dim)
    assert actions.shape == (4, 21, A)


def test_unimix_keeps_every_class_possible(tiny_cfg):
    rssm = make_agent(tiny_cfg).wm.rssm
    _, logp = rssm._dist(torch.full((4, rssm.stoch_dim), -1e4).index_fill(1, torch.tensor([0]), 1e4))
    assert (logp.exp() >= 0.01 / rssm.classes - 1e-7).all()


def test_padded_action_dims_stay_zero(tiny_cfg):
    torch.manual_seed(0)
    agent = make_agent(tiny_cfg)
    with torch.no_grad():  # make the actor want large actions in every dim, padded ones included
        agent.ac.actor.net[-1].bias.fill_(3.0)
    _, post, _ = agent.wm.loss(fake_batch())
    start = {k: v.detach().flatten(0, 1) for k, v in post.items()}
    _, actions, raws = agent.ac.imagine(agent.wm, start, horizon=5)
    assert (actions[..., NATIVE:] == 0).all()
    assert (actions[..., :NATIVE].abs() > 0).all()
    # REINFORCE takes log-probs of the raw samples; the model is fed the clipped ones
    assert (raws[..., NATIVE:] == 0).all() and (raws.abs() > 1).any()
    assert torch.equal(actions, raws.clamp(-1, 1))
    obs = dict(image=np.zeros((2, 64, 64, 3), np.uint8), is_first=np.array([True, False]))
    for explore in (True, False):
        act, _ = agent.policy(obs, agent.initial_state(2), explore=explore)
        assert act.shape == (2, A) and (act[:, NATIVE:] == 0).all() and (np.abs(act[:, :NATIVE]) <= 1).all()
    # padded dims carry no entropy and no log-prob
    std = torch.full((1, A), 0.5)
    ent_native = agent.ac.actor.entropy(std)
    assert torch.allclose(ent_native, torch.tensor([NATIVE * (np.log(0.5) + 0.5 * np.log(2 * np.pi * np.e))],
                                                    dtype=torch.float32))


def test_is_first_resets_the_state(tiny_cfg):
    agent = make_agent(tiny_cfg)
    rssm = agent.wm.rssm
    embed = torch.randn(2, rssm.post_embed.in_features)
    action = torch.ones(2, A)
    busy = dict(deter=torch.randn(2, rssm.deter), stoch=rssm.initial(2, "cpu")["stoch"] + 1, logits=torch.zeros(2, rssm.stoch, rssm.classes))
    torch.manual_seed(1)
    a = rssm.obs_step(busy, action, embed, torch.tensor([True, True]))
    torch.manual_seed(1)
    b = rssm.obs_step(rssm.initial(2, "cpu"), torch.zeros(2, A), embed, torch.tensor([False, False]))
    assert torch.allclose(a["deter"], b["deter"]) and torch.equal(a["stoch"], b["stoch"])


def test_one_update_changes_weights_and_is_finite(tiny_cfg):
    agent = make_agent(tiny_cfg)
    before = [p.detach().clone() for p in agent.wm.parameters()]
    metrics = agent.train_step(fake_batch(b=2, t=8))
    assert all(torch.is_tensor(v) and v.shape == () and not v.requires_grad for v in metrics.values())  # no host sync
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.wm.parameters()))
    assert agent.updates == 1


@pytest.mark.parametrize("size,expected", [("small", 13.6e6), ("large", 281e6)])
def test_parameter_counts_match_gsa(size, expected):
    cfg = compose(f"model={size}")
    with torch.device("meta"):  # no memory is allocated, even for the 281M model
        wm = WorldModel({"image": (64, 64, 3)}, A, cfg.model.wm)
    count = sum(p.numel() for p in wm.pretrained_modules().parameters())
    assert abs(count - expected) / expected < 0.10, f"{size}: {count / 1e6:.1f}M vs {expected / 1e6:.1f}M"


def test_tiny_is_well_under_a_million(tiny_cfg):
    agent = make_agent(tiny_cfg)
    trainable = sum(p.numel() for p in agent.parameters() if p.requires_grad)
    assert trainable < 800_000


def test_laprop_optimiser_descends():
    p = torch.nn.Parameter(torch.tensor([5.0, -3.0]))
    opt = LaProp([p], lr=0.1)
    for _ in range(200):
        opt.zero_grad()
        (p ** 2).sum().backward()
        opt.step()
    assert p.detach().abs().max() < 0.5


@pytest.mark.parametrize("slow_target,discount_weight", [(False, True), (True, False)])
def test_return_targets_dreamerv3_and_legacy(tiny_cfg, slow_target, discount_weight):
    """DreamerV3: lambda-returns bootstrap from the FAST critic and step t weighs prod_{i<t} gamma*cont_i;
    the legacy switch: the slow critic and prod_{i<t} cont_i."""
    from core.actor_critic import ActorCritic
    from core.ops import lambda_returns
    cfg = tiny_cfg.model.ac
    cfg.slow_target, cfg.discount_weight = slow_target, discount_weight
    torch.manual_seed(0)
    ac = ActorCritic(10, torch.ones(3), cfg)
    with torch.no_grad():  # the two critics disagree
        for p in ac.critic.parameters():
            p.normal_(0, 0.1)
    h, n = 5, 4
    feats, reward = torch.randn(h + 1, n, 10), torch.randn(h, n)
    cont = torch.tensor([1.0, 1.0, 0.5, 1.0, 1.0])[:, None].expand(h, n)
    ret, value, weight = ac.targets(feats, reward, cont)
    fast, slow = ac.value(feats), ac.value(feats, slow=True)
    assert not torch.allclose(fast, slow)
    torch.testing.assert_close(value, slow if slow_target else fast)
    torch.testing.assert_close(ret, lambda_returns(reward, cfg.discount * cont, value, cfg.lam))
    g = cfg.discount if discount_weight else 1.0
    expected = torch.tensor([1.0, g, g * g, g * g * g * 0.5, g ** 4 * 0.5])[:, None].expand(h, n)
    torch.testing.assert_close(weight, expected)


def reference_ac_loss(ac, wm, start):
    """The actor-critic loss as it was before each network ran once per imagined state: the actor again
    on the rollout's states, the fast critic once for targets and once for its loss."""
    from core.actor_critic import frozen
    c = ac.cfg
    with frozen(wm), frozen(ac.critic), torch.set_grad_enabled(c.grad == "dynamics"):
        feats, actions, raws = ac.imagine(wm, start, c.horizon)
        reward = wm.predict_reward(feats[1:])
        cont = wm.predict_cont(feats[1:])
        cont = torch.ones_like(reward) if cont is None else cont
        ret, value, weight = ac.targets(feats, reward, cont)
    scale = ac.retnorm.update(ret)
    adv = (ret - value[:-1].detach()) / scale
    mean, std = ac.actor(ac.actor_in(feats[:-1].detach()))
    entropy = ac.actor.entropy(std)
    obj = adv if c.grad == "dynamics" else ac.actor.log_prob(raws.detach(), mean, std) * adv.detach()
    actor_loss = -(weight * (obj + c.entropy * entropy)).mean()
    logits = ac.critic(feats[:-1].detach())
    critic_loss = ac.twohot.loss(logits, ret.detach()) + c.slow_reg * ac.twohot.loss(
        logits, ac.value(feats[:-1].detach(), slow=True))
    return actor_loss + (weight * critic_loss).mean()


@pytest.mark.parametrize("grad,slow_target", [("reinforce", False), ("reinforce", True), ("dynamics", False)])
def test_actor_critic_runs_each_network_once_with_the_same_loss(tiny_cfg, grad, slow_target):
    """Reusing the rollout's actor distributions (REINFORCE) and one fast-critic pass gives the same loss
    and the same gradients as running the actor and the critic again on the same states."""
    import copy
    tiny_cfg.model.ac.grad, tiny_cfg.model.ac.slow_target = grad, slow_target
    agent = make_agent(tiny_cfg)
    with torch.no_grad():  # a critic that is not all zeros, and a slow critic that differs from it
        for p in agent.ac.critic.parameters():
            p.normal_(0, 0.05)
    post, _ = agent.wm.observe(fake_batch())
    start = {k: v.flatten(0, 1).detach() for k, v in post.items()}
    twin = copy.deepcopy(agent.ac)
    calls = {"actor": 0}
    agent.ac.actor.register_forward_hook(lambda *_: calls.__setitem__("actor", calls["actor"] + 1))
    torch.manual_seed(1)
    loss, _ = agent.ac.loss(agent.wm, start)
    torch.manual_seed(1)
    expected = reference_ac_loss(twin, agent.wm, start)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    loss.backward(), expected.backward()
    for (name, p), q in zip(agent.ac.named_parameters(), twin.parameters()):
        if p.grad is not None or q.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)
    horizon = tiny_cfg.model.ac.horizon
    assert calls["actor"] == (horizon if grad == "reinforce" else horizon + 1)  # once per imagined state


def test_channels_last_gives_the_same_update():
    """model.channels_last: NHWC convolutions; the same losses and weights after an update (float tolerance)."""
    agents = []
    for on in (False, True):
        torch.manual_seed(0)
        agents.append(make_agent(compose("model=tiny", f"model.channels_last={on}")))
    conv = agents[1].wm.encoder.cnn.net[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    metrics = []
    for agent in agents:
        torch.manual_seed(1)  # the same latent samples
        metrics.append(agent.train_step(fake_batch(b=2, t=8)))
    assert metrics[0].keys() == metrics[1].keys()
    for key in metrics[0]:
        torch.testing.assert_close(metrics[0][key], metrics[1][key], rtol=1e-4, atol=1e-4)
    for a, b in zip(agents[0].wm.parameters(), agents[1].wm.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_bf16_setting_resolves_per_device(tiny_cfg, monkeypatch):
    """model.bf16: true / false as given; auto on where the device computes bf16 natively (AVX512-BF16 or AMX
    on a CPU); anything else is one clear error. The agent's updates autocast exactly when it resolves true."""
    from core import runtime
    cpu = torch.device("cpu")
    assert runtime.resolve_bf16(True, cpu) and not runtime.resolve_bf16(False, cpu)
    for native in (True, False):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        assert runtime.resolve_bf16("auto", cpu) is native
    with pytest.raises(ValueError, match="true, false or auto"):
        runtime.resolve_bf16("yes", cpu)
    tiny_cfg.model.bf16 = "auto"  # native is False here (the last patch)
    agent = Agent({"image": (64, 64, 3)}, np.ones(4, np.float32), tiny_cfg.model, cpu)
    assert agent.bf16 is False and not torch.is_autocast_cpu_enabled()
    with agent.autocast():
        assert not torch.is_autocast_cpu_enabled()
    tiny_cfg.model.bf16 = True
    agent = Agent({"image": (64, 64, 3)}, np.ones(4, np.float32), tiny_cfg.model, cpu)
    with agent.autocast():
        assert torch.is_autocast_cpu_enabled() and torch.get_autocast_dtype("cpu") == torch.bfloat16
