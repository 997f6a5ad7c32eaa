"""Minari export/import (teacher/data/minari_io.py): a small real dataset (DMC random, a Meta-World expert and a
reward-free trajectory) goes to Minari and back unchanged; a foreign Minari image dataset is imported with
padding and metadata from the flags; bad inputs are one clear line."""
import os

import gymnasium as gym
import minari
import numpy as np
import pytest
from minari.data_collector import EpisodeBuffer

from conftest import collect_random
from teacher.data.collect import main as collect
from teacher.data.dataset import OfflineDataset
from teacher.data.minari_io import export, import_minari, main, minari_root
from teacher.data.writer import DatasetWriter

IGNORED = ("id", "shard", "minari")  # new on import: trajectory id, shard, and the Minari episode it came from


def small_dataset(root):
    """2 DMC cartpole random episodes (A = 1), 1 Meta-World reach expert episode (A = 4), 1 reward-free one."""
    collect_random(root, tasks=("cartpole_balance",), episodes=2, frames=20)
    collect(["--dataset", str(root), "--suite", "metaworld", "--tasks", "reach", "--policy", "expert", "--episodes",
             "1", "--workers", "0", "--env-config", "episode_frames=40"])
    traj = OfflineDataset(root, where={"task": "cartpole_balance"}).read(0)  # real frames and actions, no reward
    traj["is_terminal"][-1] = True  # and a real end
    with DatasetWriter(root) as writer:
        writer.add(traj, dict(suite="dmc", task="cartpole_balance", embodiment="cartpole", policy="explore", extra="x"))
    return OfflineDataset(root)


def test_round_trip_real_dataset(tmp_path):
    env_before = os.environ.get("MINARI_DATASETS_PATH")
    data, root, back = tmp_path / "data", tmp_path / "minari", tmp_path / "back"
    original = small_dataset(data)
    assert sorted(r["action_dim"] for r in original.meta) == [1, 1, 1, 4] and not original.meta[3]["has_reward"]

    with pytest.raises(ValueError, match=r"native action dims \(1: cartpole; 4: sawyer\).*--per-embodiment") as e:
        export(data, "ours/test-v0", root)
    assert "\n" not in str(e.value)
    out = main(["export", "--dataset", str(data), "--minari-id", "ours/test-v0", "--root", str(root),
                "--per-embodiment"])
    ids = ["ours/cartpole/test-v0", "ours/sawyer/test-v0"]
    assert [s["id"] for s in out] == ids and [s["episodes"] for s in out] == [3, 1]
    order = [i for body in ("cartpole", "sawyer") for i, r in enumerate(original.meta) if r["embodiment"] == body]

    with minari_root(root):  # what Minari itself reads
        exported = [minari.load_dataset(i) for i in ids]
        for ds, dim, steps in zip(exported, (1, 4), (30, 20)):
            assert ds.total_episodes == len(ds) and ds.total_steps == steps
            assert ds.observation_space == gym.spaces.Dict(image=gym.spaces.Box(0, 255, (64, 64, 3), np.uint8))
            assert ds.action_space.shape == (dim,) and ds.storage.metadata["ours"]["action_dim"] == dim
        episodes = [(ep, m) for ds in exported for ep, m in
                    zip(ds.iterate_episodes(), ds.storage.get_episode_metadata(ds.episode_indices))]
    assert os.environ.get("MINARI_DATASETS_PATH") == env_before
    for (ep, emeta), i in zip(episodes, order):
        row = original.meta[i]
        traj = original.read(i, with_reward=row["has_reward"])
        np.testing.assert_array_equal(ep.observations["image"], traj["image"])  # (L, 64, 64, 3): T + 1
        np.testing.assert_array_equal(ep.actions, traj["action"][1:])  # step t leaves obs t
        np.testing.assert_array_equal(ep.rewards, traj["reward"][1:] if row["has_reward"] else 0)
        np.testing.assert_array_equal(ep.terminations, traj["is_terminal"][1:])
        assert list(ep.truncations) == [False] * (len(ep) - 1) + [not traj["is_terminal"][-1]]
        assert bool(emeta["has_reward"]) == row["has_reward"] and (ep.infos["has_reward"] == row["has_reward"]).all()
        assert emeta["seed"] == row["seed"] if row["seed"] is not None else "seed" not in emeta

    for i in ids:
        main(["import", "--minari-id", i, "--root", str(root), "--dataset", str(back), "--max-action-dim", "12"])
    again = import_minari(ids[0], back, root)  # resumable: nothing twice
    assert again["episodes"] == 0 and again["already_imported"] == 3
    restored = OfflineDataset(back, max_action_dim=12)
    assert len(restored) == 4
    for j, i in enumerate(order):
        row, new = original.meta[i], restored.meta[j]
        assert {k: v for k, v in new.items() if k not in IGNORED} == {k: v for k, v in row.items() if k not in IGNORED}
        assert new["minari"] == [f"{ids[0]}#0", f"{ids[0]}#1", f"{ids[0]}#2", f"{ids[1]}#0"][j]
        a, b = original.read(i, with_reward=row["has_reward"]), restored.read(j, with_reward=new["has_reward"])
        assert a.keys() == b.keys()
        for key in a:  # image, action (native), is_terminal, [reward]
            np.testing.assert_array_equal(a[key], b[key])
            assert a[key].dtype == b[key].dtype
    with pytest.raises(ValueError, match="has no reward"):  # still marked reward-free
        restored.read(order.index(3), with_reward=True)
    batch = restored.sample(8, 11, np.random.default_rng(0))
    assert {restored.meta[t]["action_dim"] for t in batch["traj"]} == {1, 4}
    for b, t in enumerate(batch["traj"]):  # padded to 12 with the mask = the native dims
        dim = restored.meta[t]["action_dim"]
        assert (batch["action_mask"][b] == (np.arange(12) < dim)).all() and (batch["action"][b, :, dim:] == 0).all()


