"""transfer.report on small synthetic run directories (the report only reads files, so fake runs with
the real layout are enough): grouping, means, bootstrap CIs, CSV, curves, published numbers, errors.
transfer.report.published: the transcription against the paper's own aggregate rows and our task names."""
from __future__ import annotations

import csv
import gzip
import json
import shutil

import numpy as np
import pytest
import yaml

from transfer.report import aggregate as agg
from transfer.report import published as pub
from transfer.report import table as report
from transfer.report import runs as runs_mod

EVAL_STEPS = (5000, 10000, 15000, 20000)


def write_run(root, method, suite, task, seed, final=None, evals=None, eval_steps=EVAL_STEPS, success=None):
    """A run directory as transfer.run leaves it: hydra/config.yaml (composed config) + metrics.jsonl
    with train rows, eval rows every 5k steps and, for a finished run, one final row."""
    run = root / method / f"{suite}-{task}-seed{seed}"
    (run / "hydra").mkdir(parents=True)
    cfg = {"method": {"name": method}, "env": {"suite": suite, "action_repeat": 2, "image_size": 64},
           "trainer": {"steps": eval_steps[-1], "eval_every": 5000}, "task": task, "seed": seed,
           "device": "auto", "max_action_dim": 12, "run_dir": str(run)}
    (run / "hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    evals = evals if evals is not None else np.linspace(0.2, 1.0, len(eval_steps)) * (final or 0.0)
    rows, t = [], 1.7e9
    for i, (step, value) in enumerate(zip(eval_steps, evals)):
        rows.append({"step": step - 1000, "time": t + i, "train/return": value * 0.9, "train/length": 500.0,
                     "train/success": 0.0, "train/success_final": 0.0, "train/episodes": i + 1.0})
        rows.append({"step": step, "time": t + i, "train/loss": 1.0, "train/updates": step / 20.0})
        sv = success[i] if success else 0.0
        rows.append({"step": step, "time": t + i, "eval/return": value, "eval/return_std": 5.0,
                     "eval/success": sv, "eval/success_final": sv, "eval/episodes": 10.0})
    if final is not None:
        sv = success[-1] if success else 0.0
        rows.append({"step": eval_steps[-1], "time": t + 99, "final/return": final, "final/return_std": 5.0,
                     "final/success": sv, "final/success_final": sv, "final/episodes": 10.0})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


@pytest.fixture(autouse=True)
def few_resamples(monkeypatch):
    """Every report here also writes the aggregates across tasks (tests/test_aggregate.py): fewer bootstrap
    resamples keep them fast."""
    monkeypatch.setattr(agg, "REPS", 100)


@pytest.fixture
def runs(tmp_path):
    """2 methods x 3 seeds on walker_walk (dreamer spread out, gsa close together), plus one
    unfinished dreamer run on a task the paper lacks; it was resumed, so step 10000 is logged twice."""
    root = tmp_path / "runs"
    for seed, value in enumerate([400.0, 500.0, 600.0]):
        write_run(root, "dreamer", "dmc", "walker_walk", seed, final=value)
    for seed, value in enumerate([800.0, 810.0, 820.0]):
        write_run(root, "gsa", "dmc", "walker_walk", seed, final=value)
    run = write_run(root, "dreamer", "dmc", "cheetah_run_hard", 0, evals=[50.0, 90.0], eval_steps=(5000, 10000))
    with open(run / "metrics.jsonl", "a") as f:  # resumed at step 5000; the redone eval at 10000 wins
        f.write(json.dumps({"step": 10000, "time": 2e9, "eval/return": 120.0, "eval/success_final": 0.0}) + "\n")
        f.write('{"step": 10500, "train/ret')  # killed mid-write
    return root


def by_key(rows):
    return {(r["method"], r["task"]): r for r in rows}


def test_grouping_means_ci_and_unfinished(runs, tmp_path):
    result = report.report([runs], tmp_path / "out", plots=False)
    rows = by_key(result["rows"])
    assert set(rows) == {("dreamer", "walker_walk"), ("gsa", "walker_walk"), ("dreamer", "cheetah_run_hard")}
    dreamer, gsa = rows["dreamer", "walker_walk"], rows["gsa", "walker_walk"]
    partial = rows["dreamer", "cheetah_run_hard"]
    assert (dreamer["seeds"], gsa["seeds"], partial["seeds"]) == (3, 3, 1)
    assert dreamer["mean"] == pytest.approx(500.0) and gsa["mean"] == pytest.approx(810.0)
    assert dreamer["seed_ids"] == "0;1;2" and dreamer["steps"] == "20000" and dreamer["metric"] == "return"
    for row in (dreamer, gsa):
        assert row["ci_low"] <= row["mean"] <= row["ci_high"]
        assert row["ci_low"] < row["ci_high"]
    assert gsa["ci_high"] - gsa["ci_low"] < dreamer["ci_high"] - dreamer["ci_low"]
    # unfinished: the last eval value (the resumed run's redone eval) stands in, and a note names it
    assert partial["mean"] == pytest.approx(120.0) and partial["unfinished"] == 1 and partial["steps"] == "10000"
    assert any("dreamer/dmc-cheetah_run_hard/seed0" in n and "unfinished" in n for n in result["notes"])
    line = next(x for x in result["table"] if "cheetah_run_hard" in x)
    assert "n=1" in line and "1 (1 unfinished)" in line
    # the CI is reproducible (fixed random state) and single seeds get none
    assert report.bootstrap_ci([400.0, 500.0, 600.0]) == report.bootstrap_ci([400.0, 500.0, 600.0])
    assert report.bootstrap_ci([3.0, 3.0]) == (3.0, 3.0)
    with pytest.raises(ValueError):
        report.bootstrap_ci([1.0])


def test_csv_markdown_and_curves(runs, tmp_path, capsys):
    out = tmp_path / "out"
    assert report.main([str(runs), "--out", str(out), "--published", "gsa"]) == 0
    with open(out / "report.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["method", "suite", "task", "metric", "seeds", "mean", "ci_low", "ci_high", "values",
                              "seed_ids", "steps", "unfinished", "paper GSA@150k", "paper DreamerV3@150k",
                              "paper DrQv2@150k", "paper DreamerV3@500k", "paper DrQv2@500k"]
    assert len(table) == 3
    rows = {(r["method"], r["task"]): r for r in table}
    assert float(rows["gsa", "walker_walk"]["mean"]) == pytest.approx(810.0)
    assert rows["dreamer", "cheetah_run_hard"]["ci_low"] == ""
    # published numbers (Table 4) beside ours for a task in the paper, "-" for one it lacks
    assert float(rows["gsa", "walker_walk"]["paper GSA@150k"]) == 959.1
    assert float(rows["dreamer", "walker_walk"]["paper DreamerV3@150k"]) == 808.9
    assert rows["dreamer", "cheetah_run_hard"]["paper GSA@150k"] == ""
    printed = capsys.readouterr().out
    walker = next(x for x in printed.splitlines() if "| gsa " in x and "walker_walk" in x)
    assert "959.1" in walker and "808.9" in walker and "810.0" in walker
    cheetah = [c.strip() for c in next(x for x in printed.splitlines() if "cheetah_run_hard" in x).split("|")]
    assert cheetah[-6:-1] == ["-"] * 5
    md = (out / "report.md").read_text()
    assert "959.1" in md and "unfinished" in md and "curves_dmc-walker_walk.png" in md
    for task in ("walker_walk", "cheetah_run_hard"):
        png = out / f"curves_dmc-{task}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_directory_itself_and_metaworld_success(tmp_path):
    root = tmp_path / "runs"
    one = write_run(root, "gsa", "metaworld", "drawer-open", 0, final=300.0, success=[0.0, 0.5, 1.0, 0.9])
    write_run(root, "gsa", "metaworld", "drawer-open", 1, final=200.0, success=[0.0, 0.0, 0.5, 0.7])
    result = report.report([one], tmp_path / "a", published="gsa", plots=False)  # only the run given
    assert [r["seeds"] for r in result["rows"]] == [1]
    result = report.report([root], tmp_path / "b", published="gsa")  # auto: Meta-World's score is success
    row = result["rows"][0]
    assert row["metric"] == "success" and row["mean"] == pytest.approx(0.8)
    assert row["paper GSA@150k"] == 1.0 and row["paper DreamerV3@1M"] == 0.67
    result = report.report([root], tmp_path / "c", published="gsa", metric="return", plots=False)
    assert result["rows"][0]["mean"] == pytest.approx(250.0) and result["rows"][0]["paper GSA@150k"] is None
    assert any("reports success" in n for n in result["notes"])


def test_no_runs_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "metrics.jsonl").write_text("")  # no hydra/config.yaml: not a run
    with pytest.raises(FileNotFoundError, match="no runs found"):
        report.report([tmp_path / "empty"], tmp_path / "out")
    assert report.main([str(tmp_path / "empty")]) == 1
    assert "no runs found" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="does not exist"):
        runs_mod.find_runs([tmp_path / "missing"])


