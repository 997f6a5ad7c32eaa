"""Run a comparison, methods x tasks x seeds, and write its report:

    python -m transfer.sweep SWEEP.yaml [--tasks T1 T2 ...] [--methods L1 L2 ...] [--seeds-scale X] [--seed-list K ...]
        [--set NAME=VALUE ...] [--jobs N] [--root runs/sweeps] [--out DIR] [--metric auto|return|success] [--dry-run]
        [--no-diagnose] [-- HYDRA_OVERRIDE ...]

The sweep file (example: configs/sweep/noncurated_mw.yaml):

    name: noncurated_mw                     # runs go to ROOT/NAME (default: the file's name)
    tasks: [drawer-open, door-unlock]       # the default task list; --tasks replaces it
    common: [preset=quick, env=metaworld]   # Hydra overrides for every run
    methods:                                # label -> number of seeds and the label's own overrides
      dreamer: {seeds: 3, overrides: [method=dreamer]}
      gsa: {seeds: 3, overrides: [method=gsa, "teacher=${teacher}"]}
    vars: {teacher: runs/teacher.pt}        # ${NAME} in common / overrides; --set NAME=VALUE replaces one

Variables: `${NAME}` (a plain name) in `common`, `overrides` and the overrides after `--` is replaced by
`vars[NAME]` (plain string substitution); an unknown name is an error. Dotted or resolver interpolations
(`${method.name}`, `${oc.env:X}`) are left for Hydra. In a YAML flow list ([a, b]) quote an override
that holds `${...}`.

Each run is `python -m transfer.run COMMON OVERRIDES EXTRA task=T seed=K run_dir=ROOT/NAME/LABEL/T/seedK`
(EXTRA: the overrides after `--`; later overrides win), its output appended to
ROOT/NAME/LABEL/T/seedK.log. Order: seed-major (seed 0 of every task and method, then seed 1, ...; within a
seed task by task, every method on a task in turn), so a partial sweep holds balanced evidence. A run is
done when its metrics.jsonl has a "final/return" row, at a step >= the run's budget when its overrides set
one (the last `trainer.steps=N`): done runs start no process; others are (re)started with the same run_dir,
which resumes from its checkpoint, so a killed sweep reruns only what is missing, and raising the budget
(e.g. `-- trainer.steps=40000`) extends finished runs from where they stopped.
--seeds-scale X runs max(1, round(seeds * X)) seeds per method; --seed-list K ... runs only those seeds (of the ones
each method has: `--seed-list 1 2` adds seeds 1-2 to a sweep whose seed 0 ran elsewhere). A failed run (nonzero
exit, or exit 0 without a final row) is reported and the sweep goes on; the exit code is then 1. --jobs N runs N
at a time.

After a run finishes (and for a done run without diagnostics.json), `python -m transfer.diagnose RUN_DIR`
writes RUN_DIR/diagnostics.json when that module exists (--no-diagnose: never); its failure only warns.
At the end `transfer.report` compares every run under ROOT/NAME into --out (default ROOT/NAME/report).
--dry-run prints the planned commands, each marked done or missing, and runs nothing.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import yaml

DIAGNOSE = "transfer.diagnose"   # module run on each finished run, when it exists
RESERVED = ("task", "seed", "run_dir")   # set by the sweep for each run
SWEEP_KEYS = {"name", "tasks", "common", "methods", "vars"}
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]*$")
VAR = re.compile(r"\$\{(\w+)\}")
_print_lock = threading.Lock()


@dataclass
class Job:
    """One planned run."""
    label: str
    task: str
    seed: int
    run_dir: pathlib.Path
    overrides: list[str]

    @property
    def log(self) -> pathlib.Path:
        return self.run_dir.parent / f"{self.run_dir.name}.log"

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "transfer.run", *self.overrides]

    @property
    def name(self) -> str:
        return f"{self.label} {self.task} seed{self.seed}"

    @property
    def steps(self) -> int | None:
        """The budget in env frames that the overrides set (the last `trainer.steps=N`), else None."""
        values = [item.split("=", 1)[1] for item in self.overrides if item.startswith("trainer.steps=")]
        try:
            return int(float(values[-1])) if values else None
        except ValueError:
            return None


def substitute(text: str, variables: dict) -> str:
    """Replace each ${NAME} (a plain name) by variables[NAME]; see the module doc."""
    def value(match):
        if match.group(1) not in variables:
            raise ValueError(f"{text!r}: unknown variable ${{{match.group(1)}}}; define it under vars: in the sweep "
                             f"file or pass --set {match.group(1)}=VALUE")
        return str(variables[match.group(1)])
    return VAR.sub(value, str(text))


def check_overrides(overrides: list[str], where: str):
    for item in overrides:
        key = str(item).split("=", 1)[0].lstrip("+~")
        if key in RESERVED:
            raise ValueError(f"{where}: {item!r} sets {key}, which the sweep sets for each run "
                             f"(tasks: / --tasks, seeds:, --root)")


def split_overrides(argv) -> tuple[list[str], list[str]]:
    """Command-line arguments -> (the driver's own, the Hydra overrides after `--` for every run)."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1:]


def read_spec(path: pathlib.Path, keys: set, set_vars=()) -> tuple[dict, dict]:
    """A sweep-like YAML file (a mapping with only `keys`) and its vars with --set NAME=VALUE applied."""
    spec = yaml.safe_load(path.read_text()) or {}
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: expected a mapping with {sorted(keys)}")
    unknown = set(spec) - keys
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; this file has {sorted(keys)}")
    variables = dict(spec.get("vars") or {})
    for item in set_vars:
        if "=" not in item:
            raise ValueError(f"--set {item}: expected NAME=VALUE")
        name, value = item.split("=", 1)
        variables[name] = value
    return spec, variables


def load_sweep(path, tasks=None, set_vars=(), seeds_scale: float = 1.0, extra=(), only=None) -> dict:
    """The sweep file, checked, with --tasks / --methods / --set / --seeds-scale applied and variables substituted:
    {name, tasks, methods: {label: {seeds, overrides (common + own + extra)}}}."""
    path = pathlib.Path(path)
    spec, variables = read_spec(path, SWEEP_KEYS, set_vars)
    tasks = list(tasks or spec.get("tasks") or [])
    if not tasks:
        raise ValueError(f"{path}: no tasks; list them under tasks: or pass --tasks")
    if len(set(tasks)) < len(tasks):
        raise ValueError(f"tasks listed twice: {tasks}")
    methods = spec.get("methods") or {}
    if not isinstance(methods, dict) or not methods:
        raise ValueError(f"{path}: methods: must map each label to {{seeds: N, overrides: [...]}}")
    if only:
        missing = [m for m in only if m not in methods]
        if missing:
            raise ValueError(f"--methods {missing}: not in {path}; its labels are {list(methods)}")
        methods = {k: v for k, v in methods.items() if k in only}
    common = [substitute(x, variables) for x in spec.get("common") or []]
    extra = [substitute(x, variables) for x in extra]
    check_overrides(common, f"{path} common")
    check_overrides(extra, "overrides after --")
    out = {}
    for label, method in methods.items():
        label = str(label)
        if not LABEL.match(label):
            raise ValueError(f"{path}: method label {label!r} must be a plain name (letters, digits, _ . = + -)")
        method = method or {}
        if not isinstance(method, dict) or set(method) - {"seeds", "overrides"}:
            raise ValueError(f"{path}: methods.{label} takes seeds: and overrides: only")
        seeds = int(method.get("seeds", 1))
        if seeds < 1:
            raise ValueError(f"{path}: methods.{label}.seeds must be at least 1")
        own = [substitute(x, variables) for x in method.get("overrides") or []]
        check_overrides(own, f"{path} methods.{label}")
        out[label] = {"seeds": max(1, round(seeds * seeds_scale)), "overrides": common + own + extra}
    return {"name": str(spec.get("name") or path.stem), "tasks": [str(t) for t in tasks], "methods": out}


def plan(sweep: dict, root, only_seeds=None) -> list[Job]:
    """Every run in seed-major order: for each seed (of `only_seeds` when given), for each task, each method that
    has that seed."""
    base = pathlib.Path(root) / sweep["name"]
    jobs = []
    for seed in range(max(m["seeds"] for m in sweep["methods"].values())):
        for task in sweep["tasks"]:
            for label, method in sweep["methods"].items():
                if seed < method["seeds"] and (only_seeds is None or seed in only_seeds):
                    run_dir = base / label / task / f"seed{seed}"
                    jobs.append(Job(label, task, seed, run_dir,
                                    [*method["overrides"], f"task={task}", f"seed={seed}", f"run_dir={run_dir}"]))
    return jobs


def finished(run_dir: pathlib.Path, steps: int | None = None) -> bool:
    """Does the run's metrics.jsonl have a "final/return" row, at a step >= `steps` if given (skipping
    unreadable lines)?"""
    path = pathlib.Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return False
    for line in path.read_text(errors="replace").splitlines():
        if '"final/return"' in line:
            try:
                row = json.loads(line)
                if "final/return" in row and (steps is None or row.get("step", 0) >= steps):
                    return True
            except (json.JSONDecodeError, TypeError, AttributeError):
                continue
    return False


def say(text: str):
    with _print_lock:
        print(text, flush=True)


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def diagnose_available() -> bool:
    try:
        return importlib.util.find_spec(DIAGNOSE) is not None
    except (ImportError, ValueError):
        return False


def run_logged(command: list[str], log: pathlib.Path) -> int:
    """Run a command with stdout and stderr appended to `log`; its exit code."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", HYDRA_FULL_ERROR="1")
    with open(log, "a") as f:
        f.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} $ {shlex.join(command)}\n")
        f.flush()
        return subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, env=env).returncode


def diagnose(job: Job) -> bool:
    """Run the diagnose module on a finished run; a failure only warns. Whether it succeeded."""
    rc = run_logged([sys.executable, "-m", DIAGNOSE, str(job.run_dir)], job.log)
    if rc:
        say(f"warning: {DIAGNOSE} failed on {job.run_dir} (exit {rc}); see {job.log}")
    return rc == 0


def execute(job: Job, index: int, total: int, with_diagnose: bool) -> dict:
    """Run one job unless it is done; then diagnose it. {job, status: skipped|done|failed, rc, seconds}."""
    tag = f"[{index}/{total}] {job.name}"
    if finished(job.run_dir, job.steps):
        say(f"{tag}: already done, skipped")
        if with_diagnose and not (job.run_dir / "diagnostics.json").exists():
            diagnose(job)
        return dict(job=job, status="skipped", rc=0, seconds=0.0)
    say(f"{tag}: started ({'resuming' if (job.run_dir / 'checkpoint.pt').exists() else 'new'}), log {job.log}")
    start = time.time()
    rc = run_logged(job.command, job.log)
    seconds = time.time() - start
    if rc == 0 and finished(job.run_dir, job.steps):
        say(f"{tag}: done in {minutes(seconds)}")
        if with_diagnose:
            diagnose(job)
        return dict(job=job, status="done", rc=rc, seconds=seconds)
    why = f"exit {rc}" if rc else f"exit 0 but no final/return row{f' at step >= {job.steps}' if job.steps else ''} in metrics.jsonl"
    say(f"{tag}: FAILED ({why}) after {minutes(seconds)}; see {job.log}")
    return dict(job=job, status="failed", rc=rc, seconds=seconds)


def run_all(jobs: list[Job], n_jobs: int = 1, with_diagnose: bool = True) -> list[dict]:
    """Run the jobs, n_jobs at a time, started in plan order; results in plan order."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, n_jobs)) as pool:
        futures = [pool.submit(execute, job, i + 1, len(jobs), with_diagnose) for i, job in enumerate(jobs)]
        try:
            return [f.result() for f in futures]
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def label_clashes(jobs: list[Job]) -> list[str]:
    """Sweep labels whose runs the report would merge (the report groups by the method label read from
    each run's config, e.g. "gsa no-guidance", not by the sweep's label)."""
    from transfer.report.runs import is_run, read_run
    seen: dict[tuple[str, str], set[str]] = {}
    for job in jobs:
        if is_run(job.run_dir):
            seen.setdefault((read_run(job.run_dir).method, job.task), set()).add(job.label)
    return [f"sweep labels {sorted(labels)} on {task} all report as method {method!r}: the report merges their "
            f"seeds (it tells runs apart by method name and ablation switches only)"
            for (method, task), labels in seen.items() if len(labels) > 1]


def write_report(base: pathlib.Path, out, metric: str, jobs: list[Job]) -> bool:
    from transfer.report.table import report
    try:
        result = report([base], out, metric=metric)
    except FileNotFoundError as err:
        say(f"no report: {err}")
        return False
    say("\n".join(result["table"]))
    for note in result["notes"] + label_clashes(jobs):
        say(f"note: {note}")
    say(f"report: {result['md']}")
    return True


def main(argv=None) -> int:
    argv, extra = split_overrides(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m transfer.sweep", description=__doc__.split("\n\n")[0],
                                     epilog="Everything after -- is passed to every run as Hydra overrides.")
    parser.add_argument("sweep", help="sweep file (see configs/sweep/)")
    parser.add_argument("--tasks", nargs="+", help="replaces the sweep file's task list")
    parser.add_argument("--methods", nargs="+", help="run only these method labels of the sweep file")
    parser.add_argument("--seeds-scale", type=float, default=1.0, help="seeds per method x this (at least 1)")
    parser.add_argument("--seed-list", type=int, nargs="+", metavar="K", help="run only these seeds (0-based)")
    parser.add_argument("--set", dest="set_vars", action="append", default=[], metavar="NAME=VALUE",
                        help="set a sweep variable (repeatable)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
    parser.add_argument("--root", default="runs/sweeps", help="runs go to ROOT/NAME/LABEL/TASK/seedK")
    parser.add_argument("--out", help="report folder (default ROOT/NAME/report)")
    parser.add_argument("--metric", choices=["auto", "return", "success"], default="auto", help="see transfer.report")
    parser.add_argument("--dry-run", action="store_true", help="print the planned commands and run nothing")
    parser.add_argument("--no-diagnose", action="store_true", help=f"do not run {DIAGNOSE} on finished runs")
    args = parser.parse_args(argv)
    if args.seeds_scale <= 0:
        parser.error("--seeds-scale must be positive")
    if args.seed_list and min(args.seed_list) < 0:
        parser.error("--seed-list takes seeds >= 0")
    try:
        sweep = load_sweep(args.sweep, args.tasks, args.set_vars, args.seeds_scale, extra, args.methods)
    except (OSError, ValueError, yaml.YAMLError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    jobs = plan(sweep, args.root, args.seed_list)
    if not jobs:
        seeds = {label: method["seeds"] for label, method in sweep["methods"].items()}
        print(f"error: no run left: --seed-list {args.seed_list} names no seed that the methods have ({seeds} seeds)",
              file=sys.stderr)
        return 2
    base = pathlib.Path(args.root) / sweep["name"]
    done = [finished(job.run_dir, job.steps) for job in jobs]
    say(f"sweep {sweep['name']}: {len(sweep['methods'])} methods x {len(sweep['tasks'])} tasks, {len(jobs)} runs "
        f"({sum(done)} done, {len(jobs) - sum(done)} missing) in {base}")
    if args.dry_run:
        for i, (job, is_done) in enumerate(zip(jobs, done)):
            say(f"[{i + 1}/{len(jobs)}] {'done   ' if is_done else 'missing'} {job.name}: {shlex.join(job.command)}")
        return 0
    start = time.time()
    results = run_all(jobs, args.jobs, with_diagnose=not args.no_diagnose and diagnose_available())
    failed = [r for r in results if r["status"] == "failed"]
    counts = {s: sum(r["status"] == s for r in results) for s in ("done", "skipped", "failed")}
    say(f"sweep {sweep['name']}: {counts['done']} trained, {counts['skipped']} already done, {counts['failed']} "
        f"failed in {minutes(time.time() - start)}" + "".join(f"\n  failed: {r['job'].name} ({r['job'].log})"
                                                             for r in failed))
    write_report(base, args.out or base / "report", args.metric, jobs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
