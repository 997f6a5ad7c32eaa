"""transfer.report.aggregate (rliable aggregates across tasks) on synthetic scores whose answers are known:
IQM / mean / median / optimality gap, P(improvement), the vectorised equivalents of rliable's functions, the shared
task set and seed counts, normalisation, published aggregates, files and the CLI on a tiny archive."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from scipy import stats

from transfer.report import aggregate as agg
from transfer.report import table as report
from transfer.report.runs import Run, write_archive

REPS = 100  # bootstrap resamples in these tests (the default, agg.REPS, is 2000)


def run(method, suite, task, seed, score):
    """A finished run whose final return and success are `score` (no files; the aggregates only read scores)."""
    rows = [{"step": 1000, "eval/return": 0.0, "eval/success_final": 0.0},
            {"step": 2000, "final/return": score, "final/success_final": score}]
    return Run(None, method, suite, task, seed, rows, {"name": method})


def groups(*runs):
    return report.group_runs(list(runs))


def test_aggregates_of_known_arrays():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 1.2, (8, 5))  # (runs, tasks)
    iqm, mean, median, gap = agg.aggregates(scores)
    flat = np.sort(scores.reshape(-1))  # 40 scores: the IQM is the mean of the middle 20
    assert iqm == pytest.approx(flat[10:30].mean()) and iqm == pytest.approx(stats.trim_mean(flat, 0.25))
    assert mean == pytest.approx(scores.mean(0).mean()) and median == pytest.approx(np.median(scores.mean(0)))
    assert gap == pytest.approx(1 - np.minimum(scores, 1).mean())


def test_vectorised_profile_and_improvement_equal_rliable():
    from rliable import metrics
    library = agg.rliable_library()
    rng = np.random.default_rng(1)
    for nx, ny, tasks in [(3, 2, 4), (1, 1, 1), (5, 5, 2)]:
        x, y = rng.integers(0, 4, (nx, tasks)) / 3, rng.integers(0, 4, (ny, tasks)) / 3  # many ties
        assert agg.improvement(x, y) == pytest.approx(metrics.probability_of_improvement(x, y))
        np.testing.assert_allclose(agg.profile(x, agg.TAUS), library.score_distributions(x, agg.TAUS))
    same = rng.uniform(size=(3, 2))
    assert agg.improvement(same, same) == 0.5 == metrics.probability_of_improvement(same, same)


def test_estimates_dominance_ci_and_seeding():
    """gsa beats dreamer in every run of every task: P(improvement) = 1 with CI [1, 1]; CIs hold the point
    estimate, are reproducible, and one method's CI does not depend on the other methods."""
    rng = np.random.default_rng(2)
    runs = [run(m, "metaworld", t, s, float(v)) for m, lo in (("dreamer", 0.0), ("gsa", 0.6))
            for t in ("a", "b", "c") for s, v in enumerate(rng.uniform(lo, lo + 0.4, 4))]
    blocks = agg.collect(groups(*runs))
    assert len(blocks) == 1 and blocks[0].scores["gsa"].shape == (4, 3) and blocks[0].normalisation == agg.SUCCESS
    result = agg.estimate(blocks[0], reps=REPS)
    assert result["improvement"] == {("gsa", "dreamer"): (1.0, 1.0, 1.0)}
    for m in ("dreamer", "gsa"):
        low, high = result["cis"][m]
        assert np.all(low <= result["points"][m] + 1e-12) and np.all(result["points"][m] <= high + 1e-12)
        assert result["profiles"][m].shape == agg.TAUS.shape and result["profile_cis"][m].shape == (2, len(agg.TAUS))
    assert result["points"]["gsa"][0] > 0.6 > result["points"]["dreamer"][0]
    again = agg.estimate(blocks[0], reps=REPS)
    np.testing.assert_array_equal(again["cis"]["dreamer"], result["cis"]["dreamer"])
    alone = agg.estimate(agg.collect(groups(*[r for r in runs if r.method == "dreamer"]))[0], reps=REPS)
    np.testing.assert_array_equal(alone["cis"]["dreamer"], result["cis"]["dreamer"])
    assert alone["improvement"] == {}
    # without the baseline: every pair, in method order
    assert agg.pairs(["a", "b", "c"], "dreamer") == [("a", "b"), ("a", "c"), ("b", "c")]
    assert agg.pairs(["a", "dreamer", "c"], "dreamer") == [("a", "dreamer"), ("c", "dreamer")]


