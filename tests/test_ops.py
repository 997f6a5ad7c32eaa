import torch

from core.ops import ReturnNorm, TwoHot, lambda_returns, symexp, symlog


def test_symlog_symexp_inverse():
    x = torch.tensor([-1e4, -20.0, -1.0, -1e-3, 0.0, 1e-3, 0.5, 3.0, 1e4], dtype=torch.float64)
    assert torch.allclose(symexp(symlog(x)), x, rtol=1e-9, atol=1e-12)
    assert torch.allclose(symlog(symexp(x.clamp(-30, 30))), x.clamp(-30, 30), rtol=1e-9)
    assert symlog(torch.tensor(-5.0)) == -symlog(torch.tensor(5.0))


def test_twohot_round_trip_and_weights():
    th = TwoHot(255)
    x = torch.tensor([-300.0, -7.3, -1.0, 0.0, 0.01, 1.0, 2.5, 42.0, 1000.0])
    probs = th.encode(x)
    assert probs.shape == (9, 255)
    assert torch.allclose(probs.sum(-1), torch.ones(9))
    assert ((probs > 0).sum(-1) <= 2).all()
    decoded = symexp((probs * th.bins).sum(-1))  # expected value of the two-hot target
    assert torch.allclose(decoded, x, rtol=1e-4, atol=1e-4)
    # decoding logits that put all mass on the encoding recovers the value too
    assert torch.allclose(th.decode(torch.log(probs + 1e-12)), x, rtol=1e-3, atol=1e-3)
    # values beyond the range clamp to the edge bins
    big = th.encode(torch.tensor([1e12]))
    assert big[0, -1] == 1.0


def test_twohot_loss_is_minimised_by_target():
    th = TwoHot(255)
    target = torch.tensor([3.0])
    good = torch.log(th.encode(target) + 1e-8)
    bad = torch.zeros(1, 255)
    assert th.loss(good, target) < th.loss(bad, target)


def test_lambda_returns_by_hand():
    # H=2, N=1: R1 = 2 + .5 * (.5 * 30 + .5 * 30) = 17; R0 = 1 + .5 * (.5 * 20 + .5 * 17) = 10.25
    r = torch.tensor([[1.0], [2.0]])
    d = torch.tensor([[0.5], [0.5]])
    v = torch.tensor([[10.0], [20.0], [30.0]])
    out = lambda_returns(r, d, v, lam=0.5)
    assert torch.allclose(out, torch.tensor([[10.25], [17.0]]))
    # lam = 0 is one-step TD, lam = 1 is the discounted Monte-Carlo return bootstrapped at H
    assert torch.allclose(lambda_returns(r, d, v, 0.0), torch.tensor([[1 + 0.5 * 20], [2 + 0.5 * 30]]))
    assert torch.allclose(lambda_returns(r, d, v, 1.0), torch.tensor([[1 + 0.5 * (2 + 0.5 * 30)], [2 + 0.5 * 30]]))


def test_return_norm_percentiles():
    norm = ReturnNorm(decay=0.0)
    scale = norm.update(torch.linspace(0, 100, 10001))
    assert abs(float(scale) - 90.0) < 0.1       # P95 - P05
    assert float(norm.update(torch.zeros(100))) == 1.0  # never below 1