def test_align_interpolates_on_the_union_of_steps():
    a = (np.array([0.0, 10.0, 20.0]), np.array([0.0, 10.0, 20.0]))
    b = (np.array([0.0, 5.0, 15.0]), np.array([10.0, 20.0, 40.0]))
    steps, mean, lo, hi = runs_mod.align([a, b])
    assert steps.tolist() == [0, 5, 10, 15, 20]
    assert mean.tolist() == [5.0, 12.5, 20.0, 27.5, 20.0]  # b ends at 15: step 20 is a alone
    assert lo.tolist() == [0.0, 5.0, 10.0, 15.0, 20.0] and hi.tolist() == [10.0, 20.0, 30.0, 40.0, 20.0]


def test_published_transcription():
    from envs.dmc import BENCHMARK
    from envs.metaworld import TASKS
    dmc = np.array(list(pub.DMC_TABLE4.values()))
    # Table 4's columns reproduce the paper's own Mean and median ("Medium") rows
    np.testing.assert_allclose(dmc.mean(0), pub.AGGREGATES["dmc"]["mean"], atol=0.006)
    np.testing.assert_allclose(np.median(dmc, 0), pub.AGGREGATES["dmc"]["median"])
    assert len(pub.DMC_TABLE4) == 22 and len(pub.METAWORLD_TABLES_2_3) == 50
    assert [t for t in BENCHMARK if pub.lookup("gsa", "dmc", t)[0] is None] == ["cheetah_run_hard", "hopper_stand"]
    assert all(pub.lookup("gsa", "metaworld", t)[0] for t in TASKS)
    assert pub.lookup("gsa", "metaworld", "pick-out-of-hole-v3")[0] == "Pick Out of Hole"
    assert pub.lookup("gsa", "dmc", "quadruped_roll_fast")[2]["GSA@150k"] == 782.0
    assert pub.lookup("gsa", "dmc", "cheetah_run_backwards")[2]["DreamerV3@150k"] == 626.6
    assert pub.lookup("gsa", "metaworld", "door-close")[2]["DreamerV3@150k"] is None
    assert pub.lookup("gsa", "carla", "town04") == (None, None, {})


