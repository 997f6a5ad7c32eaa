"""Continual task adaptation (GSA Sec. 4.3): one agent learns a sequence of tasks, each task one run of
`python -m transfer.run` that starts from the previous task's final checkpoint; after each task the agent is
evaluated on every task so far (forgetting), and a report compares the variants:

    python -m transfer.continual SEQUENCE.yaml [--variants V ...] [--seeds N] [--root runs/continual]
        [--set NAME=VALUE ...] [--dry-run] [-- HYDRA_OVERRIDE ...]

The sequence file (example: configs/continual/quadruped.yaml):

    name: quadruped                           # runs go to ROOT/NAME (default: the file's name)
    tasks: [quadruped_stand, quadruped_walk]  # the sequence, in training order
    seeds: 1                                  # --seeds N replaces it
    eval_episodes: 2                          # episodes per task in the forgetting evaluation
    common: [preset=quick_dmc, "trainer.steps=${frames}"]   # Hydra overrides of every run
    variants:                                 # label -> its overrides and what task i > 0 takes from task i-1
      finetune: {overrides: [method=dreamer], keep: [wm, actor, critic], replay: false}
    vars: {frames: 10000}                     # ${NAME} in common / overrides; --set NAME=VALUE replaces one

Variables work as in transfer.sweep. Task i of a variant and seed K runs `python -m transfer.run COMMON OVERRIDES
EXTRA [init.checkpoint=<run i-1>/checkpoint.pt init.keep=[KEEP] init.replay=REPLAY] task=T_i seed=K
run_dir=ROOT/NAME/VARIANT/seedK/<i>-<T_i>` (EXTRA: the overrides after --; transfer/build.py loads the kept
parts, and with replay: true the replay, from task i-1's final state; the rest starts fresh, optimiser state
included), its output appended to <run_dir>.log. A run is done as in transfer.sweep (a final/return row at a step
>= its budget): a done run starts nothing, an interrupted one resumes from its own checkpoint (init is then
ignored), and a failed one stops its sequence (later tasks need its checkpoint) while the others go on.

After task i is done: with PackNet (method.packnet.enabled) its final checkpoint is pruned once for task i
(student/packnet.py; no retraining after the pruning); then that checkpoint's agent is evaluated on the eval envs
of every task j <= i for eval_episodes episodes (the run's trainer.eval_policy; PackNet with task j's weights only)
and one row per (i, j) is appended to ROOT/NAME/VARIANT/seedK/forgetting.jsonl, unless the file has one for that
checkpoint step. Order: seed by seed, task by task, every variant's task i in turn (balanced evidence when stopped
early). At the end transfer/report/continual.py writes ROOT/NAME/report. --dry-run checks the file, prints the
planned commands (done / missing) and runs nothing.

Raising the budget of a finished sequence (--set frames=...) extends each task's run from its own checkpoint; it
does not retrain later tasks from the extended earlier ones: give such a sequence another name or --root.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import shlex
import sys
import time

import yaml

from core.logger import read_jsonl
from transfer.sweep import (LABEL, Job, execute, finished, minutes, read_spec, say, split_overrides,
                            substitute)

ROOT = pathlib.Path(__file__).resolve().parents[1]
KEYS = {"name", "tasks", "seeds", "eval_episodes", "common", "variants", "vars"}
VARIANT_KEYS = {"overrides", "keep", "replay"}
PARTS = ("wm", "actor", "critic")  # transfer.build.INIT_PARTS (not imported: --dry-run stays light)
RESERVED = ("task", "seed", "run_dir", "init")  # set by the driver for each run
# a rebuilt run that only acts: no TensorBoard file, and of its replay (which acting never samples) only the
# last file per stream is read (core.replay.Replay.load)
ACTING_ONLY = {"logger.tensorboard": False, "trainer.replay_capacity": 1}


def check_overrides(overrides: list[str], where: str):
    for item in overrides:
        key = str(item).split("=", 1)[0].lstrip("+~")
        if key.split(".")[0] in RESERVED:
            raise ValueError(f"{where}: {item!r} sets {key}, which transfer.continual sets for each run "
                             f"(tasks:, seeds:, --root, the variant's keep: and replay:)")


def load_sequence(path, set_vars=(), extra=(), only=None, seeds=None) -> dict:
    """The sequence file, checked, with --variants / --seeds / --set and the extra overrides applied:
    {name, tasks, seeds, eval_episodes, variants: {label: {overrides (common + own + extra), keep, replay}}}."""
    path = pathlib.Path(path)
    spec, variables = read_spec(path, KEYS, set_vars)
    tasks = [str(t) for t in spec.get("tasks") or []]
    if not tasks or len(set(tasks)) < len(tasks):
        raise ValueError(f"{path}: tasks: must list the sequence, each task once (got {tasks})")
    variants = spec.get("variants") or {}
    if not isinstance(variants, dict) or not variants:
        raise ValueError(f"{path}: variants: must map each label to {{overrides: [...], keep: [...], replay: bool}}")
    missing = [v for v in only or [] if v not in variants]
    if missing:
        raise ValueError(f"--variants {missing}: not in {path}; its variants are {list(variants)}")
    seeds = int(spec.get("seeds", 1) if seeds is None else seeds)
    episodes = int(substitute(spec.get("eval_episodes", 2), variables))
    if seeds < 1 or episodes < 1:
        raise ValueError(f"{path}: seeds ({seeds}) and eval_episodes ({episodes}) must be at least 1")
    common = [substitute(x, variables) for x in spec.get("common") or []]
    extra = [substitute(x, variables) for x in extra]
    check_overrides(common, f"{path} common")
    check_overrides(extra, "overrides after --")
    out = {}
    for label, variant in variants.items():
        label, variant = str(label), variant or {}
        if only and label not in only:
            continue
        if not LABEL.match(label):
            raise ValueError(f"{path}: variant label {label!r} must be a plain name (letters, digits, _ . = + -)")
        if not isinstance(variant, dict) or set(variant) - VARIANT_KEYS:
            raise ValueError(f"{path}: variants.{label} takes {sorted(VARIANT_KEYS)} only")
        keep = list(variant.get("keep", PARTS))
        if set(keep) - set(PARTS) or not isinstance(variant.get("replay", False), bool):
            raise ValueError(f"{path}: variants.{label}: keep: lists some of {list(PARTS)} (got {keep}), "
                             f"replay: is true or false")
        own = [substitute(x, variables) for x in variant.get("overrides") or []]
        check_overrides(own, f"{path} variants.{label}")
        out[label] = {"overrides": common + own + extra, "keep": keep, "replay": bool(variant.get("replay", False))}
    return {"name": str(spec.get("name") or path.stem), "tasks": tasks, "seeds": seeds, "eval_episodes": episodes,
            "variants": out}


def chain_dir(root, seq: dict, variant: str, seed: int) -> pathlib.Path:
    return pathlib.Path(root) / seq["name"] / variant / f"seed{seed}"


def plan(seq: dict, root) -> list[Job]:
    """Every run in execution order: seed by seed, task by task, each variant's run of that task."""
    jobs = []
    for seed in range(seq["seeds"]):
        for i, task in enumerate(seq["tasks"]):
            for label, variant in seq["variants"].items():
                base = chain_dir(root, seq, label, seed)
                init = []
                if i:
                    previous = base / f"{i - 1}-{seq['tasks'][i - 1]}" / "checkpoint.pt"
                    init = [f"init.checkpoint={previous}", f"init.keep=[{','.join(variant['keep'])}]",
                            f"init.replay={str(variant['replay']).lower()}"]
                run_dir = base / f"{i}-{task}"
                jobs.append(Job(label, task, seed, run_dir,
                                [*variant["overrides"], *init, f"task={task}", f"seed={seed}", f"run_dir={run_dir}"]))
    return jobs