def test_shared_tasks_seed_counts_and_normalisation():
    # dreamer and gsa on t1, t2; an ablation on t1 only; gsa has a fourth seed on t2, dreamer two seeds on t1
    runs = [run("dreamer", "dmc", "t1", s, 100.0 * s) for s in range(2)]
    runs += [run("dreamer", "dmc", "t2", s, 500.0) for s in range(3)]
    runs += [run("gsa", "dmc", t, s, 900.0) for t in ("t1", "t2") for s in range(3)] + [run("gsa", "dmc", "t2", 3, 0.0)]
    runs += [run("gsa no-guidance", "dmc", "t1", 0, 50.0)]
    block, = agg.collect(groups(*runs))
    assert block.tasks == ["t1", "t2"] and list(block.scores) == ["dreamer", "gsa"]  # 2 methods x 2 tasks > 3 x 1
    assert block.normalisation == agg.DMC_RETURN
    np.testing.assert_allclose(block.scores["dreamer"], [[0.0, 0.5], [0.1, 0.5]])  # (runs 2, tasks 2), / 1000
    assert block.scores["gsa"].shape == (3, 2) and block.scores["gsa"].max() == 0.9  # seed 3 of t2 left out
    assert any("gsa no-guidance: left out" in n for n in block.notes)
    assert any("dreamer: 2 run(s) per task" in n and "dreamer/dmc-t2/seed2" in n for n in block.notes)
    assert any("gsa: 3 run(s)" in n and "gsa/dmc-t2/seed3" in n for n in block.notes)
    assert agg.shared_tasks({"a": {"x", "y"}, "b": {"y", "z"}, "c": {"y", "w"}}) == (["a", "b", "c"], ["y"])
    # a suite without a fixed reference: min-max per task over every run; all equal -> 0.5
    mm = [run("dreamer", "carla", "town", s, v) for s, v in enumerate([10.0, 30.0])]
    mm += [run("gsa", "carla", "town", 0, 50.0), run("dreamer", "carla", "flat", 0, 7.0), run("gsa", "carla", "flat", 0, 7.0)]
    block, = agg.collect(groups(*mm))
    assert block.normalisation == agg.MIN_MAX and block.tasks == ["flat", "town"]
    np.testing.assert_allclose(block.scores["dreamer"], [[0.5, 0.0]])  # dreamer keeps 1 run (its fewest)
    np.testing.assert_allclose(block.scores["gsa"], [[0.5, 1.0]])
    assert any("flat: every run scored 7" in n for n in block.notes)


def test_published_aggregates_over_our_tasks():
    runs = [run(m, "dmc", t, s, 500.0 + s) for m in ("dreamer", "gsa") for t in ("walker_walk", "cheetah_run")
            for s in range(2)]
    block, = agg.collect(groups(*runs))
    rows, notes = agg.published(block, "gsa")
    by = {r["label"]: r for r in rows}
    ours = by["GSA@150k (gsa paper)"]["values"]  # Table 4: walker walk 959.1, cheetah run 526.1
    assert ours["mean"] == pytest.approx((0.9591 + 0.5261) / 2) and ours["optimality gap"] == pytest.approx(1 - ours["mean"])
    assert ours["IQM"] == pytest.approx(ours["mean"]) and by["GSA@150k (gsa paper)"]["tasks"] == 2
    full = by["GSA@150k (gsa paper, all 22 tasks)"]["values"]
    assert full == {"mean": pytest.approx(0.6311), "median": pytest.approx(0.755)} and not notes
    assert [r["label"] for r in rows][:3] == ["GSA@150k (gsa paper)", "DreamerV3@150k (gsa paper)", "DrQv2@150k (gsa paper)"]
    # Meta-World success against a return report: left out with a note
    mw, = agg.collect(groups(*[run("gsa", "metaworld", "drawer-open", 0, 100.0)]), metric="return")
    rows, notes = agg.published(mw, "gsa")
    assert rows == [] and "reports success" in notes[0]


