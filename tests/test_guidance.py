"""Execution guidance: the schedule and its plans, the BC prior (student/bc.py) and GuidedActing."""
import numpy as np
import pytest
import torch

from envs import make_env
from envs.list import suite_config
from student.bc import (BCData, BCPolicy, SpatialSoftmax, frame_indices, masked_mse, random_shift, stack_frames,
                        train_bc, weight_ema)
from student.guidance import GuidanceSchedule, GuidedActing
from teacher.data.dataset import OfflineDataset
from teacher.data.writer import DatasetWriter

A = 8  # padded action dim: cartpole has 1 native dim, walker 6
SMALL = dict(channels=(8, 16, 32, 64), hidden=64)


def features(image):
    """Mean brightness of the 4 image quadrants: (4,)."""
    g = image.astype(np.float32).mean(-1) / 255  # (R, R)
    return np.array([g[:32, :32].mean(), g[:32, 32:].mean(), g[32:, :32].mean(), g[32:, 32:].mean()])


def collect_scripted(root, tasks=("cartpole_balance", "walker_walk"), episodes=5, frames=100, seed=0):
    """Real DMC data whose action is a fixed function of the frame it was taken on, so that BC has
    something to learn (uniform random actions cannot be predicted from frames; BC could only fit
    their mean): a = tanh(P @ standardised quadrant brightness), P random per task."""
    cfg = {**suite_config("dmc"), "episode_frames": frames}
    rng = np.random.default_rng(seed)
    with DatasetWriter(root) as writer:
        for task in tasks:
            env = make_env(cfg, task, seed, A)
            n = env.spec.native_action_dim
            obs, feats = env.reset(), []  # one random episode (not stored) to standardise the features
            while not obs["is_last"]:
                feats.append(features(obs["image"]))
                obs = env.step(rng.uniform(-1, 1, A).astype(np.float32) * env.spec.action_mask)
            mu, sd, proj = np.mean(feats, 0), np.std(feats, 0) + 1e-6, rng.normal(size=(n, 4))
            for ep in range(episodes):
                obs = env.reset()
                images, actions = [obs["image"]], [np.zeros(n, np.float32)]  # action[t] led to obs t
                while not obs["is_last"]:
                    a = np.zeros(A, np.float32)
                    a[:n] = np.tanh(proj @ ((features(obs["image"]) - mu) / sd))
                    obs = env.step(a)
                    images.append(obs["image"]), actions.append(a[:n])
                writer.add(dict(image=np.stack(images), action=np.stack(actions)),
                           dict(suite="dmc", task=task, embodiment=env.spec.embodiment, policy="scripted",
                                noise=None, seed=seed * 100 + ep))
            env.close()
    return root


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: on the shared 2-core machines two threads contend with other jobs (a small
    forward pass took 5 to 50 ms with two threads, steady with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return OfflineDataset(collect_scripted(tmp_path_factory.mktemp("bc")), max_action_dim=A)


def walker_mask():
    mask = np.zeros(A, np.float32)
    mask[:6] = 1
    return mask


# ---- schedule -----------------------------------------------------------------------------------
def test_schedule_probability_is_linear():
    s = GuidanceSchedule(initial=1.0, final=0.1, duration=100_000, episode_length=500)
    for step in (0, 25_000, 50_000, 100_000, 250_000):
        expected = 1.0 + (0.1 - 1.0) * min(step / 100_000, 1.0)
        assert s.probability(step) == pytest.approx(expected)
    assert s.probability(50_000) == pytest.approx(0.55) and s.probability(10**7) == pytest.approx(0.1)
    paper = GuidanceSchedule(1.0, 0.0, 50_000, 500)
    assert [paper.probability(x) for x in (0, 25_000, 50_000, 60_000)] == pytest.approx([1, 0.5, 0, 0])
    with pytest.raises(ValueError):
        GuidanceSchedule(1.5, 0.0, 10, 10)


def test_plans_follow_the_schedule():
    t, rng = 500, np.random.default_rng(0)
    s = GuidanceSchedule(1.0, 0.1, 100_000, episode_length=t, warmup=15_000)
    assert all(s.plan(step, rng) == (0, t) for step in (0, 7_000, 14_999) for _ in range(50))  # warm-up
    step, n = 50_000, 20_000  # p = 0.55
    plans = [s.plan(step, rng) for _ in range(n)]
    guided = [p for p in plans if p is not None]
    p = s.probability(step)
    assert abs(len(guided) / n - p) < 5 * np.sqrt(p * (1 - p) / n)
    starts, lengths = np.array(guided).T
    allowed = [t // 10 * i for i in range(1, 11)]
    assert sorted(set(lengths.tolist())) == allowed
    counts = np.array([(lengths == h).sum() for h in allowed])
    expected = len(guided) / 10
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 33.7, counts  # 9 dof: P(chi2 > 33.7) ~ 1e-4
    assert ((starts >= 0) & (starts <= t - lengths)).all()
    assert (starts[lengths == t] == 0).all()
    for h in allowed[:-1]:  # start uniform on [0, T - H]: mean (T - H) / 2, both ends reachable
        sel = starts[lengths == h]
        sd = np.sqrt(((t - h + 1) ** 2 - 1) / 12 / len(sel))
        assert abs(sel.mean() - (t - h) / 2) < 5 * sd, (h, sel.mean())
    sel = starts[lengths == 450]  # 51 possible starts, ~1100 draws: every one of them appears
    assert set(sel.tolist()) == set(range(51))
    paper = GuidanceSchedule(1.0, 0.0, 50_000, episode_length=t)
    assert all(paper.plan(50_000, rng) is None for _ in range(200))
    never = GuidanceSchedule(0.0, 0.0, 10, episode_length=t)
    assert all(never.plan(5, rng) is None for _ in range(200))
    odd = GuidanceSchedule(1.0, 1.0, 10, episode_length=25)  # T not a multiple of 10: floor(T i / 10)
    assert odd.durations.tolist() == [2, 5, 7, 10, 12, 15, 17, 20, 22, 25]
    always = GuidanceSchedule.always(episode_length=t)  # the prior acting alone (transfer.diagnose)
    assert all(always.plan(step, rng) == (0, t) for step in (0, 10**9, 10**12))


# ---- BC pieces ----------------------------------------------------------------------------------
def test_masked_mse_ignores_padded_dims_and_padded_outputs_are_zero():
    torch.manual_seed(0)
    mask = torch.tensor(walker_mask()).expand(5, A)
    pred, target = torch.randn(5, A), torch.randn(5, A)
    loss = masked_mse(pred, target, mask)
    junk = pred.clone()
    junk[:, 6:] = 100.0
    assert masked_mse(junk, target, mask) == loss
    assert loss == pytest.approx(((pred - target)[:, :6] ** 2).mean().item())
    per_sample = torch.tensor(walker_mask()).repeat(5, 1)
    per_sample[0, 1:] = 0  # a 1-dim embodiment in the batch: its row averages over 1 dim only
    expected = torch.cat([(pred - target)[:1, :1] ** 2, ((pred - target)[1:, :6] ** 2).mean(1, keepdim=True)]).mean()
    assert masked_mse(pred, target, per_sample) == pytest.approx(expected.item())
    policy = BCPolicy(walker_mask(), **SMALL)
    with torch.no_grad():
        policy.head[-1].bias.fill_(3.0)  # non-zero pre-activations everywhere
    out = policy(torch.randint(0, 256, (4, 9, 64, 64), dtype=torch.uint8))
    assert out.shape == (4, A) and (out[:, 6:] == 0).all() and (out[:, :6] != 0).all()
    assert out.abs().max() <= 1


def test_random_shift_is_a_replicate_padded_crop():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 9, 20, 20), generator=gen, dtype=torch.uint8)
    shifted = random_shift(images, pad=3, generator=gen)
    assert shifted.shape == images.shape and shifted.dtype == images.dtype
    padded = torch.nn.functional.pad(images.float(), (3, 3, 3, 3), mode="replicate")  # (B, C, 26, 26)
    offsets = set()
    for b in range(64):
        found = [(dy, dx) for dy in range(7) for dx in range(7)
                 if torch.equal(padded[b, :, dy:dy + 20, dx:dx + 20], shifted[b].float())]
        assert len(found) == 1, b  # exactly one crop of the padded image; all 9 channels alike
        offsets.add(found[0])
    assert len(offsets) > 20  # of the 49 offsets (3, 3 = no shift), many occur
    floats = images.float() / 255 - 0.5
    assert random_shift(floats, 3).shape == floats.shape and torch.equal(random_shift(floats, 0), floats)


