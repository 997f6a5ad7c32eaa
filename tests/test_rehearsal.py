"""Experience rehearsal: batch composition, reward masking, and the loop's batch-source seam."""
import numpy as np
import pytest
import torch

from core.replay import Replay
from student.rehearsal import Rehearsal
from teacher.data.dataset import OfflineDataset
from teacher.data.writer import DatasetWriter

A = 12


def online_replay(tmp_path, steps=80):
    replay = Replay(tmp_path / "replay", 10_000, 1, (64, 64, 3), A, seed=0)
    for t in range(steps):
        replay.add(0, dict(image=np.full((64, 64, 3), 10, np.uint8), reward=np.float32(1.0), is_first=t == 0,
                           is_last=False, is_terminal=False, action=np.r_[np.ones(2), np.zeros(A - 2)].astype(np.float32)))
    return replay


def offline_data(tmp_path, n=5, length=30):
    with DatasetWriter(tmp_path / "data") as writer:
        for i in range(n):
            writer.add(dict(image=np.full((length, 64, 64, 3), 200, np.uint8),
                            action=np.full((length, 6), -1.0, np.float32), reward=np.full(length, 5.0, np.float32)),
                       dict(suite="dmc", task="walker_walk", embodiment="walker", policy="random", noise=None, seed=i))
    return OfflineDataset(tmp_path / "data", max_action_dim=A)


@pytest.mark.parametrize("batch,share,offline", [(16, 0.25, 4), (8, 0.25, 2), (16, 0.0, 0), (4, 0.9, 3)])
def test_batch_composition_matches_the_offline_share(tmp_path, batch, share, offline):
    source = Rehearsal(online_replay(tmp_path), offline_data(tmp_path), share, seed=0)
    out = source(batch, 10)
    assert out["image"].shape == (batch, 10, 64, 64, 3) and out["action"].shape == (batch, 10, A)
    from_offline = out["image"][:, 0, 0, 0, 0] == 200                     # (B,) rows that came from the dataset
    assert from_offline.sum() == offline and not from_offline[: batch - offline].any()
    np.testing.assert_array_equal(out["reward_mask"], np.repeat(~from_offline[:, None], 10, 1).astype(np.float32))
    assert (out["reward"][from_offline] == 0).all()                      # offline rewards never reach the model
    assert (out["action"][from_offline][..., 6:] == 0).all()             # padded dims stay zero
    assert out["is_first"][from_offline, 0].all()                      # offline windows start fresh
    with pytest.raises(ValueError, match="offline_share"):
        Rehearsal(online_replay(tmp_path / "x"), None, 1.0)


def test_reward_head_learns_from_online_rows_only(tmp_path, tiny_cfg):
    from core.agent import Agent
    mask = np.r_[np.ones(6), np.zeros(A - 6)].astype(np.float32)
    agent = Agent({"image": (64, 64, 3)}, mask, tiny_cfg.model, torch.device("cpu"))
    batch = {k: torch.as_tensor(v) for k, v in Rehearsal(online_replay(tmp_path), offline_data(tmp_path), 0.5)(4, 8).items()}
    torch.manual_seed(0)
    base = agent.wm.loss(batch)[0]["reward"]
    changed = dict(batch, reward=batch["reward"].clone())
    changed["reward"][2:] = 100.0                                         # the offline rows' (masked) rewards
    torch.manual_seed(0)
    other = agent.wm.loss(changed)[0]["reward"]
    torch.testing.assert_close(base, other)
    assert base[2:].abs().max() == 0 and base[:2].mean() > 0


@pytest.mark.parametrize("imagine_offline", [True, False])
def test_imagination_starts_from_the_online_rows_only_when_asked(tmp_path, tiny_cfg, imagine_offline):
    from types import SimpleNamespace

    from core.agent import Agent
    from student import rehearsal
    mask = np.r_[np.ones(6), np.zeros(A - 6)].astype(np.float32)
    agent = Agent({"image": (64, 64, 3)}, mask, tiny_cfg.model, torch.device("cpu"))
    ctx = SimpleNamespace(agent=agent, replay=online_replay(tmp_path), run=SimpleNamespace(seed=0),
                          artifacts={"retrieved": SimpleNamespace(subset=offline_data(tmp_path))},
                          method={"offline_share": 0.25, "imagine_offline": imagine_offline},
                          rng=lambda name, seed: np.random.default_rng(seed))
    ctx.method = SimpleNamespace(get=ctx.method.get, **ctx.method)
    ctx.set_batch_source = lambda fn: setattr(ctx, "source", fn)
    rehearsal.attach(ctx)
    batch = {k: torch.as_tensor(v) for k, v in ctx.source(8, 6).items()}   # 6 online rows, then 2 offline
    seen, loss, posts, wm_loss = [], agent.ac.loss, [], agent.wm.loss
    agent.ac.loss = lambda wm, start: seen.append(start) or loss(wm, start)
    agent.wm.loss = lambda b: (lambda out: posts.append(out[1]) or out)(wm_loss(b))
    agent.train_step(batch)
    rows = 8 if imagine_offline else 6
    for k, v in posts[0].items():  # the posterior of the batch's first rows (B, T, ...) -> (rows * T, ...)
        torch.testing.assert_close(seen[0][k], v[:rows].detach().flatten(0, 1))