def foreign_dataset(root, minari_id, obs_space, obs, steps=5):
    """A Minari dataset made by someone else: 1 episode, Box(2,) actions, rewards 1..T."""
    rng = np.random.default_rng(0)
    buffer = EpisodeBuffer(observations=obs, actions=rng.uniform(-1, 1, (steps, 2)).astype(np.float32),
                           rewards=np.arange(1, steps + 1, dtype=np.float64), terminations=np.arange(steps) == steps - 1,
                           truncations=np.zeros(steps, bool))
    with minari_root(root), pytest.warns(UserWarning):
        minari.create_dataset_from_buffers(minari_id, [buffer], observation_space=obs_space,
                                           action_space=gym.spaces.Box(-1, 1, (2,), np.float32), jpeg_encoding=False)
    return buffer


def test_foreign_image_dataset_and_clear_errors(tmp_path, capsys):
    root, back = tmp_path / "minari", tmp_path / "back"
    frames = np.random.default_rng(1).integers(0, 256, (6, 3, 32, 32), dtype=np.uint8)  # CHW, T + 1 = 6
    space = gym.spaces.Dict(pixels=gym.spaces.Box(0, 255, (3, 32, 32), np.uint8),
                            state=gym.spaces.Box(-np.inf, np.inf, (3,), np.float32))
    buffer = foreign_dataset(root, "them/pix-v1", space, dict(pixels=frames, state=np.zeros((6, 3), np.float32)))
    summary = import_minari("them/pix-v1", back, root, max_action_dim=12, meta=dict(task="pix", embodiment="arm"))
    assert summary["episodes"] == 1 and summary["transitions"] == 5
    data = OfflineDataset(back, max_action_dim=12)
    row, traj = data.meta[0], data.read(0, with_reward=True)
    assert (row["suite"], row["task"], row["embodiment"], row["policy"], row["has_reward"]) == \
        ("minari", "pix", "arm", "minari", True)
    np.testing.assert_array_equal(traj["image"], frames.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(traj["action"], np.concatenate([np.zeros((1, 2)), buffer.actions]))
    np.testing.assert_array_equal(traj["reward"], [0, 1, 2, 3, 4, 5])
    assert traj["is_terminal"].tolist() == [False] * 5 + [True]
    batch = data.sample(2, 6, np.random.default_rng(0))
    assert batch["action_mask"][0].tolist() == [1, 1] + [0] * 10

    foreign_dataset(root, "them/state-v0", gym.spaces.Box(-1, 1, (3,), np.float32), np.zeros((6, 3), np.float32))
    bad = [(lambda: import_minari("them/state-v0", back, root), "them/state-v0 has no image observations"),
           (lambda: import_minari("them/pix-v1", back, root, max_action_dim=1), "2 action dims > --max-action-dim 1"),
           (lambda: import_minari("them/pix-v1", back, root, image_key="state"), "has no image observations"),
           (lambda: import_minari("them/nothing-v0", back, root), "no Minari dataset them/nothing-v0 under"),
           (lambda: import_minari("no version", back, root), "malformed Minari dataset id"),
           (lambda: export(tmp_path / "none", "ours/x-v0", root), None)]
    for call, message in bad:
        with pytest.raises((ValueError, FileNotFoundError), match=message) as e:
            call()
        assert "\n" not in str(e.value)
    with pytest.raises(SystemExit, match="^error: no Minari dataset them/x-v0") as e:
        main(["import", "--minari-id", "them/x-v0", "--root", str(root), "--dataset", str(back)])
    assert "\n" not in str(e.value.code)
