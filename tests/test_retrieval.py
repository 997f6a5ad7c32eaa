"""GSA retrieval (student/retrieval.py) on real DMC data and real faiss indices: nearest trajectories by
first-frame embedding, the action-dim filter with bounded rounds, the on-disk cache, ivf types, the grid."""
import json
import shutil

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose
from core.world_model import WorldModel
from envs import make_env
from envs.list import suite_config
from student.retrieval import RetrievalIndex, retrieve
from teacher.data.dataset import OfflineDataset
from teacher.data.writer import DatasetWriter
from teacher.model import build_teacher, read_teacher, save_teacher

A = 6  # walker and cheetah both have 6 native action dims
FRAMES = 24  # env frames per episode (action repeat 2: 13 observations)


def collect(root, task, episodes, seed):
    """Random-policy episodes of one DMC task; each reset draws a new initial pose, so first frames differ."""
    rng = np.random.default_rng(seed)
    env = make_env({**suite_config("dmc"), "episode_frames": FRAMES}, task, seed, A)
    with DatasetWriter(root) as writer:
        for ep in range(episodes):
            obs, images, actions = env.reset(), [], []
            images.append(obs["image"]), actions.append(np.zeros(env.spec.native_action_dim, np.float32))
            while not obs["is_last"]:
                a = rng.uniform(-1, 1, A).astype(np.float32) * env.spec.action_mask
                obs = env.step(a)
                images.append(obs["image"]), actions.append(a[: env.spec.native_action_dim])
            writer.add(dict(image=np.stack(images), action=np.stack(actions)),
                       dict(suite="dmc", task=task, embodiment=env.spec.embodiment, policy="random", seed=seed))
    env.close()


def resets(task, seed, count=3):
    """(count, 64, 64, 3) reset observations of task from a fresh env (seeds unused by the dataset)."""
    env = make_env({**suite_config("dmc"), "episode_frames": FRAMES}, task, seed, A)
    frames = np.stack([env.reset()["image"] for _ in range(count)])
    env.close()
    return frames


def make_teacher(path, seed):
    """An UNTRAINED tiny generalist world model saved as a teacher file: a random conv encoder already
    separates walker from cheetah frames, and it keeps the test fast (no pretraining)."""
    torch.manual_seed(seed)
    cfg = OmegaConf.merge(compose("model=tiny").model.wm, {"reward_head": False, "cont_head": False})
    wm = WorldModel({"image": (64, 64, 3)}, 12, cfg)
    save_teacher(path, wm, "generalist", [], "task", dataset={}, step=0, config={})
    return build_teacher(read_teacher(path))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("base") / "data"
    collect(root, "walker_walk", 12, seed=1)
    collect(root, "cheetah_run", 12, seed=2)
    return root


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    return make_teacher(path, 0), path


@pytest.fixture(scope="module")
def queries():
    return {"walker": resets("walker_walk", 100), "cheetah": resets("cheetah_run", 200)}


@pytest.fixture
def data(base, tmp_path):
    """A private copy of the base dataset (tests add trajectories and caches to it)."""
    return shutil.copytree(base, tmp_path / "data")


def test_retrieves_the_query_embodiment_nearest_first(data, teacher, queries, tmp_path):
    """Walker resets have random poses (first frames far apart), cheetah resets are alike: with raw L2 the
    compact cheetah cluster is a hub near every query (this untrained encoder kept 4-12 walkers of 12 for
    walker queries, depending on its init seed), so walker is checked with the centred cosine metric."""
    wm, path = teacher
    dataset = OfflineDataset(data)
    for body, metric in (("walker", "cosine"), ("cheetah", "cosine"), ("cheetah", "l2")):
        got = retrieve(dataset, wm, path, queries[body], A, k=12, metric=metric)
        assert len(got.indices) == 12 and len(set(got.indices.tolist())) == 12
        bodies = [dataset.meta[i]["embodiment"] for i in got.indices]
        assert bodies.count(body) >= 0.9 * 12, (body, got.describe())
        assert np.all(np.diff(got.distances) >= 0)
        assert got.by_embodiment[body] == bodies.count(body) and sum(got.by_task.values()) == 12
        assert got.metrics()["retrieval/trajectories"] == 12 and body in got.describe()
        assert got.ids == [dataset.meta[i]["id"] for i in got.indices]
        assert [r["embodiment"] for r in got.subset(dataset).meta] == bodies
    one = retrieve(dataset, wm, path, queries["cheetah"][0], A, k=3)  # a single (R, R, 3) query frame
    assert len(one.indices) == 3 and not one.built
    grid = got.save_grid(tmp_path / "grid.png", dataset, limit=10, columns=5)
    import matplotlib.pyplot as plt
    image = plt.imread(grid)  # 1 query row (3 frames + 2 grey), a 4-pixel bar, 2 rows of retrieved frames
    assert image.shape[:2] == (64 + 4 + 2 * 64, 5 * 64)


