"""Retrieval at scale: building and querying GSA's retrieval index over millions of first-frame keys.

    python -m benchmarks.retrieval_scale [--sizes 1000000 10000000] [--dim 1024] [--types flat ivf ivfpq]
        [--pca 0 256] [--k 10 500] [--queries 100] [--nprobe 1 8 32] [--clusters 1000] [--add-batch 256]
        [--memory-limit-gb 20] [--out benchmarks/results/retrieval_scale.json] [--dry-run]

Per (N keys, index type, PCA dim): build seconds (train + add, --add-batch keys per index.add as
build_index adds them; key generation is timed apart), index
bytes (faiss's serialisation, counted as it streams), peak RSS (VmHWM, reset per configuration), and
per nprobe (the list, plus `retrieve`'s default nlist // 16, marked *): ms per single query (the first
--single queries one at a time), ms per query in one batch of --queries, recall@k for each --k against the
exact k nearest (squared L2), nprobe used. Searches ask for max(--k) neighbours at once (GSA's k = 500);
recall@10 is read from the first 10. The indices are made by student.retrieval.index_params / new_index,
as a gsa run makes them (metric l2; nlist ~ sqrt(N); IVF-PQ m = largest divisor of dim <= min(64, dim//4),
8 bits; trained on max(TRAIN_POINTS * nlist, 10000) keys); --pca D > 0 puts a faiss PCAMatrix (dim -> D,
trained on the same sample) in front of that index, as the library does with `pca=D` (method.retrieval.pca).

Keys are generated, never stored: a mixture of --clusters centres (tasks x reset conditions) with
log-normal (Zipf-like) weights, per-cluster anisotropic noise on a shared within-cluster basis (each cluster
its own log-normal scale per axis), and an isotropic floor. Calibration: with the real keys of --calibration
(a faiss index of first-frame keys of the same dim), k-means (n / 10 clusters) splits them into centres and
within-cluster residuals; the centres' PCA (<= 64 axes) gives the spread of the generated centres, the
residuals' PCA (<= 128 axes) the within-cluster axes, the rest of the residual variance the floor; the mean
key is theirs. Without that file (CI): power-law spectra with the totals measured on those keys (mean
norm 10.9, between-cluster variance 60, within 2.2), on random orthonormal axes. Row i is the same for every
N (fixed chunks of CHUNK rows, each from its own seed), so the exact k nearest come from a streamed scan
over the regenerated chunks (faiss.knn per chunk, merged), holding one chunk: the ground truth at 10M,
where no flat index fits; where flat is built it must agree (flat_vs_exact).

Memory: a configuration whose estimate (see estimate_bytes: the stored index with its growth while
adding, PQ tables, plus the training sample or one generated chunk) exceeds the limit (--memory-limit-gb,
lowered to what the machine has available) is skipped with the reason. glibc's mmap threshold is fixed
at 256 KiB, so freed growth buffers leave RSS (a gsa run's tuned malloc, MALLOC_MMAP_MAX_=0, keeps them:
there, expect more). Prints a markdown table, writes JSON (default benchmarks/results/retrieval_scale.json).
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import pathlib
import platform
import time

import faiss
import numpy as np

from student.retrieval import TRAIN_POINTS, _search, index_params, new_index

CHUNK = 65536          # rows per generated chunk (fixed: row i never depends on N)
LIST_SLACK = 1.5       # IVF inverted lists: std::vectors grown by doubling (measured ~1.0x resident with MMAP_THRESHOLD)
ADD_BATCH = 256        # keys per index.add, as student.retrieval.build_index adds them (its batch default)
MMAP_THRESHOLD = 1 << 18  # glibc M_MMAP_THRESHOLD (fixed): freed growth buffers go back to the kernel
REAL_KEYS = "/work/runs/noncurated/data/retrieval/flat-l2-c7542e8236fb/index.faiss"  # tiny teacher, 536 keys
FALLBACK = dict(mean_norm=10.9, between_var=60.0, within_var=2.2, floor_share=0.1)  # measured on REAL_KEYS
GB = 1e9


def _pca(x: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray, float]:
    """x (n, d) centred rows -> axes (r, d), variances (r,), the variance left outside them."""
    _, s, vt = np.linalg.svd(x.astype(np.float64), full_matrices=False)
    var = s ** 2 / len(x)                                                  # (min(n, d),)
    r = int(min(rank, (var > 1e-9 * var[0]).sum()))
    return vt[:r].astype(np.float32), var[:r].astype(np.float32), float(var[r:].sum())


def calibrate(dim: int, path: str | None, seed: int = 0) -> dict:
    """The generator's parameters (see the module docstring) from real keys, or the fallback."""
    real = None
    if path and pathlib.Path(path).is_file():
        index = faiss.read_index(str(path))
        if index.d == dim and index.ntotal >= 20:
            real = index.reconstruct_n(0, index.ntotal)                    # (n, dim) float32
    if real is not None:
        k = max(2, len(real) // 10)
        km = faiss.Kmeans(dim, k, niter=20, seed=seed, min_points_per_centroid=1)
        km.train(real)
        centre = km.centroids[km.index.search(real, 1)[1][:, 0]]           # (n, dim) each key's centre
        mean = real.mean(0)
        b_axes, b_var, _ = _pca(centre - mean, 64)
        w_axes, w_var, rest = _pca(real - centre, 128)
        source = f"{path} ({len(real)} keys, k-means {k})"
    else:
        rng = np.random.default_rng(seed)
        mean = np.abs(rng.standard_normal(dim)).astype(np.float32)
        mean *= FALLBACK["mean_norm"] / np.linalg.norm(mean)
        rb, rw = min(48, dim // 2), min(128, dim // 2)
        b_var = np.arange(1, rb + 1, dtype=np.float32) ** -2.0
        w_var = np.arange(1, rw + 1, dtype=np.float32) ** -1.0
        b_var *= FALLBACK["between_var"] / b_var.sum()
        w_var *= FALLBACK["within_var"] * (1 - FALLBACK["floor_share"]) / w_var.sum()
        rest = FALLBACK["within_var"] * FALLBACK["floor_share"]
        b_axes = np.linalg.qr(rng.standard_normal((dim, rb)))[0].T.astype(np.float32)   # (rb, dim)
        w_axes = np.linalg.qr(rng.standard_normal((dim, rw)))[0].T.astype(np.float32)   # (rw, dim)
        source = "fallback (power-law spectra, totals of the tiny teacher's keys)"
    return dict(source=source, mean=mean.astype(np.float32), between_axes=b_axes, between_var=b_var,
                within_axes=np.ascontiguousarray(w_axes), within_var=w_var, floor_var=rest / dim)


class KeyGenerator:
    """Reproducible first-frame keys: chunk c = rows [c * CHUNK, (c + 1) * CHUNK) from seed (seed, 0, c)."""

    def __init__(self, cal: dict, clusters: int, seed: int = 0):
        rng = np.random.default_rng([seed, 1])
        self.cal, self.seed, self.dim = cal, seed, len(cal["mean"])
        z = rng.standard_normal((clusters, len(cal["between_var"]))).astype(np.float32)
        self.centres = cal["mean"] + (z * np.sqrt(cal["between_var"])) @ cal["between_axes"]   # (C, dim)
        spread = np.exp(0.5 * rng.standard_normal((clusters, len(cal["within_var"]))) - 0.25)  # E[spread^2] = 1
        self.scales = (spread * np.sqrt(cal["within_var"])).astype(np.float32)                # (C, rw)
        weight = np.exp(rng.standard_normal(clusters))                                        # log-normal sizes
        self.weights = weight / weight.sum()                                                  # (C,)
        self.floor = np.float32(math.sqrt(cal["floor_var"] * 12 / (256 ** 2 - 1)))  # int8 uniform -> floor sd

    def _draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        label = rng.choice(len(self.weights), n, p=self.weights)                   # (n,) cluster of each key
        z = rng.standard_normal((n, self.scales.shape[1]), dtype=np.float32) * self.scales[label]  # (n, rw)
        x = z @ self.cal["within_axes"]                                                        # (n, dim)
        x += self.centres[label]
        noise = rng.integers(-128, 128, (n, self.dim), dtype=np.int8).astype(np.float32)       # (n, dim)
        noise *= self.floor
        x += noise
        return x

    def chunk(self, c: int) -> np.ndarray:
        return self._draw(np.random.default_rng([self.seed, 0, c]), CHUNK)         # (CHUNK, dim) float32

    def chunks(self, stop: int, start: int = 0):
        """Yields (first row, keys (n, dim)) covering rows [start, stop)."""
        for c in range(start // CHUNK, math.ceil(stop / CHUNK)):
            lo, hi = max(start, c * CHUNK), min(stop, (c + 1) * CHUNK)
            yield lo, self.chunk(c)[lo - c * CHUNK:hi - c * CHUNK]

    def queries(self, q: int) -> np.ndarray:
        """(q, dim): new reset frames of the same tasks (their own seed; none is a key)."""
        return self._draw(np.random.default_rng([self.seed, 2]), q)


def exact_knn(gen: KeyGenerator, n: int, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact (distances (Q, k), rows (Q, k)) over rows [0, n) by a streamed scan; ties: the lower row."""
    dist = np.full((len(queries), 0), np.inf, np.float32)
    rows = np.zeros((len(queries), 0), np.int64)
    for start, keys in gen.chunks(n):
        d, i = faiss.knn(queries, keys, min(k, len(keys)))                         # (Q, k') each
        dist, rows = np.concatenate([dist, d], 1), np.concatenate([rows, i + start], 1)
        order = np.argsort(dist, 1, kind="stable")[:, :k]
        dist, rows = np.take_along_axis(dist, order, 1), np.take_along_axis(rows, order, 1)
    return dist, rows


def recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean over queries of |found[:, :k] & truth[:, :k]| / k (-1 rows never match)."""
    return float(np.mean([len(np.intersect1d(f[:k], t[:k])) / k for f, t in zip(found, truth)]))


def estimate_bytes(kind: str, n: int, dim: int, pca: int, params: dict, add_batch: int = ADD_BATCH) -> dict:
    """Peak memory of building one configuration: {'bytes': total, 'why': the main term}. Adding grows
    std::vectors by doubling: a flat index's codes (old + new copy at the last doubling: up to 2x), each
    IVF list (one list at a time; the untouched tail of a mmapped buffer is not resident: LIST_SLACK)."""
    d = pca or dim
    nlist = params.get("nlist", 1)
    if kind == "flat":
        last = add_batch * 2 ** max(0, math.ceil(math.log2(max(n, 2) / add_batch)) - 1)   # capacity before the last doubling
        rows = max(n, 2 * last if last < n else n)
        stored = rows * d * 4
        why = f"flat {n:,} x {d} float32 = {n * d * 4 / GB:.2f} GB, {stored / GB:.2f} GB while its buffer doubles"
    elif kind == "ivf":
        stored = LIST_SLACK * n * (d * 4 + 8) + nlist * d * 4
        why = f"IVF lists {n:,} x ({d} float32 + id) = {n * (d * 4 + 8) / GB:.2f} GB, x{LIST_SLACK} growth"
    else:
        m = params["m"]
        table = nlist * m * 256 * 4  # precomputed residual tables: faiss keeps them below 2 GB
        encode = min(add_batch, 32768) * 256 * m * 4 if d // m >= 16 else 0  # faiss's BLAS encoder tables
        stored = LIST_SLACK * n * (m + 8) + nlist * d * 4 + 256 * d * 4 + (table if table <= 2 ** 31 else 0) + encode
        why = f"IVF-PQ codes {n:,} x ({m} B + id) and tables = {stored / GB:.2f} GB"
    sample = min(n, max(TRAIN_POINTS * nlist, 10000)) if kind != "flat" or pca else 0
    train = 1.25 * sample * 4 * (dim + (d if pca else 0) + (d if kind == "ivfpq" else 0))  # + PCA image, residuals
    chunk = CHUNK * (4 * dim + 2 * d) * 4                     # generator temporaries, PCA image, residuals
    total = max(train, stored + chunk) + (dim * d * 4 if pca else 0)
    return dict(bytes=int(total), why=why)


def index_bytes(index: faiss.Index) -> int:
    """Size of faiss.write_index's output, counted as it streams (no copy of the index)."""
    size = [0]

    def count(block):
        size[0] += len(block)
        return len(block)
    faiss.write_index(index, faiss.PyCallbackIOWriter(count))
    return size[0]


def status_kb(field: str) -> int:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def reset_peak() -> bool:
    """Frees what is unused and resets VmHWM (Linux >= 4.0); False when the peak cannot be reset."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        pathlib.Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def available_bytes() -> int:
    for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def bench_config(gen: KeyGenerator, n: int, kind: str, pca: int, queries: np.ndarray, truth: np.ndarray,
                 args, limit: float) -> dict:
    """Build one index over rows [0, n), then search it; a skipped configuration says why."""
    d = pca or gen.dim
    name = f"pca{pca}-{kind}" if pca else kind
    row = dict(size=n, index=name, type=kind, pca=pca or None, dim=d)
    try:
        params = index_params(kind, n, gen.dim, pca=pca)
    except ValueError as e:
        return dict(row, skipped=str(e))
    est = estimate_bytes(kind, n, gen.dim, pca, params, args.add_batch)
    base = status_kb("VmRSS") * 1024
    limit = min(limit, available_bytes() + base - 2 ** 30)                        # other jobs may have grown
    row.update(params=params, estimate_gb=round((base + est["bytes"]) / GB, 2))
    if base + est["bytes"] > limit:
        return dict(row, skipped=f"needs ~{(base + est['bytes']) / GB:.1f} GB ({est['why']}) > limit {limit / GB:.1f} GB")
    resettable = reset_peak()
    before = status_kb("VmRSS")
    index = new_index(kind, "l2", gen.dim, params)  # with pca: keys (n, dim) -> (n, pca) in front
    train_s = gen_s = add_s = 0.0
    if not index.is_trained:
        size = min(n, max(TRAIN_POINTS * params.get("nlist", 1), 10000))
        start = time.perf_counter()
        sample = np.concatenate([x for _, x in gen.chunks(size)])                 # (size, dim)
        gen_s += time.perf_counter() - start
        start = time.perf_counter()
        index.train(sample)
        train_s = time.perf_counter() - start
        del sample
    start = time.perf_counter()
    for _, keys in gen.chunks(n):                                                 # (<= CHUNK, dim)
        mid = time.perf_counter()
        for i in range(0, len(keys), args.add_batch):
            index.add(keys[i:i + args.add_batch])                                 # (add_batch, dim)
        add_s += time.perf_counter() - mid
    gen_s += time.perf_counter() - start - add_s
    del keys
    row.update(build_s=train_s + add_s, train_s=train_s, add_s=add_s, generate_s=gen_s,
               index_mb=index_bytes(index) / 2 ** 20, searches=[])
    gc.collect()
    row["resident_mb"] = (status_kb("VmRSS") - before) / 1024                     # RSS the built index added
    nlist = params.get("nlist")
    kmax = max(args.k)
    probes = sorted({min(p, nlist) for p in args.nprobe} | {max(1, nlist // 16)}) if nlist else [None]
    for probe in probes:
        _search(index, queries[:1], kmax, probe or 1)                             # warm-up
        single = []
        for q in queries[:args.single]:                                           # one (1, dim) query at a time
            start = time.perf_counter()
            _search(index, q[None], kmax, probe or 1)
            single.append(time.perf_counter() - start)
        start = time.perf_counter()
        _, found = _search(index, queries, kmax, probe or 1)                      # (Q, kmax) rows
        batch = time.perf_counter() - start
        s = dict(nprobe=probe, default=bool(nlist) and probe == max(1, nlist // 16),
                 single_ms=1000 * float(np.mean(single)), single_ms_max=1000 * float(np.max(single)),
                 batch_ms=1000 * batch, batch_ms_per_query=1000 * batch / len(queries))
        s.update({f"recall@{k}": recall(found, truth, k) for k in args.k})
        if kind == "flat" and not pca:
            s["flat_vs_exact"] = bool(np.array_equal(np.sort(found, 1), np.sort(truth[:, :kmax], 1)))
        row["searches"].append(s)
    row.update(peak_rss_mb=status_kb("VmHWM") / 1024, peak_rss_is_process_peak=not resettable)
    del index
    reset_peak()
    return row


def print_table(rows: list[dict], ks: list[int], queries: int) -> None:
    print(f"\nbuild = train + add (s); ms/query single = mean of single-query searches, batch = one search of "
          f"{queries} queries; * = retrieve()'s default nprobe (nlist // 16)")
    rec = "".join(f" recall@{k} |" for k in ks)
    print(f"| N | index | params | nprobe | build s | index MB | peak RSS MB | ms/query single | ms/query batch |{rec}")
    print("|" + "---|" * (9 + len(ks)))
    for r in rows:
        head = f"| {r['size']:,} | {r['index']} |"
        if "skipped" in r:
            print(f"{head} skipped: {r['skipped']} |" + " |" * (7 + len(ks)))
            continue
        params = " ".join(f"{k}={v}" for k, v in r["params"].items()) or "-"
        for i, s in enumerate(r["searches"]):
            build = (f"{r['build_s']:.1f} | {r['index_mb']:,.0f} | {r['peak_rss_mb']:,.0f}" if i == 0 else " | |")
            probe = "-" if s["nprobe"] is None else f"{s['nprobe']}{'*' if s['default'] else ''}"
            recs = "".join(f" {s[f'recall@{k}']:.3f} |" for k in ks)
            print(f"{head if i == 0 else '| | |'} {params if i == 0 else ''} | {probe} | {build} | "
                  f"{s['single_ms']:.2f} | {s['batch_ms_per_query']:.2f} |{recs}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    p.add_argument("--dim", type=int, default=1024, help="key dim (the tiny teacher's encoder: 1024)")
    p.add_argument("--types", nargs="+", default=["flat", "ivf", "ivfpq"], choices=["flat", "ivf", "ivfpq"])
    p.add_argument("--pca", type=int, nargs="+", default=[0], help="PCA dims in front of the index (0: none)")
    p.add_argument("--k", type=int, nargs="+", default=[10, 500])
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--single", type=int, default=20, help="queries timed one at a time")
    p.add_argument("--nprobe", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--clusters", type=int, default=1000, help="mixture centres (tasks x reset conditions)")
    p.add_argument("--add-batch", type=int, default=ADD_BATCH, help="keys per index.add (build_index: 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--calibration", default=REAL_KEYS, help="faiss index of real keys ('none': fallback)")
    p.add_argument("--memory-limit-gb", type=float, default=20.0)
    p.add_argument("--out", default="benchmarks/results/retrieval_scale.json")
    p.add_argument("--dry-run", action="store_true", help="print the memory estimates only")
    args = p.parse_args(argv)
    began, load_start = time.perf_counter(), os.getloadavg()
    try:  # M_MMAP_THRESHOLD = -3; fixed, so glibc does not raise it and keep freed buffers resident
        mmap = bool(ctypes.CDLL("libc.so.6").mallopt(-3, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        mmap = False
    cal = calibrate(args.dim, None if args.calibration == "none" else args.calibration, args.seed)
    gen = KeyGenerator(cal, args.clusters, args.seed)
    queries = gen.queries(args.queries)                                           # (Q, dim)
    headroom = available_bytes() + status_kb("VmRSS") * 1024 - 2 ** 30
    limit = min(args.memory_limit_gb * GB, headroom)
    print(f"keys: {args.clusters} clusters, calibration {cal['source']}; memory limit {limit / GB:.1f} GB "
          f"(asked {args.memory_limit_gb:g}, available now {headroom / GB:.1f}); faiss threads "
          f"{faiss.omp_get_max_threads()}", flush=True)
    summary = {k: (v.tolist() if k == "between_var" else v) for k, v in cal.items()
               if k in ("source", "between_var", "floor_var")}
    summary.update(mean_norm=float(np.linalg.norm(cal["mean"])), within_var=float(cal["within_var"].sum()),
                   within_axes=len(cal["within_var"]), between_axes=len(cal["between_var"]))
    meta = dict(host=platform.node(), cpus=len(os.sched_getaffinity(0)), faiss_threads=faiss.omp_get_max_threads(),
                faiss=faiss.__version__, dim=args.dim, clusters=args.clusters, seed=args.seed, chunk=CHUNK,
                queries=args.queries, single=args.single, k=args.k, nprobe=args.nprobe, metric="l2",
                add_batch=args.add_batch, mmap_threshold=MMAP_THRESHOLD if mmap else None,
                memory_limit_gb=limit / GB, calibration=summary, exact_scan_s={}, loadavg_start=load_start)
    rows, out = [], pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def write():  # after every configuration: an interrupted run keeps what it measured
        meta.update(wall_s=time.perf_counter() - began, loadavg_end=os.getloadavg())
        out.write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))
    if args.dry_run:
        for n, pca, kind in ((n, pca, kind) for n in args.sizes for pca in args.pca for kind in args.types):
            params = index_params(kind, n, pca or args.dim)
            est = estimate_bytes(kind, n, args.dim, pca, params, args.add_batch)
            base = status_kb("VmRSS") * 1024
            print(f"N={n:,} {f'pca{pca}-' if pca else ''}{kind} {params}: ~{(base + est['bytes']) / GB:.1f} GB "
                  f"({est['why']}) {'fits' if base + est['bytes'] <= limit else 'SKIPPED'}")
        return dict(meta=meta, rows=rows)
    for n in args.sizes:
        start = time.perf_counter()
        truth = exact_knn(gen, n, queries, max(args.k))[1]                        # (Q, kmax)
        meta["exact_scan_s"][str(n)] = time.perf_counter() - start
        print(f"N={n:,}: exact {max(args.k)} nearest of {args.queries} queries by a streamed scan "
              f"(keys generated on the fly) in {time.perf_counter() - start:.1f} s", flush=True)
        for pca in args.pca:
            for kind in args.types:
                rows.append(bench_config(gen, n, kind, pca, queries, truth, args, limit))
                print(json.dumps({k: v for k, v in rows[-1].items() if k != "searches"}), flush=True)
                write()
    write()
    print_table(rows, args.k, args.queries)
    for n, s in meta["exact_scan_s"].items():
        print(f"\nexact scan, N={int(n):,}: {s:.1f} s for {args.queries} queries (no index; includes generating the keys)")
    print(f"\nwrote {out}")
    return dict(meta=meta, rows=rows)


if __name__ == "__main__":
    main()
