"""Offline dataset format, sampler, loader and importers, on real HDF5 / npz files in tmp_path."""
import io
import json

import h5py
import numpy as np
import pytest

from teacher.data.dataset import MANIFEST_FIELDS, OfflineDataset, read_manifest
from teacher.data.writer import DatasetWriter
from teacher.data.importers import import_dreamer, main as importers_main


def make_traj(length, dim, code=0, size=8, reward=True):
    """Frames and actions encode (code, t) so that windows can be checked: image[t] = t % 256,
    action[t, j] = 1000 * code + t + j / 100 (action[0] = 0)."""
    t = np.arange(length)
    traj = dict(image=np.broadcast_to((t % 256).astype(np.uint8)[:, None, None, None], (length, size, size, 3)).copy(),
                action=(1000.0 * code + t[:, None] + np.arange(dim) / 100).astype(np.float32))
    traj["action"][0] = 0
    traj["is_terminal"] = t == length - 1
    if reward:
        traj["reward"] = (t * 0.5).astype(np.float32)
    return traj


def meta(**kw):
    return dict(dict(suite="dmc", task="walker_walk", embodiment="walker", policy="random", noise=0.1, seed=0), **kw)


def write(root, trajs, metas, **kw):
    with DatasetWriter(root, **kw) as w:
        return [w.add(t, m) for t, m in zip(trajs, metas)]


def test_round_trip(tmp_path):
    trajs = [make_traj(12, 6, size=64), make_traj(9, 4, code=1, size=64, reward=False)]
    metas = [meta(job="job-0"), meta(suite="metaworld", task="drawer-open", embodiment="sawyer", noise=None,
                                     seed=None, source="a/b.npz")]
    ids = write(tmp_path, trajs, metas, compression="gzip")
    ds = OfflineDataset(tmp_path)
    assert len(ds) == 2 and ds.transitions == 11 + 8 and ds.action_dim == 6 and ds.skipped == 0
    for i, (traj, m) in enumerate(zip(trajs, metas)):
        row = ds.meta[i]
        assert row["id"] == ids[i] and set(MANIFEST_FIELDS) <= set(row)
        assert row["length"] == len(traj["image"]) and row["action_dim"] == traj["action"].shape[1]
        assert row["has_reward"] == ("reward" in traj) and row["shard"].startswith("shards/")
        assert all(row[k] == v for k, v in m.items())
        got = ds.read(i, with_reward="reward" in traj)
        assert set(got) == set(traj)
        for k, v in traj.items():
            assert got[k].dtype == dict(image=np.uint8, action=np.float32, reward=np.float32, is_terminal=bool)[k]
            np.testing.assert_array_equal(got[k], v)
    assert set(ds.read(0)) == {"image", "action", "is_terminal"}  # reward only when asked
    with pytest.raises(ValueError, match="has_reward"):
        ds.read(1, with_reward=True)
    np.testing.assert_array_equal(ds.first_frames([1, 0]), np.zeros((2, 64, 64, 3), np.uint8))
    assert [p.name for p in (tmp_path / "shards").iterdir()] == [ds.meta[0]["shard"][7:]]  # one shard, no .tmp left
    with h5py.File(tmp_path / ds.meta[0]["shard"]) as f:
        image = f[ids[0]]["image"]
        assert image.chunks == (12, 64, 64, 3) and image.compression == "gzip"
    assert [r["id"] for r in read_manifest(tmp_path)] == ids
    assert DatasetWriter(tmp_path).done_jobs == {"job-0"} and DatasetWriter(tmp_path).done_sources == {"a/b.npz"}