def test_method_labels_name_the_ablations():
    from transfer.report.runs import method_label
    assert method_label({"name": "dreamer"}) == "dreamer"
    assert method_label({"name": "finetune", "rehearsal": False, "guidance": False}) == "finetune"
    assert method_label({"name": "gsa", "rehearsal": True, "guidance": True}) == "gsa"
    assert method_label({"name": "gsa", "rehearsal": True, "guidance": False}) == "gsa no-guidance"
    assert method_label({"name": "gsa", "imagine_offline": False}) == "gsa online-starts"
    vid2act = {"name": "vid2act", "distill": {"enabled": True, "weights": "learned"},
               "action_replay": {"enabled": True}, "actor_input": True}
    assert method_label(vid2act) == "vid2act"
    assert method_label({**vid2act, "distill": {"enabled": True, "weights": "uniform"}}) == "vid2act uniform-weights"
    assert method_label({**vid2act, "distill": {"enabled": True, "residual": True}}) == "vid2act residual-distiller"
    hybrid = {**vid2act, "name": "hybrid", "rehearsal": True, "guidance": True, "prior": "vae", "actor_input": False,
              "distill": {"enabled": True, "weights": "learned", "residual": True},
              "action_replay": {"enabled": True, "pretrain_steps": 500}}
    assert method_label(hybrid) == "hybrid"
    before = {**hybrid, "distill": {"enabled": True}, "action_replay": {"enabled": True}}  # older hybrid configs
    assert method_label(before) == "hybrid plain-distiller untrained-prior"
    assert method_label({**before, "prior": "bc"}) == "hybrid bc-prior plain-distiller"
    assert method_label({**hybrid, "prior": "bc", "action_replay": {"enabled": False}}) == "hybrid no-replay bc-prior"
    weak = {**hybrid, "distill": {**hybrid["distill"], "alpha": 0.1}}
    assert method_label(weak) == "hybrid alpha=0.1"
    assert method_label({**weak, "distill": {**weak["distill"], "enabled": False}}) == "hybrid no-distill"
    assert method_label({**hybrid, "distill": {**hybrid["distill"], "alpha": 1.0}}) == "hybrid"
    # labels come from the method's own defaults (configs/method/<name>.yaml), with no branch per method name
    assert method_label({"name": "jsrl", "guidance": False}) == "jsrl no-guidance"
    assert method_label({"name": "finetune", "rehearsal": True}) == "finetune"  # finetune has no such switch
    assert method_label({"name": "no-such-method", "guidance": False}) == "no-such-method"


