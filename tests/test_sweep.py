"""transfer.sweep: the plan (seed-major order, task list, variables, seed scaling, checks) and --dry-run
without running anything; then real tiny runs on DMC cartpole through `python -m transfer.run`: a sweep
with a failing run goes on and reports, a rerun starts nothing, an unfinished run alone is rerun."""
import json
import os

import pytest

from conftest import ROOT, compose
from transfer import sweep

FAST = ["preset=quick_dmc", "env.action_repeat=2", "env.episode_frames=60", "trainer.warmup=40", "model.ac.horizon=4", "trainer.batch_size=2",
        "trainer.batch_length=8", "trainer.train_ratio=16", "trainer.steps=80", "trainer.eval_every=1000000",
        "trainer.eval_episodes=1", "trainer.final_eval_episodes=1", "logger.wandb=disabled", "logger.progress=false"]


def write_sweep(path, **spec):
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


@pytest.fixture
def small(tmp_path):
    return write_sweep(tmp_path / "small.yaml", name="small", tasks=["walker_walk", "cheetah_run"],
                       common=["preset=quick_dmc", "trainer.steps=${steps}"],
                       methods={"dreamer": {"seeds": 2, "overrides": ["method=dreamer"]},
                                "gsa_noguide": {"seeds": 1, "overrides": ["method=gsa", "method.guidance=false",
                                                                          "teacher=${teacher}", "x=${method.name}"]},
                                "finetune": {"seeds": 3, "overrides": ["method=finetune", "teacher=${teacher}"]}},
                       vars={"steps": 500, "teacher": "runs/t.pt"})


def order(jobs):
    return [(j.seed, j.task, j.label) for j in jobs]


def test_plan_is_seed_major_with_variables(small, tmp_path):
    spec = sweep.load_sweep(small)
    jobs = sweep.plan(spec, tmp_path / "root")
    w, c = "walker_walk", "cheetah_run"
    assert order(jobs) == [(0, w, "dreamer"), (0, w, "gsa_noguide"), (0, w, "finetune"),
                           (0, c, "dreamer"), (0, c, "gsa_noguide"), (0, c, "finetune"),
                           (1, w, "dreamer"), (1, w, "finetune"), (1, c, "dreamer"), (1, c, "finetune"),
                           (2, w, "finetune"), (2, c, "finetune")]
    gsa = jobs[1]
    assert gsa.run_dir == tmp_path / "root" / "small" / "gsa_noguide" / w / "seed0"
    assert gsa.log == tmp_path / "root" / "small" / "gsa_noguide" / w / "seed0.log"
    assert gsa.command[1:] == ["-m", "transfer.run", "preset=quick_dmc", "trainer.steps=500", "method=gsa",
                               "method.guidance=false", "teacher=runs/t.pt", "x=${method.name}",  # Hydra's
                               f"task={w}", "seed=0", f"run_dir={gsa.run_dir}"]
    # --tasks replaces the list, --set a variable, overrides after -- come last (they win in Hydra)
    spec = sweep.load_sweep(small, tasks=["reacher_easy"], set_vars=["teacher=other.pt"], extra=["trainer.steps=9"])
    jobs = sweep.plan(spec, "r")
    assert {j.task for j in jobs} == {"reacher_easy"} and len(jobs) == 6
    assert jobs[1].overrides[4:8] == ["teacher=other.pt", "x=${method.name}", "trainer.steps=9", "task=reacher_easy"]
    # --seed-list: only those seeds, of the ones each method has, still seed-major
    assert order(sweep.plan(sweep.load_sweep(small), "r", only_seeds=[2, 1])) == [
        (1, w, "dreamer"), (1, w, "finetune"), (1, c, "dreamer"), (1, c, "finetune"),
        (2, w, "finetune"), (2, c, "finetune")]
    assert sweep.plan(sweep.load_sweep(small), "r", only_seeds=[7]) == []
    # --seeds-scale: seeds x scale, rounded, at least 1
    assert [m["seeds"] for m in sweep.load_sweep(small, seeds_scale=2)["methods"].values()] == [4, 2, 6]
    assert [m["seeds"] for m in sweep.load_sweep(small, seeds_scale=0.1)["methods"].values()] == [1, 1, 1]
    # --methods: a subset of the labels, in the file's order; an unknown label fails clearly
    assert list(sweep.load_sweep(small, only=["finetune", "dreamer"])["methods"]) == ["dreamer", "finetune"]
    with pytest.raises(ValueError, match="not in"):
        sweep.load_sweep(small, only=["nope"])


