import numpy as np
import pytest

from core.replay import Replay


def step(i, first=False, last=False):
    return dict(image=np.full((4, 4, 3), i % 256, np.uint8), action=np.full(2, i, np.float32),
                reward=np.float32(i), is_first=first, is_last=last, is_terminal=False)


def test_ring_keeps_newest_and_sequences_are_contiguous(tmp_path):
    rep = Replay(tmp_path, capacity=10, streams=1, image_shape=(4, 4, 3), act_dim=2)
    for i in range(25):
        rep.add(0, step(i, first=i % 7 == 0, last=i % 7 == 6))
    assert len(rep) == 10 and rep.total == 25
    batch = rep.sample(64, 4)
    assert batch["image"].shape == (64, 4, 4, 4, 3) and batch["action"].shape == (64, 4, 2)
    r = batch["reward"]
    assert (r >= 15).all() and (np.diff(r, axis=1) == 1).all()  # newest 10 steps, in order


def test_files_reload_into_the_same_ring(tmp_path):
    rep = Replay(tmp_path, capacity=100, streams=2, image_shape=(4, 4, 3), act_dim=2)
    for i in range(30):
        for s in range(2):
            rep.add(s, step(i + 100 * s, first=i == 0, last=i == 19))
    rep.flush()
    again = Replay(tmp_path, capacity=100, streams=2, image_shape=(4, 4, 3), act_dim=2)
    again.load(rep.files)
    assert len(again) == len(rep) == 60
    for k in rep.data:
        assert np.array_equal(again.data[k][:, :30], rep.data[k][:, :30])
    (tmp_path / rep.files[0]).write_bytes(b"not a zip")
    with pytest.raises(RuntimeError, match="unreadable"):
        Replay(tmp_path, capacity=100, streams=2, image_shape=(4, 4, 3), act_dim=2).load(rep.files)