def test_distillation_weights_over_seeds(tmp_path):
    """vid2act runs log distill/weight_<source>: weights.csv, the markdown table and weights_*.png."""
    root = tmp_path / "runs"
    write_run(root, "dreamer", "metaworld", "drawer-close", 0, final=1.0, success=[0, 1, 1, 1])
    for seed, late in enumerate([0.8, 0.6]):
        run = write_run(root, "vid2act", "metaworld", "drawer-close", seed, final=1.0, success=[0, 1, 1, 1])
        with open(run / "metrics.jsonl", "a") as f:
            for step, w in zip((4000, 8000, 12000, 16000, 20000), (0.5, 0.5, 0.5, 0.5, late)):
                f.write(json.dumps({"step": step, "distill/weight_drawer-close": w,
                                    "distill/weight_push": 1 - w}) + "\n")
    out = tmp_path / "out"
    result = report.report([root], out)
    rows = {r["source"]: r for r in result["weights"]}
    assert set(rows) == {"drawer-close", "push"} and all(r["method"] == "vid2act" for r in rows.values())
    # last quarter of 4k..20k = steps >= 16k: seed 0 (0.5 + 0.8) / 2, seed 1 (0.5 + 0.6) / 2
    assert rows["drawer-close"]["last_quarter"] == pytest.approx((0.65 + 0.55) / 2)
    assert rows["drawer-close"]["last_quarter_values"] == "0.650;0.550" and rows["push"]["seeds"] == 2
    assert rows["drawer-close"]["mean"] + rows["push"]["mean"] == pytest.approx(1.0)
    with open(out / "weights.csv") as f:
        assert len(list(csv.DictReader(f))) == 2
    assert "| vid2act | drawer-close | push" in (out / "report.md").read_text()
    assert (out / "weights_metaworld-drawer-close.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "none").exists()
    report.report([root / "dreamer"], tmp_path / "none")  # no weighted runs: no weights files
    assert not (tmp_path / "none" / "weights.csv").exists()


def test_diagnostics_table_per_run(runs, tmp_path):
    """Runs with diagnostics.json get a per-run table in report.md and diagnostics.csv (union of keys,
    known keys first, '-' where a run lacks one); without any diagnostics.json neither appears."""
    out = report.report([runs], tmp_path / "plain", plots=False)
    assert "Diagnostics (per run)" not in out["md"].read_text() and out["diagnostics"] == []
    assert not (tmp_path / "plain" / "diagnostics.csv").exists()
    gsa0, gsa1 = runs / "gsa" / "dmc-walker_walk-seed0", runs / "gsa" / "dmc-walker_walk-seed1"
    (gsa0 / "diagnostics.json").write_text(json.dumps(
        {"zeta_extra": 7, "reward_fit_r2": 0.712345, "retrieval_target_share": 0.8, "prior_alone_success": None,
         "guided_fraction_last": 0.1234, "weight_top": "drawer-open", "dataset": "/data/offline/mw"}))
    (gsa1 / "diagnostics.json").write_text(json.dumps({"retrieval_target_share": 1.0, "bc_alone_return": 812.0}))
    (runs / "dreamer" / "dmc-walker_walk-seed2" / "diagnostics.json").write_text("[1, 2]")  # not an object
    result = report.report([runs], tmp_path / "out", plots=False)
    assert [(r["label"], r["seed"]) for r in result["diagnostics"]] == [("gsa", 0), ("gsa", 1)]
    assert any("dreamer" in n and "not a JSON object" in n for n in result["notes"])
    md = result["md"].read_text()
    section = md[md.index("## Diagnostics (per run)"):].splitlines()
    head = [c.strip() for c in next(x for x in section if x.startswith("| label")).split("|")[1:-1]]
    assert head == ["label", "task", "seed", "retrieval_target_share", "prior_kind", "prior_alone_success", "prior_alone_return",
                    "guided_fraction_last", "reward_fit_r2", "weight_top", "zeta_extra"]  # no dataset path
    cells = {c.split("|")[3].strip(): [x.strip() for x in c.split("|")[1:-1]] for c in section if "| gsa" in c}
    assert cells["0"] == ["gsa", "walker_walk", "0", "0.8", "-", "-", "-", "0.123", "0.712", "drawer-open", "7"]
    assert cells["1"] == ["gsa", "walker_walk", "1", "1", "bc", "-", "812", "-", "-", "-", "-"]  # an old file's key
    with open(tmp_path / "out" / "diagnostics.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0])[:5] == ["label", "suite", "task", "seed", "run"]
    assert list(table[0])[-2:] == ["dataset", "zeta_extra"]  # known keys first, then the others by name
    assert table[0]["dataset"] == "/data/offline/mw" and float(table[0]["reward_fit_r2"]) == 0.712345
    assert table[1]["reward_fit_r2"] == "" and table[1]["prior_alone_return"] == "812.0"


def test_an_archive_reports_as_its_run_directories(runs, tmp_path, capsys):
    """--archive writes one compact gzip file (metrics, method config, diagnostics; no Hydra dump) that
    the report reads back in place of the run directories, with the same tables; bad archives fail
    with one line that says how to rewrite them."""
    gsa0 = runs / "gsa" / "dmc-walker_walk-seed0"
    (gsa0 / "diagnostics.json").write_text(json.dumps({"retrieval_target_share": 0.8, "prior_kind": "bc"}))
    archive = tmp_path / "kept" / "runs.jsonl.gz"
    assert report.main([str(runs), "--out", str(tmp_path / "dirs"), "--no-plots", "--archive", str(archive)]) == 0
    first = archive.read_bytes()
    report.report([runs], tmp_path / "again", plots=False, archive=archive)
    assert archive.read_bytes() == first                     # the same runs give the same bytes
    records = [json.loads(line) for line in gzip.decompress(first).decode().splitlines()]
    assert len(records) == 7 and {"method", "suite", "task", "seed", "rows", "diagnostics"} == set(records[0])
    assert {"retrieval_target_share": 0.8, "prior_kind": "bc"} in [r["diagnostics"] for r in records]
    assert report.main([str(archive), "--out", str(tmp_path / "archived"), "--no-plots"]) == 0
    for name in ("report.md", "report.csv", "diagnostics.csv"):
        assert (tmp_path / "archived" / name).read_text() == (tmp_path / "dirs" / name).read_text(), name
    assert ",gsa/dmc-walker_walk/seed0," in (tmp_path / "dirs" / "diagnostics.csv").read_text()  # no paths
    copy = tmp_path / "copy"
    shutil.copytree(runs / "gsa", copy)
    with pytest.raises(ValueError, match="same method, task and seed"):  # a copy of a run is not another seed
        report.report([runs / "gsa", copy], tmp_path / "x", plots=False, archive=tmp_path / "x.jsonl.gz")
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(gzip.compress(b'{"name": "a"}\n'))
    capsys.readouterr()
    assert report.main([str(broken), "--out", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert "line 1: not a run record" in err and "--archive" in err and len(err.strip().splitlines()) == 1
    broken.write_bytes(b"not gzip")
    assert report.main([str(broken), "--out", str(tmp_path / "b")]) == 1
    assert "not a readable gzip run archive" in capsys.readouterr().err


def test_a_resumed_runs_redone_rows_count_once(tmp_path):
    """A killed run resumes from its checkpoint and logs the steps after it again (transfer/loop.py writes a
    run/resumed row at the checkpoint's step first): the report, its archive and core.logger.curves read each
    step once, the resumed run's rows, and skip a line cut by the kill."""
    from core.logger import RESUMED, curves
    run = write_run(tmp_path / "runs", "gsa", "metaworld", "window-open", 0, final=500.0)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    killed = [r for r in rows if r["step"] <= 9000] + [{"step": 11000, "train/return": -1.0}]
    redone = [r for r in rows if r["step"] > 5000]
    text = "".join(json.dumps(r) + "\n" for r in killed) + '{"step": 12000, "train/re\n'
    text += json.dumps({"step": 5000, RESUMED: 1.0}) + "\n" + "".join(json.dumps(r) + "\n" for r in redone)
    (run / "metrics.jsonl").write_text(text)
    kept = [r for r in runs_mod.read_run(run).rows if RESUMED not in r]
    assert kept == rows                                  # the killed run's rows after its checkpoint are gone
    assert [v for _, v in curves(run, ["train/return"])["train/return"]] == [r["train/return"] for r in rows
                                                                               if "train/return" in r]
    archive = tmp_path / "runs.jsonl.gz"
    runs_mod.write_archive([runs_mod.read_run(run)], archive)
    assert runs_mod.read_archive(archive)[0].rows == runs_mod.read_run(run).rows