@pytest.mark.parametrize("change, message", [
    (dict(vars={}), "unknown variable"),
    (dict(common=["task=walker_walk"]), "sets task"),
    (dict(methods={"a/b": {"seeds": 1}}), "plain name"),
    (dict(methods={"a": {"seeds": 1, "override": []}}), "seeds: and overrides: only"),
    (dict(seed=3), "unknown keys"),
    (dict(tasks=[]), "no tasks"),
])
def test_bad_sweep_files_fail_clearly(tmp_path, change, message):
    spec = dict(name="s", tasks=["walker_walk"], common=["trainer.steps=${steps}"], vars={"steps": 5},
                methods={"dreamer": {"seeds": 1, "overrides": ["method=dreamer"]}})
    path = write_sweep(tmp_path / "bad.yaml", **{**spec, **change})
    with pytest.raises(ValueError, match=message):
        sweep.load_sweep(path)
    with pytest.raises(ValueError, match="sets seed"):
        sweep.load_sweep(write_sweep(tmp_path / "ok.yaml", **spec), extra=["seed=1"])


def test_dry_run_lists_done_and_missing(small, tmp_path, capsys):
    root = tmp_path / "root"
    base = root / "small" / "dreamer" / "cheetah_run"
    done, partial = base / "seed0", base / "seed1"
    for run in (done, partial):
        run.mkdir(parents=True)
        (run / "metrics.jsonl").write_text(json.dumps({"step": 500, "eval/return": 3.0}) + "\n")
    with open(done / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 500, "final/return": 3.0}) + "\n")
    with open(partial / "metrics.jsonl", "a") as f:
        f.write('{"step": 500, "final/ret')  # killed mid-write: not a final row
    assert sweep.finished(done) and not sweep.finished(partial) and not sweep.finished(root / "none")
    assert sweep.finished(done, 500) and not sweep.finished(done, 501)  # a higher budget: the run is extended
    before = sorted(root.rglob("*"))
    argv = [str(small), "--root", str(root), "--tasks", "cheetah_run", "--dry-run", "--", "trainer.threads=1"]
    assert sweep.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("sweep small: 3 methods x 1 tasks, 6 runs (1 done, 5 missing)")
    assert len(lines) == 7 and all("cheetah_run" in x and "walker_walk" not in x for x in lines[1:])
    assert lines[1].startswith("[1/6] done    dreamer cheetah_run seed0: ") and f"run_dir={done}" in lines[1]
    assert lines[4].startswith("[4/6] missing dreamer cheetah_run seed1: ") and lines[4].endswith(f"run_dir={partial}")
    assert "trainer.threads=1 task=cheetah_run seed=1" in lines[4]
    assert sorted(root.rglob("*")) == before  # nothing ran, nothing written
    assert sweep.main([str(small), "--root", str(root), "--seed-list", "9", "--dry-run"]) == 2   # no such seed
    assert "--seed-list [9] names no seed" in capsys.readouterr().err
    assert sweep.main([*argv, "trainer.steps=1000"]) == 0  # the last trainer.steps is the budget
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("sweep small: 3 methods x 1 tasks, 6 runs (0 done, 6 missing)")


