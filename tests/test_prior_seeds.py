"""benchmarks.prior_seeds on real Meta-World data: per-seed priors and their EMAs act alone at each checkpoint, the
ensembles act, and a rerun skips the seeds it already trained."""
import json

import numpy as np
import torch

from benchmarks.prior_seeds import MeanPolicy, main
from conftest import collect_random
from student.bc import BCPolicy


def test_mean_policy_averages_its_members():
    mask = np.zeros(12, np.float32)
    mask[:4] = 1
    torch.manual_seed(0)
    members = [BCPolicy(mask, image_size=32, channels=(8, 8)) for _ in range(2)]
    stacks = np.random.default_rng(0).integers(0, 255, (3, 9, 32, 32), dtype=np.uint8)
    want = (members[0].act(stacks) + members[1].act(stacks)) / 2
    np.testing.assert_allclose(MeanPolicy(members).act(stacks), want, atol=1e-6)


def test_priors_of_two_seeds_act_alone_and_a_rerun_skips_them(tmp_path):
    data = collect_random(tmp_path / "data", tasks=("reach",), episodes=2, frames=20, suite="metaworld")
    args = ["--dataset", str(data), "--task", "reach", "--seeds", "0", "1", "--checkpoints", "2",
            "--episodes", "2", "--episode-frames", "20", "--out", str(tmp_path / "out.json"),
            "--weights", str(tmp_path / "w")]
    rows = {r["seed"]: r for r in main(args)}
    assert sorted(rows, key=str) == [0, 1, "ensemble2", "ensemble2_ema"]
    for seed in (0, 1):
        assert list(rows[seed]["checkpoints"]) == ["2"]
        for c in rows[seed]["checkpoints"].values():
            assert c["bc_alone_episodes"] == c["ema_bc_alone_episodes"] == 2 and c["bc_alone_guided"] == 1.0
            assert 0.0 <= c["ema_bc_alone_success"] <= c["ema_bc_alone_success_any"] <= 1.0
        assert all((tmp_path / "w" / f"reach_seed{seed}{kind}.pt").exists() for kind in ("", "_ema"))
    assert rows["ensemble2"]["bc_alone_episodes"] == 2
    before = (tmp_path / "w" / "reach_seed0.pt").stat().st_mtime_ns
    again = {r["seed"]: r for r in main(args)}                    # nothing trained again, the rows are kept
    assert (tmp_path / "w" / "reach_seed0.pt").stat().st_mtime_ns == before
    assert again[0] == rows[0] and again[1] == rows[1]
    assert json.loads((tmp_path / "out.json").read_text()) == list(again.values())