def test_writer_rejects_bad_input(tmp_path):
    w = DatasetWriter(tmp_path)
    good = make_traj(5, 3)
    for traj, message in [(dict(good, image=good["image"].astype(np.float32)), "uint8"),
                          (dict(good, image=good["image"].transpose(0, 3, 1, 2)), "HWC"),
                          (dict(good, action=good["action"][:4]), "one length"),
                          (dict(good, action=good["action"][:, 0]), r"\(L, A\)"),
                          ({"image": good["image"]}, "action")]:
        with pytest.raises(ValueError, match=message):
            w.add(traj, meta())
    with pytest.raises(ValueError, match="embodiment"):
        w.add(good, {k: v for k, v in meta().items() if k != "embodiment"})
    with pytest.raises(ValueError, match="compression"):
        DatasetWriter(tmp_path, compression="zstd")
    w.close()
    assert read_manifest(tmp_path) == []


def test_sample_padding_mask_and_windows(tmp_path):
    write(tmp_path, [make_traj(40, 6, code=0), make_traj(30, 4, code=1)], [meta(), meta(embodiment="cheetah")])
    ds = OfflineDataset(tmp_path, max_action_dim=12)
    b = ds.sample(64, 10, np.random.default_rng(0), with_reward=True)
    shapes = dict(image=((64, 10, 8, 8, 3), np.uint8), action=((64, 10, 12), np.float32),
                  action_mask=((64, 12), np.float32), is_first=((64, 10), bool), is_terminal=((64, 10), bool),
                  label=((64,), np.int64), traj=((64,), np.int64), reward=((64, 10), np.float32))
    assert {k: (v.shape, v.dtype) for k, v in b.items()} == shapes
    assert set(b["traj"]) == {0, 1}
    for k in range(64):
        dim = 6 if b["traj"][k] == 0 else 4
        np.testing.assert_array_equal(b["action_mask"][k], np.arange(12) < dim)
        assert (b["action"][k, :, dim:] == 0).all()                     # padded dims exactly 0
        steps = b["image"][k, :, 0, 0, 0].astype(int)                    # t of each step
        assert (np.diff(steps) == 1).all()                               # one contiguous window
        expected = 1000.0 * b["traj"][k] + steps[:, None] + np.arange(dim) / 100
        expected[steps == 0] = 0
        np.testing.assert_allclose(b["action"][k, :, :dim], expected, rtol=1e-6)
        np.testing.assert_allclose(b["reward"][k], steps * 0.5)
        np.testing.assert_array_equal(b["is_terminal"][k], steps == ds.lengths[b["traj"][k]] - 1)
    assert b["is_first"][:, 0].all() and not b["is_first"][:, 1:].any()
    assert "reward" not in ds.sample(2, 10, np.random.default_rng(0))


def test_is_first_at_trajectory_start(tmp_path):
    write(tmp_path, [make_traj(6, 2), make_traj(6, 2, code=1)], [meta(), meta()])
    b = OfflineDataset(tmp_path).sample(8, 6, np.random.default_rng(1))  # windows = whole trajectories
    assert b["is_first"][:, 0].all() and not b["is_first"][:, 1:].any()
    assert (b["action"][:, 0] == 0).all() and (b["image"][:, 0] == 0).all()


def test_uniform_over_trajectories_and_short_ones_never_drawn(tmp_path):
    lengths = [12, 40, 300, 5]  # very different lengths: uniform windows would favour the long one
    write(tmp_path, [make_traj(n, 2, code=i) for i, n in enumerate(lengths)], [meta()] * 4)
    ds = OfflineDataset(tmp_path)
    rng = np.random.default_rng(0)
    with pytest.warns(UserWarning, match="1 of 4 trajectories .* shorter than 8"):
        drawn = np.concatenate([ds.sample(300, 8, rng)["traj"] for _ in range(10)])
    counts = np.bincount(drawn, minlength=4)
    assert counts[3] == 0 and ds.too_short == 1                        # too short: never drawn
    assert np.all(np.abs(counts[:3] - 1000) < 150), counts              # 3000 draws, sd ~26 each
    with pytest.raises(ValueError, match="no readable trajectory .* 301 observations.*longest: 300"):
        with pytest.warns(UserWarning, match="4 of 4"):
            ds.sample(2, 301, rng)