def test_files_one_task_one_seed_and_cli_on_an_archive(tmp_path, capsys):
    """One task, one seed for dreamer: the aggregates are written with 'n=1'; the CLI on an archive writes
    aggregate.md / .csv and the three plots, and report.md holds the same section; --no-aggregate skips them."""
    runs = [run("dreamer", "metaworld", "drawer-open", 0, 0.0)]
    runs += [run("gsa", "metaworld", "drawer-open", s, v) for s, v in enumerate([1.0, 0.8])]
    archive = write_archive(runs, tmp_path / "runs.jsonl.gz")
    out = tmp_path / "out"
    assert report.main([str(archive), "--out", str(out), "--published", "gsa", "--aggregate-reps", str(REPS)]) == 0
    printed = capsys.readouterr().out
    md = (out / "aggregate.md").read_text()
    assert "1 task(s)" in md and "One task" in md and agg.SUCCESS in md and f"{REPS} resamples" in md
    dreamer = next(x for x in md.splitlines() if x.startswith("| dreamer"))
    assert "0.000 (n=1)" in dreamer and "1.000 (n=1)" in dreamer  # IQM 0 and optimality gap 1, no CI
    gsa = [c.strip() for c in next(x for x in md.splitlines() if x.startswith("| gsa ")).split("|")[1:-1]]
    assert gsa[:4] == ["gsa", "ours", "1", "2"] and gsa[5].startswith("0.900 [0.800, 1.000]")
    cells = [[c.strip() for c in x.split("|")[1:-1]] for x in md.splitlines() if x.startswith("| gsa ")]
    assert ["gsa", "dreamer", "1.000", "[1.000, 1.000]"] in cells  # P(gsa > dreamer)
    assert "GSA@150k (gsa paper, all 50 tasks)" in md and "| gsa " in printed
    with open(out / "aggregate.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == agg.COLUMNS
    iqm = {r["method"]: r for r in table if r["statistic"] == "IQM"}
    assert float(iqm["gsa"]["value"]) == pytest.approx(0.9) and iqm["dreamer"]["ci_low"] == ""
    poi, = [r for r in table if r["statistic"] == "P(X > Y)"]
    assert (poi["method"], poi["versus"], float(poi["value"])) == ("gsa", "dreamer", 1.0)
    for name in ("aggregate_metrics", "performance_profile", "prob_improvement"):
        assert (out / f"{name}_metaworld.png").read_bytes()[:4] == b"\x89PNG"
    assert "## Aggregates across tasks" in (out / "report.md").read_text()
    plain = tmp_path / "plain"
    assert report.main([str(archive), "--out", str(plain), "--no-aggregate", "--no-plots"]) == 0
    assert not (plain / "aggregate.md").exists() and "Aggregates" not in (plain / "report.md").read_text()
    # a single method: no P(improvement) plot
    solo = agg.aggregate(groups(*runs[:1]), tmp_path / "solo", reps=REPS)
    assert [p.name for p in solo["plots"]] == ["aggregate_metrics_metaworld.png", "performance_profile_metaworld.png"]
    assert agg.aggregate({}, tmp_path / "none")["md"] is None


def test_suites_are_not_pooled_and_unfinished_runs_are_named():
    runs = [run(m, "dmc", "walker_walk", 0, 300.0) for m in ("dreamer", "gsa")]
    runs += [run("gsa", "metaworld", "drawer-open", 0, 1.0)]
    runs[1].rows = runs[1].rows[:1] + [{"step": 1500, "eval/return": 700.0}]  # unfinished: its last eval counts
    blocks = agg.collect(groups(*runs))
    assert [(b.suite, b.metric) for b in blocks] == [("dmc", "return"), ("metaworld", "success")]
    assert blocks[0].scores["gsa"].tolist() == [[0.7]] and not blocks[1].notes
    assert blocks[0].notes == ["unfinished, their last eval stands in: gsa/dmc-walker_walk/seed0"]