def test_action_dim_filter_and_bounded_rounds(data, teacher, queries):
    wm, path = teacher
    collect(data, "cartpole_balance", 6, seed=3)  # action dim 1
    dataset = OfflineDataset(data)
    assert len(dataset) == 30
    got = retrieve(dataset, wm, path, queries["walker"], A, k=24)
    assert sorted(set(dataset.meta[i]["embodiment"] for i in got.indices)) == ["cheetah", "walker"]
    with pytest.raises(ValueError, match=r"only 24 trajectories with action dim 6.*lower k to at most 24"):
        retrieve(dataset, wm, path, queries["walker"], A, k=25)
    with pytest.warns(UserWarning, match="using all 24"):
        fewer = retrieve(dataset, wm, path, queries["walker"], A, k=500, allow_fewer=True)
    assert sorted(fewer.indices.tolist()) == sorted(got.indices.tolist())
    # cartpole queries: their nearest 20 of 30 hold the 6 cartpole ones, so one round keeps only 14
    carts = resets("cartpole_balance", 300)
    with pytest.raises(RuntimeError, match=r"after 1 rounds.*only 1[0-9] of k=20.*holds 24"):
        retrieve(dataset, wm, path, carts, A, k=20, max_rounds=1)
    two = retrieve(dataset, wm, path, carts, A, k=20, max_rounds=2)  # round 2 searches all 30
    assert two.rounds == 2 and all(dataset.meta[i]["action_dim"] == A for i in two.indices)
    cart = retrieve(dataset, wm, path, carts, 1, k=6)
    assert {dataset.meta[i]["task"] for i in cart.indices} == {"cartpole_balance"}
    with pytest.raises(ValueError, match="no trajectory .* has action dim 4"):
        retrieve(dataset, wm, path, carts, 4, k=6)


def test_cache_reuse_rebuild_and_move(data, teacher, queries, tmp_path):
    wm, path = teacher
    first = retrieve(OfflineDataset(data), wm, path, queries["walker"], A, k=12)
    folder = first.index_dir
    assert first.built and folder.parent == data / "retrieval"
    meta = json.loads((folder / "meta.json").read_text())
    ids = json.loads((folder / "ids.json").read_text())
    assert ids == [r["id"] for r in OfflineDataset(data).meta] and meta["n"] == 24 and meta["index_type"] == "flat"
    assert meta["teacher_file"] == "teacher.pt" and str(tmp_path) not in (folder / "meta.json").read_text()
    stamp = (folder / "index.faiss").stat().st_mtime_ns
    again = retrieve(OfflineDataset(data), wm, path, queries["walker"], A, k=12)
    assert not again.built and (folder / "index.faiss").stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again.indices, first.indices)
    # another teacher (other weights): its own index; the first one stays valid
    other = make_teacher(tmp_path / "other.pt", 1)
    assert retrieve(OfflineDataset(data), other, tmp_path / "other.pt", queries["walker"], A, k=12).built
    assert not retrieve(OfflineDataset(data), wm, path, queries["walker"], A, k=12).built
    # moving the dataset folder keeps the cache valid
    moved = shutil.move(str(data), str(tmp_path / "moved"))
    after = retrieve(OfflineDataset(moved), wm, path, queries["walker"], A, k=12)
    assert not after.built and after.index_dir.parent.parent == tmp_path / "moved"
    np.testing.assert_array_equal(after.indices, first.indices)
    # a filtered view of the dataset is covered by the cached index
    walkers = OfflineDataset(moved, where={"embodiment": "walker"})
    assert not retrieve(walkers, wm, path, queries["walker"], A, k=12).built
    # appending a trajectory rebuilds
    dataset = OfflineDataset(moved)
    with DatasetWriter(moved) as writer:
        writer.add(dataset.read(0), dict(dataset.meta[0], seed=99))
    grown = retrieve(OfflineDataset(moved), wm, path, queries["walker"], A, k=12)
    assert grown.built and json.loads((grown.index_dir / "meta.json").read_text())["n"] == 25
    # an unreadable cache is reported and rebuilt; the other teacher's index is left alone
    (grown.index_dir / "index.faiss").write_bytes(b"not an index")
    others = [p for p in (tmp_path / "moved" / "retrieval").iterdir() if p != grown.index_dir]
    with pytest.warns(UserWarning, match="unreadable"):
        assert retrieve(OfflineDataset(moved), wm, path, queries["walker"], A, k=12).built
    assert RetrievalIndex.open(OfflineDataset(moved), wm).built is False
    assert all((p / "index.faiss").is_file() for p in others) and len(others) == 1