def test_where_filter_and_labels(tmp_path):
    metas = [meta(task="walker_walk"), meta(task="walker_run"),
             meta(suite="metaworld", task="push", embodiment="sawyer")]
    write(tmp_path, [make_traj(10, 3, code=i) for i in range(3)], metas)
    ds = OfflineDataset(tmp_path)
    assert ds.labels == ["push", "walker_run", "walker_walk"]
    b = ds.sample(50, 4, np.random.default_rng(0))
    assert all(ds.labels[b["label"][k]] == ds.meta[b["traj"][k]]["task"] for k in range(50))
    dmc = OfflineDataset(tmp_path, where={"suite": ["dmc"], "embodiment": ["walker"]}, label_key="embodiment")
    assert len(dmc) == 2 and dmc.labels == ["walker"] and {r["suite"] for r in dmc.meta} == {"dmc"}
    assert len(OfflineDataset(tmp_path, where={"task": "push"})) == 1
    with pytest.raises(ValueError, match="matches where\\['suite'\\]"):
        OfflineDataset(tmp_path, where={"suite": ["carla"]})
    with pytest.raises(ValueError, match="max_action_dim"):
        OfflineDataset(tmp_path, max_action_dim=2)


def test_truncated_manifest_line_is_skipped(tmp_path):
    write(tmp_path, [make_traj(10, 3)], [meta(job="a")])
    with open(tmp_path / "manifest.jsonl", "a") as f:
        f.write('{"id": "20990101-x-0000", "shard": "shards/20990101-x.h5", "len')  # a killed writer
    with pytest.warns(UserWarning, match="unparsable manifest line"):
        assert len(OfflineDataset(tmp_path)) == 1
    with pytest.warns(UserWarning, match="unparsable"):
        write(tmp_path, [make_traj(10, 3, code=1)], [meta(job="b")])   # a new writer ends the broken line
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["job"] == "b"
    with pytest.warns(UserWarning, match="manifest.jsonl:2: skipping"):
        assert len(OfflineDataset(tmp_path)) == 2


def test_corrupt_shard_is_skipped_and_counted(tmp_path):
    write(tmp_path, [make_traj(10, 3)], [meta()])
    write(tmp_path, [make_traj(10, 3, code=1), make_traj(10, 3, code=2)], [meta(), meta()])
    shard = tmp_path / read_manifest(tmp_path)[1]["shard"]
    shard.write_bytes(np.random.default_rng(0).bytes(shard.stat().st_size))  # same size, garbage
    with pytest.warns(UserWarning, match=f"unreadable shard .*{shard.name}"):
        ds = OfflineDataset(tmp_path)
    assert len(ds) == 1 and ds.skipped == 1
    assert (ds.sample(4, 5, np.random.default_rng(0))["traj"] == 0).all()


def test_missing_dataset_error(tmp_path):
    for root in (tmp_path / "nope", tmp_path):
        with pytest.raises(FileNotFoundError, match=f"{root}.*teacher.data.collect.*teacher.data.importers"):
            OfflineDataset(root)


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def gsa_file(folder, index, length, dim, rng):
    """One trajectory in the GSA published layout: timestamp-uuid-index-length.npz."""
    obs = rng.integers(0, 256, (length + 1, 3, 64, 64), dtype=np.uint8)
    action = rng.uniform(-1, 1, (length + 1, dim)).astype(np.float32)
    action[0] = 0
    discount = np.ones((length + 1, 1), np.float32)
    discount[-1] = 0
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"20240101T000000-{index:032x}-{index}-{length}.npz"
    path.write_bytes(npz_bytes(observation=obs, action=action, reward=rng.random((length + 1, 1)).astype(np.float32),
                               discount=discount))
    return path


