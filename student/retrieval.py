"""GSA retrieval for experience rehearsal: which offline trajectories a target task rehearses.

Owns the retrieval index, its cache next to the dataset, the k-nearest search and the retrieval report.
- Key of a trajectory = the frozen generalist teacher encoder's embedding of its FIRST frame (E floats).
- Query = embeddings of reset observation(s) of the target task; several queries are merged by the
  smallest distance per trajectory. Distances are faiss's squared L2.
- Only trajectories whose native action dim equals the task's are kept. GSA's loop re-searches until k
  are kept and can loop forever; here round r searches the k * 2^r nearest (or all), r < max_rounds,
  then fails with an error that says how many compatible trajectories exist and what to do.
- Index types: "flat" (IndexFlatL2, exact, default), "ivf" (IndexIVFFlat, nlist ~ sqrt(N)), "ivfpq"
  (IndexIVFPQ, compressed: for millions of trajectories); ivf types are trained on a sample of the keys.
  pca=D > 0 puts a PCA (keys E -> D dims, trained on the same sample) in front of any of them: at 10M keys of
  1024 dims only PCA + IVF fits 24 GB with recall near flat's (benchmarks/results/retrieval_scale-*.json).
- Metrics: "l2" (GSA: raw keys) or "cosine": keys minus the mean key (estimated on the same sample),
  L2-normalised, inside the faiss index (IndexPreTransform), so queries get the same transform. It
  resists hubs: a compact cluster (e.g. cheetah resets) near the mean key is not near every query.
Cache, built on demand (paths inside are relative to the dataset, so the dataset folder stays movable):
    DATASET/retrieval/<index type>-<metric>-<teacher fingerprint[:12]>/
        index.faiss  row i is the key of trajectory ids[i]
        ids.json     trajectory ids (manifest "id"), in row order
        meta.json    teacher + dataset fingerprints, index type, metric, params, N, dim (written last)
It is reused while the teacher's encoder weights are the same and its ids cover every trajectory of the
dataset (view; an id's first frame never changes, shards are immutable); otherwise it is rebuilt: a new
teacher gets its own folder, a grown dataset overwrites it. An unreadable cache is reported and rebuilt.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import math
import os
import pathlib
import time
import warnings

import faiss
import numpy as np
import torch

from core.world_model import WorldModel, preprocess

log = logging.getLogger(__name__)
CACHE = "retrieval"
INDEX_TYPES = ("flat", "ivf", "ivfpq")
METRICS = ("l2", "cosine")
TRAIN_POINTS = 64  # trained indices (ivf types, cosine) use up to max(TRAIN_POINTS * nlist, 10000) sampled keys


def teacher_fingerprint(wm: WorldModel) -> str:
    """sha1 of the encoder weights (names, dtypes, shapes, bytes) and the image shape: the keys depend
    on nothing else, so a teacher whose RSSM or decoder changed keeps its index."""
    h = hashlib.sha1(json.dumps(sorted(wm.obs_shapes.items())).encode())
    for name, value in wm.encoder.state_dict().items():
        value = value.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{value.dtype}:{tuple(value.shape)};".encode())
        h.update(value.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def dataset_fingerprint(rows: list[dict]) -> str:
    """sha1 of the manifest rows' ids and lengths, in order."""
    return hashlib.sha1("".join(f"{r['id']}:{r['length']}\n" for r in rows).encode()).hexdigest()


def _check_teacher(wm: WorldModel):
    if wm.labels:
        raise ValueError("retrieval needs a generalist (label-free) teacher; this one is conditioned on "
                         f"{wm.labels} task labels (a mixture teacher)")
    if len(wm.encoder.image_keys) != 1 or wm.encoder.vector_keys:
        raise ValueError(f"retrieval keys are image embeddings; the teacher sees {sorted(wm.obs_shapes)}")


@torch.no_grad()
def embed(wm: WorldModel, images) -> np.ndarray:
    """images (N, R, R, 3) uint8 -> teacher encoder embeddings (N, E) float32, on the teacher's device."""
    key = wm.encoder.image_keys[0]
    images = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    if images.dtype != torch.uint8 or tuple(images.shape[1:]) != wm.obs_shapes[key]:
        raise ValueError(f"images must be (N, {', '.join(map(str, wm.obs_shapes[key]))}) uint8 for this "
                         f"teacher; got {tuple(images.shape)} {images.dtype}")
    device = next(wm.encoder.parameters()).device
    obs = preprocess({key: images.to(device)}, [key])  # {key: (N, 3, R, R) float in [-0.5, 0.5]}
    return np.ascontiguousarray(wm.encoder(obs).float().cpu().numpy())  # (N, E) float32