def compose(overrides: list[str]):
    """The run's config as `python -m transfer.run` composes it."""
    from hydra import compose as hydra_compose, initialize_config_dir
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        return hydra_compose("config", overrides=list(overrides))


def check_runs(seq: dict, jobs: list[Job]):
    """Each variant's first run composes, and its env suite knows every task: one ValueError otherwise."""
    from omegaconf import OmegaConf
    from envs import check_task
    first = {}
    for job in jobs:
        first.setdefault(job.label, job)
    for label, job in first.items():
        try:
            cfg = compose([o for o in job.overrides if not o.startswith("run_dir=")])
        except Exception as err:  # noqa: BLE001 (Hydra's errors: an unknown key, option or bad value)
            raise ValueError(f"variant {label}: the overrides do not compose: {err}") from None
        for task in seq["tasks"]:
            check_task(OmegaConf.to_container(cfg.env, resolve=True), task)


# ---- after a task: PackNet's pruning, the forgetting evaluation ----------------------------------------------
def final_step(run_dir: pathlib.Path) -> int:
    """The step of the run's last final evaluation (its final checkpoint's)."""
    return max(int(r["step"]) for r in read_jsonl(run_dir / "metrics.jsonl") if "final/return" in r)


def uses_packnet(run_dir: pathlib.Path) -> bool:
    cfg = yaml.safe_load((run_dir / "hydra" / "config.yaml").read_text()) or {}
    return bool(((cfg.get("method") or {}).get("packnet") or {}).get("enabled"))