def test_gsa_importer(tmp_path, capsys):
    src, root, rng = tmp_path / "gsa", tmp_path / "data", np.random.default_rng(0)
    good = [gsa_file(src / "dmcontrol" / "walker", 0, 6, 6, rng), gsa_file(src / "dmcontrol" / "walker", 1, 4, 6, rng),
            gsa_file(src / "metaworld" / "drawer-open-v2", 2, 5, 4, rng)]
    corrupt = src / "dmcontrol" / "walker" / "20240101T000000-bad-3-6.npz"
    corrupt.write_bytes(b"this is not a zip file at all")
    truncated = src / "metaworld" / "drawer-open-v2" / "20240101T000000-cut-4-5.npz"
    truncated.write_bytes(good[2].read_bytes()[:5000])
    originals = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}

    with pytest.warns(UserWarning, match="skipping .*-bad-3-6.npz"):
        importers_main(["gsa", str(src), str(root), "--task-map", "walker=walker_walk"])
    out = capsys.readouterr().out
    assert "imported 3 trajectories (15 transitions) from 3 files" in out and "skipped 2 unreadable files" in out
    assert {p: p.read_bytes() for p in src.rglob("*") if p.is_file()} == originals  # SRC untouched
    ds = OfflineDataset(root)
    assert [(r["suite"], r["task"], r["embodiment"], r["action_dim"], r["policy"], r["noise"]) for r in ds.meta] == [
        ("dmc", "walker_walk", "walker", 6, "gsa-published", None)] * 2 + [("metaworld", "drawer-open", "sawyer", 4,
                                                                            "gsa-published", None)]
    assert [r["source"] for r in ds.meta] == [p.relative_to(src).as_posix() for p in good]
    for i, path in enumerate(good):
        with np.load(path) as f:
            got = ds.read(i, with_reward=True)
            np.testing.assert_array_equal(got["image"], f["observation"].transpose(0, 2, 3, 1))
            np.testing.assert_array_equal(got["action"], f["action"])
            np.testing.assert_array_equal(got["reward"], f["reward"][:, 0])
            np.testing.assert_array_equal(got["is_terminal"], f["discount"][:, 0] == 0)

    manifest = (root / "manifest.jsonl").read_bytes()
    with pytest.warns(UserWarning, match="skipping"):
        importers_main(["gsa", str(src), str(root)])  # re-run: nothing new
    assert "imported 0 trajectories" in capsys.readouterr().out and (root / "manifest.jsonl").read_bytes() == manifest


def test_dreamer_importer(tmp_path):
    src, root, rng = tmp_path / "replay", tmp_path / "data", np.random.default_rng(0)
    src.mkdir()
    n = 12  # two episodes in one file (is_first at 0 and 7), actions padded to 12 columns
    action = np.zeros((n, 12), np.float32)
    action[:, :6] = rng.uniform(-1, 1, (n, 6))
    is_first = np.zeros(n, bool)
    is_first[[0, 7]] = True
    image = rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
    (src / "s00-0000000-12.npz").write_bytes(npz_bytes(
        image=image, action=action, reward=np.arange(n, dtype=np.float32), is_first=is_first,
        is_last=np.roll(is_first, -1), is_terminal=np.arange(n) == 6))
    (src / "ep-discount.npz").write_bytes(npz_bytes(image=image[:5], action=action[:5],
                                                    discount=np.array([1, 1, 1, 1, 0.0])))
    (src / "ep-lengths.npz").write_bytes(npz_bytes(image=image[:5], action=action[:4]))
    (src / "ep-cut.npz").write_bytes((src / "ep-discount.npz").read_bytes()[:-100])
    with pytest.warns(UserWarning, match="skipping .*ep-lengths.npz: ValueError: inconsistent lengths"):
        summary = import_dreamer(src, root, "dmc", "walker_walk", "walker", policy="dreamer-expert", noise=0.3,
                                 seed=1, action_dim=6)
    assert summary["trajectories"] == 3 and summary["transitions"] == 6 + 4 + 4 and summary["skipped_files"] == 2
    assert (src / "ep-lengths.npz").exists() and (src / "ep-cut.npz").exists()
    ds = OfflineDataset(root)
    by_source = {}
    for i, r in enumerate(ds.meta):
        assert (r["action_dim"], r["policy"], r["noise"], r["seed"]) == (6, "dreamer-expert", 0.3, 1)
        by_source.setdefault(r["source"], []).append(ds.read(i, with_reward=r["has_reward"]))
    first, second = by_source["s00-0000000-12.npz"]
    np.testing.assert_array_equal(first["image"], image[:7])
    np.testing.assert_array_equal(second["image"], image[7:])
    np.testing.assert_array_equal(second["action"][1:], action[8:, :6])
    assert (second["action"][0] == 0).all() and first["is_terminal"][-1] and not second["is_terminal"].any()
    np.testing.assert_array_equal(second["reward"], np.arange(7, 12))
    (only,) = by_source["ep-discount.npz"]
    np.testing.assert_array_equal(only["is_terminal"], [0, 0, 0, 0, 1])
    with pytest.warns(UserWarning):
        again = import_dreamer(src, root, "dmc", "walker_walk", "walker", action_dim=6)
    assert again["trajectories"] == 0 and again["already_imported"] == 2 and len(read_manifest(root)) == 3