def test_stacking_repeats_the_first_frame():
    images = np.arange(6, dtype=np.uint8)[:, None, None, None] * np.ones((6, 4, 5, 3), np.uint8)  # frame i = i
    assert frame_indices([0, 1, 2, 5]).tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 2], [3, 4, 5]]
    first = stack_frames(images, 0)
    assert first.shape == (9, 4, 5) and (first == 0).all()
    second = stack_frames(images, 1)
    assert second[:6].max() == 0 and (second[6:] == 1).all()  # oldest first: f0, f0, f1
    batch = stack_frames(images, np.array([5, 2]))
    assert batch.shape == (2, 9, 4, 5)
    assert [int(batch[0, 3 * j, 0, 0]) for j in range(3)] == [3, 4, 5]
    assert [int(batch[1, 3 * j, 0, 0]) for j in range(3)] == [0, 1, 2]


def test_bc_batches_pair_frames_with_the_next_action(dataset):
    data = BCData(dataset, range(len(dataset)))
    assert len(data) == len(dataset) == 10
    batch = data.sample(512, np.random.default_rng(0))
    assert batch["image"].shape == (512, 9, 64, 64) and batch["action"].shape == (512, A)
    for b in range(0, 512, 7):
        i, t = int(data.indices[batch["traj"][b]]), int(batch["t"][b])
        traj, dim = dataset.read(i), dataset.meta[i]["action_dim"]
        assert 0 <= t <= len(traj["image"]) - 2
        np.testing.assert_array_equal(batch["image"][b], stack_frames(traj["image"], t))
        np.testing.assert_array_equal(batch["action"][b, :dim], traj["action"][t + 1])  # taken after frame t
        assert (batch["action"][b, dim:] == 0).all()
        assert batch["mask"][b].tolist() == [1.0] * dim + [0.0] * (A - dim)
    assert min(batch["t"]) == 0 and max(batch["t"]) == 49  # the episode start is drawn too (T = 50)
    with pytest.raises(ValueError, match="action_mask"):
        train_bc(BCPolicy(np.eye(A, dtype=np.float32)[0], **SMALL), data, None, steps=1, batch=4)