def prune(run_dir: pathlib.Path, index: int) -> dict | None:
    """PackNet's pruning for task `index` on the run's final checkpoint, once (the checkpoint records how
    many tasks are pruned): the pruned weights and owner maps replace the checkpoint's agent weights, the rest
    of it stays as it was; the stats row goes to its metrics.jsonl. None when it was pruned before."""
    from core import checkpoint
    from student.packnet import find
    from transfer.evaluate import rebuild
    trainer = rebuild(run_dir, **ACTING_ONLY)
    try:
        maps = find(trainer.agent)
        if maps is None:
            raise ValueError(f"{run_dir}: method.packnet is on but the actor has no owner maps")
        if int(maps.pruned) > index:
            return None
        stats = maps.prune(index, float(trainer.cfg.method.packnet.prune))
        state = checkpoint.load(trainer.ckpt_path)
        state["agent"]["model"] = {k: v.cpu() for k, v in trainer.agent.state_dict().items()}
        checkpoint.save(trainer.ckpt_path, state)  # atomic: pruned or not, never half
        trainer.logger.write(trainer.step, stats)
        return stats
    finally:
        trainer.close()


def evaluate(run_dir: pathlib.Path, task: str, index: int, episodes: int) -> dict:
    """The run's final agent on `task`'s eval envs (PackNet: only the weights of tasks 0..index); nothing
    is written to the run."""
    from envs.episodes import summarize
    from student.packnet import find
    from transfer.evaluate import rebuild
    trainer = rebuild(run_dir, task=task, **ACTING_ONLY)
    try:
        maps = find(trainer.agent)
        if maps is not None:
            maps.keep_tasks(index)
        sample = trainer.cfg.trainer.eval_policy == "sample"
        episodes_done, _ = trainer._eval_episodes(episodes, sample)
        return {**summarize(episodes_done, ""), "sampled": float(sample), "packnet_mask": index if maps else None}
    finally:
        trainer.close()