def test_loader_with_two_workers(tmp_path):
    import torch

    write(tmp_path, [make_traj(30, 6, code=i, size=16) for i in range(4)], [meta()] * 4)
    ds = OfflineDataset(tmp_path, max_action_dim=12)
    batches = []
    for batch, _ in zip(ds.loader(3, 10, workers=2, seed=0), range(4)):
        batches.append(batch)
    for b in batches:
        assert b["image"].shape == (3, 10, 16, 16, 3) and b["image"].dtype == torch.uint8
        assert b["action"].shape == (3, 10, 12) and b["action_mask"].shape == (3, 12)
        assert b["is_first"].dtype == torch.bool and b["label"].dtype == torch.int64
    assert not torch.equal(batches[0]["action"], batches[1]["action"])  # the two workers draw differently


def test_damaged_chunk_is_skipped_while_sampling(tmp_path):
    flat = [dict(image=np.full((40, 8, 8, 3), 7 + k, np.uint8), action=np.zeros((40, 2), np.float32)) for k in range(2)]
    write(tmp_path, flat, [meta(), meta()])  # compressible frames: lzf notices the damage
    row = read_manifest(tmp_path)[0]
    with h5py.File(tmp_path / row["shard"]) as f:
        chunk = f[row["id"]]["image"].id.get_chunk_info(0)  # first compressed chunk of trajectory 0
    with open(tmp_path / row["shard"], "r+b") as f:
        f.seek(chunk.byte_offset)
        f.write(np.random.default_rng(0).bytes(chunk.size))
    ds = OfflineDataset(tmp_path)  # metadata is intact: both trajectories are listed
    assert len(ds) == 2
    with pytest.warns(UserWarning, match=f"skipping unreadable trajectory {row['id']}"):
        drawn = np.concatenate([ds.sample(8, 40, np.random.default_rng(s))["traj"] for s in range(4)])
    assert set(drawn) == {1} and ds.skipped_trajectories == 1


def test_split_is_stable_and_keeps_labels(tmp_path):
    write(tmp_path, [make_traj(10, 2, code=i) for i in range(40)], [meta(task=f"t{i % 3}") for i in range(40)])
    ds = OfflineDataset(tmp_path)
    train, heldout = ds.split(0.25, seed=0)
    ids = lambda d: {r["id"] for r in d.meta}  # noqa: E731
    assert ids(train) | ids(heldout) == ids(ds) and not ids(train) & ids(heldout) and 3 <= len(heldout) <= 20
    assert train.labels == heldout.labels == ds.labels and train.transitions + heldout.transitions == ds.transitions
    b = heldout.sample(16, 5, np.random.default_rng(0))
    assert all(heldout.labels[b["label"][k]] == heldout.meta[b["traj"][k]]["task"] for k in range(16))
    write(tmp_path, [make_traj(10, 2, code=40 + i) for i in range(10)], [meta()] * 10)  # the dataset grows
    assert ids(heldout) <= ids(OfflineDataset(tmp_path).split(0.25, seed=0)[1])       # same ones still held out
    assert len(ds.split(0.001)[1]) == 1