def test_ivf_types_find_mostly_the_same_neighbours(data, teacher, queries):
    wm, path = teacher
    dataset = OfflineDataset(data)
    for body, metric in (("walker", "cosine"), ("cheetah", "cosine"), ("walker", "l2")):
        flat = retrieve(dataset, wm, path, queries[body], A, k=12, metric=metric)
        ivf = retrieve(dataset, wm, path, queries[body], A, k=12, metric=metric, index_type="ivf", nprobe=1)
        assert ivf.index_dir.name.startswith(f"ivf-{metric}-")
        assert json.loads((ivf.index_dir / "meta.json").read_text())["params"] == {"nlist": 5}  # ~ sqrt(24)
        assert len(set(ivf.indices.tolist()) & set(flat.indices.tolist())) >= 10, (flat.describe(), ivf.describe())
        if metric == "cosine":
            pq = retrieve(dataset, wm, path, queries[body], A, k=12, metric=metric, index_type="ivfpq")
            bodies = [dataset.meta[i]["embodiment"] for i in pq.indices]
            assert len(set(pq.indices.tolist())) == 12 and bodies.count(body) >= 10, pq.describe()


def test_targets_benchmark_measures_retrieval_purity(data, teacher):
    """benchmarks.targets --teacher: the share of retrieved trajectories that are the target task's own."""
    from benchmarks.targets import retrieval_purity
    out = retrieval_purity(OfflineDataset(data, max_action_dim=12), str(teacher[1]), "dmc", "walker_walk", k=6)
    assert out["retrieval_k"] == 6
    assert out["retrieval_purity"] == 1.0 and out["retrieval_others"] == {}  # the walker's frames, as above
    mixed = retrieval_purity(OfflineDataset(data, max_action_dim=12), str(teacher[1]), "dmc", "walker_walk", k=18)
    assert mixed["retrieval_k"] == 18 and set(mixed["retrieval_others"]) == {"cheetah_run"}  # more than 12 walkers
    assert mixed["retrieval_purity"] * 18 + mixed["retrieval_others"]["cheetah_run"] == pytest.approx(18)


def test_a_pca_in_front_keeps_the_neighbours_and_its_own_cache(data, teacher, queries):
    wm, path = teacher
    dataset = OfflineDataset(data)
    dim = wm.encoder.out_dim
    for body, metric, kind in (("walker", "l2", "flat"), ("cheetah", "cosine", "ivf")):
        flat = retrieve(dataset, wm, path, queries[body], A, k=12, metric=metric)
        reduced = retrieve(dataset, wm, path, queries[body], A, k=12, metric=metric, index_type=kind, pca=16, nprobe=5)
        assert reduced.index_dir.name.startswith(f"{kind}-pca16-{metric}-")
        meta = json.loads((reduced.index_dir / "meta.json").read_text())
        assert meta["params"]["pca"] == 16 and meta["dim"] == dim  # keys stay E-dim; the index holds 16
        assert len(set(reduced.indices.tolist()) & set(flat.indices.tolist())) >= 10, (flat.describe(), reduced.describe())
        again = retrieve(dataset, wm, path, queries[body], A, k=12, metric=metric, index_type=kind, pca=16, nprobe=5)
        assert again.index_dir == reduced.index_dir and (again.indices == reduced.indices).all()
    with pytest.raises(ValueError, match=f"pca={dim} must lie between 1 and the key dim"):
        retrieve(dataset, wm, path, queries["walker"], A, k=12, pca=dim)