def after_task(seq: dict, job: Job, index: int):
    """PackNet's pruning (once), then the forgetting rows of task `index` that forgetting.jsonl lacks."""
    base = job.run_dir.parent
    if uses_packnet(job.run_dir):
        stats = prune(job.run_dir, index)
        if stats:
            say(f"  pruned for task {index}: kept {stats['packnet/kept']:.2f} of its weights, "
                f"{stats['packnet/free']:.2f} of the actor's matrices free")
    path = base / "forgetting.jsonl"
    step = final_step(job.run_dir)
    done = {(r.get("trained_through"), r.get("task_index"), r.get("step")) for r in read_jsonl(path)}
    frames = sum(final_step(base / f"{i}-{t}") for i, t in enumerate(seq["tasks"][:index + 1]))
    for j, task in enumerate(seq["tasks"][:index + 1]):
        if (index, j, step) in done:
            continue
        result = evaluate(job.run_dir, task, j, seq["eval_episodes"])
        row = {"variant": job.label, "seed": job.seed, "trained_through": index, "trained_task": job.task,
               "task_index": j, "task": task, "step": step, "frames": frames, **result}
        with open(path, "a") as f:
            if path.stat().st_size and not path.read_bytes().endswith(b"\n"):
                f.write("\n")  # after a line cut by a kill
            f.write(json.dumps(row) + "\n")
        say(f"  {job.label} seed{job.seed} after {index}-{job.task}: return {result['return']:.1f} on {j}-{task}")


def main(argv=None) -> int:
    argv, extra = split_overrides(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m transfer.continual", description=__doc__.split("\n\n")[0],
                                     epilog="Everything after -- is passed to every run as Hydra overrides.")
    parser.add_argument("sequence", help="sequence file (see configs/continual/)")
    parser.add_argument("--variants", nargs="+", help="run only these variants of the file")
    parser.add_argument("--seeds", type=int, help="seeds 0..N-1 (replaces the file's seeds:)")
    parser.add_argument("--root", default="runs/continual", help="runs go to ROOT/NAME/VARIANT/seedK/<i>-<task>")
    parser.add_argument("--set", dest="set_vars", action="append", default=[], metavar="NAME=VALUE",
                        help="set a variable of the file (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="print the planned commands and run nothing")
    args = parser.parse_args(argv)
    try:
        seq = load_sequence(args.sequence, args.set_vars, extra, args.variants, args.seeds)
        jobs = plan(seq, args.root)
        check_runs(seq, jobs)
    except (OSError, ValueError, yaml.YAMLError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    base = pathlib.Path(args.root) / seq["name"]
    done = [finished(job.run_dir, job.steps) for job in jobs]
    say(f"continual {seq['name']}: {len(seq['variants'])} variants x {len(seq['tasks'])} tasks x {seq['seeds']} "
        f"seeds, {len(jobs)} runs ({sum(done)} done, {len(jobs) - sum(done)} missing) in {base}")
    if args.dry_run:
        for k, (job, is_done) in enumerate(zip(jobs, done)):
            say(f"[{k + 1}/{len(jobs)}] {'done   ' if is_done else 'missing'} {job.label} seed{job.seed} "
                f"{job.run_dir.name}: {shlex.join(job.command)}")
        return 0
    start, stopped = time.time(), {}
    for k, job in enumerate(jobs):
        chain, index = (job.label, job.seed), int(job.run_dir.name.split("-", 1)[0])
        if chain in stopped:
            say(f"[{k + 1}/{len(jobs)}] {job.name}: not run ({stopped[chain]})")
            continue
        if execute(job, k + 1, len(jobs), with_diagnose=False)["status"] == "failed":
            stopped[chain] = f"task {index} failed; see {job.log}"
            continue
        try:
            after_task(seq, job, index)
        except Exception as err:  # noqa: BLE001 (a failed pruning or evaluation stops this sequence only)
            say(f"  {job.name}: the step after the task FAILED: {err!r}")
            stopped[chain] = f"the step after task {index} failed"
    say(f"continual {seq['name']}: {len(stopped)} of {len(jobs) // len(seq['tasks'])} sequences stopped, "
        f"{minutes(time.time() - start)}" + "".join(f"\n  stopped: {v} seed{s}: {why}"
                                                    for (v, s), why in stopped.items()))
    from transfer.report.continual import write_report
    try:
        say(f"report: {write_report(base, base / 'report')}")
    except FileNotFoundError as err:
        say(f"no report: {err}")
    return 1 if stopped else 0


if __name__ == "__main__":
    sys.exit(main())