def test_spatial_softmax_finds_each_channels_peak():
    maps = torch.zeros(2, 3, 5, 7)
    peaks = [[(0, 0), (4, 6), (2, 3)], [(1, 5), (3, 1), (4, 0)]]  # (row, col) per image and channel
    for b, row in enumerate(peaks):
        for c, (y, x) in enumerate(row):
            maps[b, c, y, x] = 50.0
    coords = SpatialSoftmax()(maps).reshape(2, 3, 2)  # (B, C, (x, y))
    expected = torch.tensor([[[-1 + 2 * x / 6, -1 + 2 * y / 4] for y, x in row] for row in peaks])
    torch.testing.assert_close(coords, expected, atol=1e-4, rtol=0)
    flat = SpatialSoftmax()(torch.zeros(1, 1, 5, 7))  # no peak: the centre
    torch.testing.assert_close(flat, torch.zeros(1, 2), atol=1e-6, rtol=0)


@pytest.mark.parametrize("encoder", ["flat", "keypoints"])
def test_train_bc_lowers_the_loss(dataset, encoder):
    torch.manual_seed(0)
    small = SMALL if encoder == "flat" else dict(channels=(8, 8), hidden=64)
    policy = BCPolicy(walker_mask(), encoder=encoder, **small)
    out = policy(torch.randint(0, 256, (2, 9, 64, 64), dtype=torch.uint8))
    assert out.shape == (2, A) and (out[:, 6:] == 0).all()
    data = BCData(dataset, np.arange(len(dataset)))
    probe = data.sample(4096, np.random.default_rng(1))
    m, act = probe["mask"], probe["action"]
    mean = (act * m).sum(0) / m.sum(0).clip(1)  # best constant prediction per dim
    constant = (((act - mean) ** 2 * m).sum(-1) / m.sum(-1)).mean()
    steps = 60 if encoder == "flat" else 150  # brightness per quadrant is no keypoint: it takes longer
    losses = train_bc(policy, dataset, range(len(dataset)), steps=steps, batch=64, lr=1e-3,
                      rng=np.random.default_rng(0))
    assert len(losses) == steps and all(np.isfinite(losses))
    first, last = np.mean(losses[:5]), np.mean(losses[-10:])
    assert last < 0.5 * first, (first, last)
    assert last < 0.8 * constant, (constant, last)  # it learned frame -> next action, not just the mean
    assert not policy.training


