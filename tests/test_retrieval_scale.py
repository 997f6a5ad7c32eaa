"""benchmarks/retrieval_scale.py at a tiny size: exact indices are exact, the streamed ground truth is
faiss flat's, keys are reproducible row by row, the memory guard skips what cannot fit, JSON is written."""
import json

import faiss
import numpy as np
import pytest

from benchmarks.retrieval_scale import (CHUNK, KeyGenerator, calibrate, estimate_bytes, exact_knn, main,
                                        recall)
from student.retrieval import index_params

N, DIM = 20000, 64
NLIST = index_params("ivf", N, DIM)["nlist"]  # 141


@pytest.fixture(scope="module")
def gen():
    return KeyGenerator(calibrate(DIM, None), clusters=50, seed=0)


def test_keys_reproducible_by_row(gen):
    first = np.concatenate([x for _, x in gen.chunks(CHUNK + 10)])              # (CHUNK + 10, DIM)
    assert first.shape == (CHUNK + 10, DIM) and first.dtype == np.float32
    part = [(start, x) for start, x in gen.chunks(CHUNK + 5, start=CHUNK - 3)]  # straddles two chunks
    assert [s for s, _ in part] == [CHUNK - 3, CHUNK]
    np.testing.assert_array_equal(np.concatenate([x for _, x in part]), first[CHUNK - 3:CHUNK + 5])
    np.testing.assert_array_equal(next(gen.chunks(7))[1], first[:7])             # row i does not depend on N
    q = gen.queries(8)
    np.testing.assert_array_equal(q, gen.queries(8))
    assert not np.isin(q[:, 0], first[:, 0]).any()                               # queries are fresh draws
    # a mixture, not one blob: the nearest key is much nearer than an average key
    d = faiss.knn(q, first[:N], N)[0]
    assert np.median(d[:, 0]) < 0.2 * np.median(d)


def test_streamed_ground_truth_is_flat(gen):
    keys = np.concatenate([x for _, x in gen.chunks(N)])
    q = gen.queries(16)
    flat = faiss.IndexFlatL2(DIM)
    flat.add(keys)
    want_d, want_i = flat.search(q, 50)
    d, i = exact_knn(gen, N, q, 50)
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_allclose(d, want_d, rtol=1e-4, atol=1e-4)
    assert recall(i, want_i, 50) == 1.0 and recall(np.full_like(i, -1), want_i, 10) == 0.0


def test_benchmark_tiny(tmp_path):
    out = tmp_path / "scale.json"
    result = main(["--sizes", str(N), "--dim", str(DIM), "--clusters", "50", "--queries", "20", "--single", "3",
                   "--k", "10", "100", "--nprobe", "1", str(NLIST), "--types", "flat", "ivf", "ivfpq",
                   "--pca", "0", "32", "--calibration", "none", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["meta"]["dim"] == DIM and saved["meta"]["exact_scan_s"][str(N)] > 0
    rows = {r["index"]: r for r in saved["rows"]}
    assert set(rows) == {"flat", "ivf", "ivfpq", "pca32-flat", "pca32-ivf", "pca32-ivfpq"}
    assert not any("skipped" in r for r in rows.values()) and len(result["rows"]) == 6
    (flat,) = rows["flat"]["searches"]
    assert flat["recall@10"] == flat["recall@100"] == 1.0 and flat["flat_vs_exact"]
    ivf = {s["nprobe"]: s for s in rows["ivf"]["searches"]}
    assert rows["ivf"]["params"] == {"nlist": NLIST} and set(ivf) == {1, NLIST // 16, NLIST}
    assert ivf[NLIST]["recall@10"] == ivf[NLIST]["recall@100"] == 1.0
    assert ivf[1]["recall@100"] < 1.0 and ivf[NLIST // 16]["default"]
    pq = {s["nprobe"]: s for s in rows["ivfpq"]["searches"]}
    assert 0.3 < pq[NLIST]["recall@100"] < 1.0                                   # lossy codes, still useful
    for r in rows.values():
        assert r["build_s"] >= 0 and r["index_mb"] > 0 and 0 < r["peak_rss_mb"] * 2 ** 20 < r["estimate_gb"] * 1e9
        assert all(s["single_ms"] > 0 and s["batch_ms_per_query"] > 0 for s in r["searches"])
    assert rows["pca32-flat"]["dim"] == 32 and rows["pca32-flat"]["index_mb"] < rows["flat"]["index_mb"]
    assert rows["pca32-ivf"]["searches"][-1]["recall@10"] > 0.5


def test_memory_guard(tmp_path, capsys):
    # estimates: flat over 10M 1024-d keys is ~41 GB, IVF-PQ codes ~0.7 GB (+ tables, a chunk)
    assert estimate_bytes("flat", 10_000_000, 1024, 0, {})["bytes"] > 40e9
    params = index_params("ivfpq", 10_000_000, 1024)
    assert params["m"] == 64 and estimate_bytes("ivfpq", 10_000_000, 1024, 0, params)["bytes"] < 4e9
    assert estimate_bytes("ivf", 10_000_000, 1024, 256, index_params("ivf", 10_000_000, 256))["bytes"] < 20e9
    out = tmp_path / "skip.json"
    main(["--sizes", str(N), "--dim", str(DIM), "--clusters", "50", "--queries", "4", "--k", "10",
          "--types", "flat", "ivf", "--calibration", "none", "--memory-limit-gb", "0.01", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2 and all(r["skipped"].startswith("needs ~") and "> limit" in r["skipped"] for r in rows)
    assert "skipped: needs ~" in capsys.readouterr().out
    # --dry-run: the estimates at 10M without generating a key
    main(["--sizes", "10000000", "--types", "flat", "ivfpq", "--calibration", "none", "--queries", "2", "--dry-run",
          "--out", str(tmp_path / "dry.json")])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("N=10,000,000")]
    assert len(lines) == 2 and lines[0].endswith("SKIPPED") and lines[1].endswith("fits")