def test_sweep_runs_resumes_and_reports(tmp_path, capsys, monkeypatch):
    """Real tiny runs: 1 failing + 2 dreamer seeds (2 at a time), with a stand-in diagnose module."""
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "fake_diagnose.py").write_text(
        "import json, pathlib, sys\nrun = pathlib.Path(sys.argv[1])\n"
        "(run / 'diagnostics.json').write_text(json.dumps({'guided_fraction_last': 0.25, 'run_name': run.name}))\n")
    monkeypatch.syspath_prepend(str(plugin))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(plugin), os.environ.get("PYTHONPATH")])))
    monkeypatch.setattr(sweep, "DIAGNOSE", "fake_diagnose")
    root, good = tmp_path / "root", {"dreamer": {"seeds": 2, "overrides": ["method=dreamer"]}}
    first = write_sweep(tmp_path / "first.yaml", name="cmp", tasks=["cartpole_balance"], common=FAST,
                        methods={"broken": {"seeds": 1, "overrides": ["trainer.no_such_key=1"]}, **good})
    args = ["--root", str(root)]
    assert sweep.main([str(first), *args, "--jobs", "2"]) == 1  # the failure is reported at the end
    out = capsys.readouterr().out
    assert "[1/3] broken cartpole_balance seed0: FAILED (exit 1)" in out
    runs = [root / "cmp" / "dreamer" / "cartpole_balance" / f"seed{k}" for k in (0, 1)]
    for k, run in enumerate(runs):
        assert f"dreamer cartpole_balance seed{k}: done in" in out and sweep.finished(run)
        assert json.loads((run / "diagnostics.json").read_text())["run_name"] == f"seed{k}"
    md = (root / "cmp" / "report" / "report.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith("| dreamer "))
    assert "cartpole_balance" in line and "| 2 " in line and "Diagnostics (per run)" in md
    assert (root / "cmp" / "report" / "diagnostics.csv").read_text().count("0.25") == 2

    # a rerun of the good part starts no process: logs, metrics and diagnostics stay as they were
    second = write_sweep(tmp_path / "second.yaml", name="cmp", tasks=["cartpole_balance"], common=FAST, methods=good)
    files = lambda run: [(run / "metrics.jsonl").read_bytes(), run.with_suffix(".log").read_bytes(),  # noqa: E731
                         (run / "diagnostics.json").stat().st_mtime_ns]
    before = [files(run) for run in runs]
    assert sweep.main([str(second), *args]) == 0
    out = capsys.readouterr().out
    assert out.count("already done, skipped") == 2 and "started" not in out and "report:" in out
    assert [files(run) for run in runs] == before

    # seed 1 killed before its first checkpoint: no final row, no checkpoint; only it reruns
    rows = (runs[1] / "metrics.jsonl").read_text().splitlines()
    (runs[1] / "metrics.jsonl").write_text("".join(x + "\n" for x in rows if "final/return" not in x))
    (runs[1] / "checkpoint.pt").unlink()
    assert sweep.main([str(second), *args]) == 0
    out = capsys.readouterr().out
    assert "[1/2] dreamer cartpole_balance seed0: already done, skipped" in out
    assert "[2/2] dreamer cartpole_balance seed1: started (new)" in out and "seed1: done in" in out
    assert files(runs[0]) == before[0] and sweep.finished(runs[1])

    # a final row lost while the checkpoint is at the last step: transfer.run exits 0 without one
    rows = (runs[0] / "metrics.jsonl").read_text().splitlines()
    (runs[0] / "metrics.jsonl").write_text("".join(x + "\n" for x in rows if "final/return" not in x))
    assert sweep.main([str(second), *args]) == 1
    out = capsys.readouterr().out
    assert "seed0: started (resuming)" in out and "seed0: FAILED (exit 0 but no final/return row" in out

    # a higher budget extends both runs from their checkpoints (80 frames) instead of starting again
    assert sweep.main([str(second), *args, "--", "trainer.steps=120"]) == 0
    out = capsys.readouterr().out
    assert out.count("started (resuming)") == 2 and out.count("done in") == 2
    for run in runs:
        assert sweep.finished(run, 120) and "resumed from" in run.with_suffix(".log").read_text()


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "sweep").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_sweeps_compose(path, tmp_path):
    """Every run of every sweep file in configs/sweep composes with Hydra (a typo fails here, not hours in)."""
    jobs = sweep.plan(sweep.load_sweep(path), tmp_path)
    assert jobs
    for job in jobs:
        cfg = compose(*[o for o in job.overrides if not o.startswith("run_dir=")])
        assert cfg.task == job.task and cfg.seed == job.seed