def embed_first_frames(dataset, wm: WorldModel, indices, batch: int = 256):
    """Yields the keys (n, E) float32 of the listed trajectories of dataset, `batch` at a time."""
    indices = np.asarray(indices, np.int64)
    for start in range(0, len(indices), batch):
        yield embed(wm, dataset.first_frames(indices[start:start + batch]))  # (n, E)


def index_params(index_type: str, n: int, dim: int, nlist: int | None = None, pq_m: int | None = None,
                 pca: int | None = None) -> dict:
    """Resolved construction parameters: pca (if > 0) the dims kept; ivf nlist ~ sqrt(N); ivfpq m = the largest
    divisor of the (PCA) dim <= min(64, dim // 4) sub-quantizers with nbits <= 8 (fewer when N < 256 points)."""
    if index_type not in INDEX_TYPES:
        raise ValueError(f"index_type must be one of {INDEX_TYPES}; got {index_type!r}")
    if pca and not 0 < pca < dim:
        raise ValueError(f"pca={pca} must lie between 1 and the key dim {dim} - 1 (0: no PCA)")
    head = dict(pca=int(pca)) if pca else {}
    dim = pca or dim
    if index_type == "flat":
        return head
    params = dict(head, nlist=int(nlist or max(1, round(math.sqrt(n)))))
    if params["nlist"] > n:
        raise ValueError(f"nlist={params['nlist']} needs at least that many trajectories; the dataset has {n}")
    if index_type == "ivfpq":
        m = pq_m or max(d for d in range(1, min(64, max(1, dim // 4)) + 1) if dim % d == 0)
        if dim % m:
            raise ValueError(f"pq_m={m} must divide the key dim {dim}")
        params.update(m=int(m), nbits=int(min(8, max(1, math.floor(math.log2(max(n, 2)))))))
    return params


def new_index(index_type: str, metric: str, dim: int, params: dict) -> faiss.Index:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}; got {metric!r}")
    keys_dim, dim = dim, params.get("pca") or dim
    if index_type == "flat":
        index = faiss.IndexFlatL2(dim)
    elif index_type == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, params["nlist"], faiss.METRIC_L2)
    else:
        index = faiss.IndexIVFPQ(faiss.IndexFlatL2(dim), dim, params["nlist"], params["m"], params["nbits"])
        index.do_polysemous_training = False  # only polysemous search would use it; seconds of training
    if dim != keys_dim:  # keys (n, E) -> (n, pca) before the index
        index = faiss.IndexPreTransform(faiss.PCAMatrix(keys_dim, dim), index)
    if metric == "cosine":  # key -> (key - mean key) / norm, for stored keys and queries alike
        index = faiss.IndexPreTransform(index)
        index.prepend_transform(faiss.NormalizationTransform(keys_dim, 2.0))
        index.prepend_transform(faiss.CenteringTransform(keys_dim))
    return index  # faiss's Python wrapper keeps the sub-objects alive with the index


def build_index(dataset, wm: WorldModel, index_type: str = "flat", metric: str = "l2", nlist: int | None = None,
                pq_m: int | None = None, batch: int = 256, pca: int | None = None) -> tuple[faiss.Index, dict]:
    """Embeds the first frame of every trajectory of dataset into a new index. Returns (index, params)."""
    _check_teacher(wm)
    n, dim = len(dataset), wm.encoder.out_dim
    params = index_params(index_type, n, dim, nlist, pq_m, pca)
    index = new_index(index_type, metric, dim, params)
    if not index.is_trained:  # ivf types, cosine: train on a sample of the keys, then add all of them in order
        size = min(n, max(TRAIN_POINTS * params.get("nlist", 1), 10000))
        sample = np.sort(np.random.default_rng(0).choice(n, size, replace=False))
        keys = np.concatenate(list(embed_first_frames(dataset, wm, sample, batch)))  # (size, E)
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(threads if size >= 10000 else 1)  # small k-means: OpenMP costs more than it saves
        try:
            index.train(keys)
        finally:
            faiss.omp_set_num_threads(threads)
        if size == n:  # the sample is everything, in order: no second pass
            index.add(keys)
            return index, params
    for keys in embed_first_frames(dataset, wm, np.arange(n), batch):
        index.add(keys)
    return index, params


class RetrievalIndex:
    """The cached index of one (dataset, teacher, index type): index (faiss), ids (row -> trajectory id),
    meta (dict), folder (its cache folder), built (whether this call built it)."""

    def __init__(self, index: faiss.Index, ids: list[str], meta: dict, folder: pathlib.Path, built: bool):
        self.index, self.ids, self.meta, self.folder, self.built = index, ids, meta, folder, built

    @classmethod
    def open(cls, dataset, wm: WorldModel, index_type: str = "flat", metric: str = "l2", teacher_path=None,
             nlist: int | None = None, pq_m: int | None = None, batch: int = 256,
             pca: int | None = None) -> RetrievalIndex:
        """The cached index if it is valid for this teacher and covers every trajectory of dataset; else
        build it (and cache it; a read-only dataset folder only warns)."""
        _check_teacher(wm)
        teacher = teacher_fingerprint(wm)
        kind = f"{index_type}-pca{pca}" if pca else index_type
        folder = pathlib.Path(dataset.root) / CACHE / f"{kind}-{metric}-{teacher[:12]}"
        cached, why = cls._load(folder, teacher, index_type, metric, nlist, pq_m, pca)
        if cached is not None:
            known = set(cached.ids)
            missing = sum(r["id"] not in known for r in dataset.meta)
            if not missing:
                return cached
            why = f"{missing} trajectories of the dataset are not in it"
        log.info("building the retrieval index %s (%s) over %d trajectories", folder, why, len(dataset))
        start = time.time()
        index, params = build_index(dataset, wm, index_type, metric, nlist, pq_m, batch, pca)
        ids = [r["id"] for r in dataset.meta]
        meta = dict(teacher=teacher, teacher_file=None if teacher_path is None else pathlib.Path(teacher_path).name,
                    dataset=dataset_fingerprint(dataset.meta), index_type=index_type, metric=metric, params=params, n=len(ids),
                    dim=int(index.d), ids_sha1=hashlib.sha1(json.dumps(ids).encode()).hexdigest(),
                    build_seconds=round(time.time() - start, 3), built=time.strftime("%Y-%m-%d %H:%M:%S"))
        try:
            _write(folder, index, ids, meta)
        except OSError as e:
            warnings.warn(f"cannot cache the retrieval index in {folder} ({e}); using it uncached")
        log.info("built the retrieval index in %.1f s (%d keys of dim %d)", meta["build_seconds"], len(ids), index.d)
        return cls(index, ids, meta, folder, built=True)

    @classmethod
    def _load(cls, folder: pathlib.Path, teacher: str, index_type: str, metric: str, nlist,
              pq_m, pca=None) -> tuple[RetrievalIndex | None, str]:
        """(the cached index, "") or (None, why it cannot be used)."""
        if not (folder / "meta.json").is_file():
            return None, "no cache yet"
        try:
            meta = json.loads((folder / "meta.json").read_text())
            ids = json.loads((folder / "ids.json").read_text())
            index = faiss.read_index(str(folder / "index.faiss"))
            sha = hashlib.sha1(json.dumps(ids).encode()).hexdigest()
            if not (meta["n"] == len(ids) == index.ntotal and meta["dim"] == index.d and meta["ids_sha1"] == sha):
                raise ValueError(f"its files disagree (meta n={meta['n']} dim={meta['dim']}, {len(ids)} ids, "
                                 f"index of {index.ntotal} x {index.d})")
        except Exception as e:  # json, faiss (RuntimeError), missing keys, ...
            warnings.warn(f"the retrieval cache {folder} is unreadable ({type(e).__name__}: {e}); rebuilding it")
            return None, "unreadable cache"
        asked = {k: v for k, v in dict(nlist=nlist, m=pq_m, pca=pca or None).items() if v is not None}
        if (meta["teacher"], meta["index_type"], meta["metric"]) != (teacher, index_type, metric):
            return None, "another teacher, index type or metric"
        if any(meta["params"].get(k) != v for k, v in asked.items()):
            return None, f"index params {meta['params']} differ from the asked {asked}"
        return cls(index, ids, meta, folder, built=False), ""


def _write(folder: pathlib.Path, index: faiss.Index, ids: list[str], meta: dict):
    """Each file atomically (tmp + rename); meta.json is removed first and written last, so a killed
    build leaves a cache without meta.json, which the next call rebuilds."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meta.json").unlink(missing_ok=True)
    tmp = folder / f"index.faiss.tmp-{os.getpid()}"
    faiss.write_index(index, str(tmp))
    os.replace(tmp, folder / "index.faiss")
    for name, value in (("ids.json", ids), ("meta.json", meta)):
        tmp = folder / f"{name}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(value, indent=1 if name == "meta.json" else None))
        os.replace(tmp, folder / name)


@dataclasses.dataclass
class Retrieved:
    """What retrieve() kept, nearest first, plus what the log reports."""
    indices: np.ndarray        # (R,) int64 trajectory indices into the dataset, unique
    distances: np.ndarray      # (R,) float32 squared L2 to the nearest query (of centred unit keys: cosine)
    ids: list[str]             # (R,) trajectory ids
    queries: np.ndarray        # (Q, R, R, 3) uint8 query frames
    by_task: dict              # {(suite, task): count}
    by_embodiment: dict        # {embodiment: count}
    action_dim: int            # the task's native action dim
    compatible: int            # trajectories of the dataset with that action dim
    total: int                 # trajectories in the dataset
    rounds: int                # search rounds used
    searched: int              # neighbours per query in the last round
    built: bool                # whether the index was built (not loaded from the cache)
    index_dir: pathlib.Path    # its cache folder
    metric: str = "l2"

    def describe(self) -> str:
        d = self.distances
        parts = [f"retrieved {len(self.indices)} of {self.total} trajectories ({self.compatible} with action dim "
                 f"{self.action_dim}) for {len(self.queries)} query frames in {self.rounds} rounds",
                 "by embodiment: " + ", ".join(f"{k} {v}" for k, v in self.by_embodiment.items()),
                 "by task: " + ", ".join(f"{s}/{t} {v}" for (s, t), v in self.by_task.items())]
        if len(d):
            parts.append(f"{self.metric} distance: min {d[0]:.4g}, median {np.median(d):.4g}, max {d[-1]:.4g}")
        return "; ".join(parts)

    def metrics(self) -> dict:
        """Flat scalars for the logger."""
        out = {"retrieval/trajectories": len(self.indices), "retrieval/compatible": self.compatible,
               "retrieval/rounds": self.rounds, "retrieval/distance_max": float(self.distances.max(initial=0))}
        out.update({f"retrieval/embodiment/{k}": v for k, v in self.by_embodiment.items()})
        out.update({f"retrieval/task/{s}/{t}": v for (s, t), v in self.by_task.items()})
        return out

    def subset(self, dataset):
        """The retrieved trajectories as a dataset view (same labels and action dim), e.g. to sample
        rehearsal windows from; trajectory i of the view is indices[i]."""
        return dataset.subset(self.indices)

    def save_grid(self, path, dataset, limit: int = 64, columns: int = 16) -> pathlib.Path:
        """PNG: the query frames in the first row, then the first frames of up to `limit` retrieved
        trajectories, nearest first, `columns` per row; a white bar separates the two."""
        import matplotlib
        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
        frames = dataset.first_frames(self.indices[:limit]) if len(self.indices) else self.queries[:0]  # (n, R, R, 3)
        h, w = self.queries.shape[1:3]
        columns = max(1, min(columns, max(len(self.queries), len(frames))))

        def rows(images):  # (n, R, R, 3) -> (rows * R, columns * R, 3), grey where no frame
            count = math.ceil(len(images) / columns) * columns
            pad = np.full((count - len(images), h, w, 3), 128, np.uint8)
            tiles = np.concatenate([images, pad]).reshape(-1, columns, h, w, 3)
            return tiles.transpose(0, 2, 1, 3, 4).reshape(-1, columns * w, 3)

        bar = np.full((max(2, h // 16), columns * w, 3), 255, np.uint8)
        grid = np.concatenate([rows(self.queries[:columns]), bar] + ([rows(frames)] if len(frames) else []))
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        plt.imsave(path, grid)
        return path


def _search(index: faiss.Index, queries: np.ndarray, n: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
    """(distances (Q, n), rows (Q, n)) of the n nearest keys per query; rows -1 where none was found."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = ivf.nlist if n >= index.ntotal else min(ivf.nlist, nprobe)
    return index.search(queries, n)


def retrieve(dataset, teacher_wm: WorldModel | None, teacher_path, query_images, action_dim: int, k: int = 500,
             index_type: str = "flat", metric: str = "l2", max_rounds: int = 6, allow_fewer: bool = False,
             nlist: int | None = None, nprobe: int | None = None, pq_m: int | None = None, batch: int = 256,
             device="cpu", pca: int | None = None) -> Retrieved:
    """The k trajectories of dataset whose first frames lie nearest (teacher encoder, L2) to the query
    frames (Q, R, R, 3) uint8 (or one (R, R, 3)), among those with native action dim == action_dim.
    metric "l2" (GSA) or "cosine" (centred keys, see the module docstring); index_type "flat" | "ivf" |
    "ivfpq" (nlist, nprobe, pq_m: their settings; None = automatic); pca: dims kept by a PCA in front of the
    index (0/None: none). teacher_path names the teacher in the cache's meta.json; teacher_wm None: the teacher
    is built from it on `device`. Fewer than k compatible trajectories in the dataset: ValueError, unless
    allow_fewer (then all of them, with a warning)."""
    if teacher_wm is None:
        from teacher.model import build_teacher, read_teacher
        teacher_wm = build_teacher(read_teacher(teacher_path), device)
    queries = np.asarray(query_images)
    queries = queries[None] if queries.ndim == 3 else queries  # (Q, R, R, 3)
    if len(queries) == 0 or k < 1 or max_rounds < 1:
        raise ValueError(f"need at least one query frame, k >= 1 and max_rounds >= 1; got {len(queries)}, {k}, {max_rounds}")
    meta = dataset.meta
    compatible = np.array([int(r["action_dim"]) == int(action_dim) for r in meta])  # (N,) bool
    count = int(compatible.sum())
    dims = collections.Counter((int(r["action_dim"]), r["embodiment"]) for r in meta)
    present = ", ".join(f"{e} (dim {d}): {c}" for (d, e), c in sorted(dims.items()))
    if count == 0:
        raise ValueError(f"no trajectory of {dataset.root} has action dim {action_dim} (present: {present}); "
                         f"add offline data for this embodiment or run without retrieval rehearsal")
    want = k
    if count < k:
        message = (f"{dataset.root} holds only {count} trajectories with action dim {action_dim}, fewer than "
                   f"k={k} (present: {present})")
        if not allow_fewer:
            raise ValueError(f"{message}; lower k to at most {count}, add offline data for this embodiment, "
                             f"or pass allow_fewer=True to use all {count}")
        warnings.warn(f"{message}; using all {count}")
        want = count
    store = RetrievalIndex.open(dataset, teacher_wm, index_type, metric, teacher_path, nlist, pq_m, batch, pca)
    keys = embed(teacher_wm, queries)  # (Q, E)
    position = {r["id"]: i for i, r in enumerate(meta)}
    view = np.array([position.get(i, -1) for i in store.ids], np.int64)  # (ntotal,) index row -> dataset index
    usable = view >= 0
    usable[usable] = compatible[view[usable]]  # (ntotal,) rows of this dataset view with the task's action dim
    total = store.index.ntotal
    probe = nprobe or max(1, getattr(faiss.try_extract_index_ivf(store.index), "nlist", 1) // 16)
    for r in range(max_rounds):
        n = min(want * 2 ** r, total)
        dist, rows = _search(store.index, keys, n, probe * 2 ** r)  # (Q, n) each
        flat_d, flat_r = dist.reshape(-1), rows.reshape(-1)
        good = flat_r >= 0
        good[good] = usable[flat_r[good]]
        flat_d, flat_r = flat_d[good], flat_r[good]
        order = np.argsort(flat_d, kind="stable")
        found, first = np.unique(flat_r[order], return_index=True)  # each row at its smallest distance
        best = order[first][np.argsort(first)]  # nearest first
        found_d, found_r = flat_d[best], flat_r[best]
        # a row missing from every list is at least as far as the nearest list end: the kept ones are exact
        full = (rows >= 0).all(1) & (n < total)
        radius = dist[full, -1].min() if full.any() else np.inf
        exact = len(found_r) >= want and found_d[want - 1] <= radius
        if exact or n == total:
            break
    if len(found_r) < want:
        raise RuntimeError(
            f"after {r + 1} rounds (max_rounds={max_rounds}, the {n} nearest of {total} searched per query) only "
            f"{len(found_r)} of k={want} trajectories had action dim {action_dim}; the dataset holds {count} "
            f"(present: {present}), most of them farther from the queries than other embodiments'. Raise "
            f"max_rounds, lower k, or add offline data for this embodiment")
    if not exact and n < total:
        log.info("retrieval: several queries and max_rounds=%d reached: the kept %d may miss a nearer one", max_rounds, want)
    indices = view[found_r[:want]]
    by_task = collections.Counter((meta[i]["suite"], meta[i]["task"]) for i in indices)
    by_body = collections.Counter(meta[i]["embodiment"] for i in indices)
    out = Retrieved(indices=indices.astype(np.int64), distances=found_d[:want].astype(np.float32),
                    ids=[meta[i]["id"] for i in indices], queries=queries.astype(np.uint8),
                    by_task=dict(by_task.most_common()), by_embodiment=dict(by_body.most_common()),
                    action_dim=int(action_dim), compatible=count, total=len(meta), rounds=r + 1, searched=n,
                    built=store.built, index_dir=store.folder, metric=metric)
    log.info(out.describe())
    return out