def test_train_bc_keeps_an_ema_of_the_weights(dataset):
    """method.bc.ema: after updates w1, w2, w3 the average is d^2 w1 + d(1 - d) w2 + (1 - d) w3."""
    torch.manual_seed(0)
    policy, decay = BCPolicy(walker_mask(), **SMALL), 0.7
    data, rng = BCData(dataset, np.arange(len(dataset))), np.random.default_rng(0)
    optimizer, average, seen = torch.optim.Adam(policy.parameters(), lr=1e-3), weight_ema(policy, decay), []
    for _ in range(3):
        train_bc(policy, data, None, steps=1, batch=8, rng=rng, optimizer=optimizer, average=average)
        seen.append({k: v.clone() for k, v in policy.state_dict().items()})
    got = average.module.state_dict()
    for k in ("head.0.weight", "encoder.0.bias"):
        want = decay ** 2 * seen[0][k] + decay * (1 - decay) * seen[1][k] + (1 - decay) * seen[2][k]
        torch.testing.assert_close(got[k], want)
        assert not torch.allclose(got[k], seen[2][k])
    with pytest.raises(ValueError, match="decay"):
        weight_ema(policy, 1.0)


# ---- acting -------------------------------------------------------------------------------------
def test_guided_acting_acts_only_inside_the_plans():
    cfg = {**suite_config("dmc"), "episode_frames": 40}  # T = 20 agent steps
    envs = [make_env(cfg, "cartpole_balance", seed, A) for seed in (0, 1)]
    t_len = envs[0].spec.episode_length
    torch.manual_seed(0)
    policy = BCPolicy(envs[0].spec.action_mask, **SMALL)
    with torch.no_grad():
        policy.head[-1].bias.fill_(0.5)
    schedule = GuidanceSchedule(1.0, 0.0, duration=1000, episode_length=t_len, warmup=40)
    guide, rng = GuidedActing(policy, schedule, num_envs=2), np.random.default_rng(0)
    obs = [env.reset() for env in envs]
    episodes = [[o["image"]] for o in obs]  # this episode's frames, per env
    step, seen_plans, guided_total, acting_total = 0, [], 0, 0
    episode_guided, shares = [0, 0], []  # this episode's guided steps per env; (share logged, share counted)
    while step < 560:  # 7 episodes per env, starting at env steps 0, 80, ..., 480
        agent = np.full((2, A), -0.25, np.float32) * envs[0].spec.action_mask
        actions, guided = guide.apply(obs, agent, step, rng)
        for i, o in enumerate(obs):
            if o["is_first"]:
                episodes[i] = [o["image"]]
                seen_plans.append((step, guide.plans[i]))
                episode_guided[i] = 0
            t = len(episodes[i]) - 1
            np.testing.assert_array_equal(guide.stack(i), stack_frames(np.stack(episodes[i]), t))
            plan = guide.plans[i]
            inside = plan is not None and plan[0] <= t < plan[0] + plan[1] and not o["is_last"]
            assert guided[i] == inside
            assert (actions[i, 1:] == 0).all()  # padded beyond cartpole's single native dim
            if inside:
                expected = policy(torch.as_tensor(stack_frames(np.stack(episodes[i]), t)[None]))[0]
                np.testing.assert_allclose(actions[i], expected.detach().numpy(), atol=1e-6)
            else:
                np.testing.assert_array_equal(actions[i], agent[i])
            acting_total += not o["is_last"]
            guided_total += bool(guided[i])
            episode_guided[i] += bool(guided[i])
            if o["is_last"]:  # the loop reads the episode's share now (train/guided)
                shares.append((guide.episode_info(i)["train/guided"], episode_guided[i] / t_len))
        stepped = sum(not o["is_last"] for o in obs)
        obs = [env.reset() if o["is_last"] else env.step(a) for env, o, a in zip(envs, obs, actions)]
        for i, o in enumerate(obs):
            episodes[i].append(o["image"])
        step += stepped * envs[0].spec.action_repeat
    assert all(plan == (0, t_len) for s, plan in seen_plans if s < 40)  # warm-up: whole episodes
    later = [plan for s, plan in seen_plans if s >= 40]
    assert any(p is None for p in later) and any(p is not None and p != (0, t_len) for p in later)
    assert guide.guided_steps == guided_total and guide.steps == acting_total
    assert len(shares) >= 12 and all(logged == pytest.approx(counted) for logged, counted in shares)
    assert {round(x) for x, _ in shares if x in (0.0, 1.0)} == {0, 1} and any(0 < x < 1 for x, _ in shares)
    logs = guide.metrics()
    assert logs["guidance/fraction"] == pytest.approx(guided_total / acting_total)
    assert guide.metrics()["guidance/fraction"] == 0  # the window restarts after each call
    assert guide.act([]).shape == (0, A)
    for env in envs:
        env.close()


def test_jsrl_prefix_schedule_draws_h_and_the_prior_acts_first():
    """JSRL: h uniform over the prefixes (capped at T), plan (0, h), no plan for h = 0, no warm-up rule."""
    from student.guidance import PrefixSchedule, make_schedule
    schedule = PrefixSchedule([0, 10, 20, 30], episode_length=25)
    rng = np.random.default_rng(0)
    plans = [schedule.plan(step, rng) for step in range(4000)]
    drawn = [0 if p is None else p[1] for p in plans]
    assert sorted(set(drawn)) == [0, 10, 20, 25]                          # 30 is capped at T = 25
    assert all(p is None or p[0] == 0 for p in plans)                     # always a prefix
    counts = np.bincount(drawn, minlength=26)[[0, 10, 20, 25]] / len(drawn)
    assert np.allclose(counts, 0.25, atol=0.03)                           # uniform
    assert schedule.probability(0) == schedule.probability(10 ** 6) == 0.75
    guide = GuidedActing(None, schedule, num_envs=1)
    guide.plans[0], guide.t[0] = (0, 10), 9
    assert guide.use_prior(0)
    guide.t[0] = 10
    assert not guide.use_prior(0)                                         # the learner from step h on
    with pytest.raises(ValueError, match="prefixes"):
        PrefixSchedule([-1, 10])
    with pytest.raises(ValueError, match="kind='nope'"):
        make_schedule({"kind": "nope"}, 10, 0)
