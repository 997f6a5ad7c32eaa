"""The report of a continual sequence (transfer.continual): `python -m transfer.report.continual ROOT/NAME [--out DIR]`.

Reads the runs ROOT/NAME/VARIANT/seedK/<i>-<task>/ and each sequence's forgetting.jsonl, and writes to DIR
(default ROOT/NAME/report):

- curves.png: eval return (final evaluations included) and training episode return against the frames of the
  whole sequence, one colour per variant (mean over seeds, eval with its min-max band; runs.align), the lines
  broken and dashed at each task boundary;
- final.csv and the "Final return per task" table of report.md: each task's run scored by its own final
  evaluation (mean over seeds; for PackNet before that task's pruning);
- forgetting.csv and the "Forgetting" tables of report.md: the mean return over seeds, on task j, of the agent
  trained through task i (j <= i; PackNet with task j's weights), one matrix per variant, the latest evaluation
  of each (i, j); and per task the return right after training it minus the return after the last task trained.
"""
from __future__ import annotations

import argparse
import csv
import json
import pathlib
import re
import sys

import numpy as np

from transfer.report.runs import align, is_run, read_run

TASK_DIR = re.compile(r"^(\d+)-(.+)$")


def read_sequences(base: pathlib.Path) -> dict:
    """{variant: {seed: {"runs": {i: (task, Run)}, "forgetting": {(i, j): row}}}} of the runs under base."""
    out: dict = {}
    for variant in sorted(p for p in base.iterdir() if p.is_dir() and p.name != "report"):
        for seed_dir in sorted(variant.glob("seed*")):
            runs = {}
            for run in seed_dir.iterdir():
                match = TASK_DIR.match(run.name)
                if match and is_run(run):
                    runs[int(match[1])] = (match[2], read_run(run))
            forgetting: dict = {}
            path = seed_dir / "forgetting.jsonl"
            for line in path.read_text(errors="replace").splitlines() if path.is_file() else []:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                key = (row["trained_through"], row["task_index"])
                if key not in forgetting or row["step"] >= forgetting[key]["step"]:
                    forgetting[key] = row  # the latest evaluation of that checkpoint
            if runs:
                out.setdefault(variant.name, {})[int(seed_dir.name[4:] or 0)] = {"runs": runs, "forgetting": forgetting}
    if not out:
        raise FileNotFoundError(f"no continual runs under {base} (expected VARIANT/seedK/<i>-<task>/ run directories)")
    return out


def tasks_of(sequences: dict) -> list[str]:
    """The sequence's tasks by index, from every run found."""
    names = {i: task for seeds in sequences.values() for chain in seeds.values()
             for i, (task, _) in chain["runs"].items()}
    return [names[i] for i in sorted(names)]


def segments(chain: dict, keys: tuple[str, ...]) -> tuple[dict, list[float]]:
    """One seed's curve of `keys` (the later key wins at a step) per task, on the frames of the whole sequence:
    ({i: (frames, values)}, where each task starts)."""
    out, starts, offset = {}, [], 0.0
    for i in sorted(chain["runs"]):
        run = chain["runs"][i][1]
        points = {}
        for key in keys:
            points.update(zip(*run.series(key)))
        starts.append(offset)
        out[i] = (offset + np.array(sorted(points), float), np.array([points[s] for s in sorted(points)], float))
        offset += max([row["step"] for row in run.rows] or [0])
    return out, starts


def plot_curves(sequences: dict, tasks: list[str], path: pathlib.Path) -> pathlib.Path:
    """Eval return (final evaluations included; markers, min-max band over seeds) and training episode return
    (thin) against the sequence's frames, a line per variant broken at each task boundary."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(tasks)), 3.8))
    boundaries: list[float] = []
    for n, (variant, seeds) in enumerate(sequences.items()):
        color = f"C{n}"
        for keys, style in ((("eval/return", "final/return"), dict(marker="o", ms=3, lw=1.5)),
                            (("train/return",), dict(lw=0.8, alpha=0.35))):
            per_seed = [segments(chain, keys) for chain in seeds.values()]
            boundaries = max([starts for _, starts in per_seed] + [boundaries], key=len)
            label = f"{variant} (n={len(seeds)})" if "marker" in style else None  # on its first segment only
            for i in range(len(tasks)):
                steps, mean, lo, hi = align([curves[i] for curves, _ in per_seed if i in curves])
                if not len(steps):
                    continue
                ax.plot(steps, mean, color=color, label=label, **style)
                if "marker" in style:
                    ax.fill_between(steps, lo, hi, color=color, alpha=0.15)
                label = None
    for x, task in zip(boundaries, tasks):
        ax.axvline(x, color="gray", ls="--", lw=0.8)
        ax.text(x, 1.0, f" {task}", transform=ax.get_xaxis_transform(), fontsize=7, va="bottom")
    ax.set_xlabel("env steps (frames) over the sequence")
    ax.set_ylabel("return (eval: markers, training: thin)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def fmt(values: list[float]) -> str:
    return f"{np.mean(values):.1f} (n={len(values)})" if values else "-"


def write_report(base, out) -> pathlib.Path:
    """Writes curves.png, final.csv, forgetting.csv and report.md into `out`; returns report.md's path."""
    base, out = pathlib.Path(base), pathlib.Path(out)
    sequences = read_sequences(base)
    tasks = tasks_of(sequences)
    out.mkdir(parents=True, exist_ok=True)
    finals = {(v, i): [chain["runs"][i][1].score("return")[0] for chain in seeds.values() if i in chain["runs"]]
              for v, seeds in sequences.items() for i in range(len(tasks))}
    finals = {k: [x for x in vals if x is not None] for k, vals in finals.items()}
    with open(out / "final.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["variant", "task_index", "task", "seeds", "final_return_mean"])
        for (v, i), vals in finals.items():
            w.writerow([v, i, tasks[i], len(vals), f"{np.mean(vals):.4g}" if vals else ""])
    matrix = {}  # (variant, i, j) -> returns over seeds
    for v, seeds in sequences.items():
        for chain in seeds.values():
            for (i, j), row in chain["forgetting"].items():
                matrix.setdefault((v, i, j), []).append(float(row["return"]))
    with open(out / "forgetting.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["variant", "trained_through", "trained_task", "task_index", "task", "seeds", "return_mean",
                    "return_min", "return_max"])
        for (v, i, j), vals in sorted(matrix.items()):
            w.writerow([v, i, tasks[i], j, tasks[j], len(vals), f"{np.mean(vals):.4g}", f"{min(vals):.4g}",
                        f"{max(vals):.4g}"])
    head = "| variant | " + " | ".join(f"{i}-{t}" for i, t in enumerate(tasks)) + " |"
    rule = "|---" * (len(tasks) + 1) + "|"
    lines = [f"# Continual: {base.name}", "", "![curves](curves.png)", "",
             "## Final return per task (each task's run, its own final evaluation)", "", head, rule]
    lines += [f"| {v} | " + " | ".join(fmt(finals[(v, i)]) for i in range(len(tasks))) + " |" for v in sequences]
    lines += ["", "## Forgetting: return on task j (columns) after training through task i (rows)", ""]
    for v in sequences:
        lines += [f"### {v}", "", head.replace("variant", "trained through"), rule]
        lines += [f"| {i}-{tasks[i]} | " + " | ".join(fmt(matrix.get((v, i, j), [])) if j <= i else ""
                                                     for j in range(len(tasks))) + " |" for i in range(len(tasks))
                  if any((v, i, j) in matrix for j in range(len(tasks)))]
        lines.append("")
    lines += ["## Forgetting per task: return right after training it minus after the last task trained", "",
              head, rule]
    for v in sequences:
        last = max([i for (u, i, _) in matrix if u == v], default=None)
        cells = []
        for j in range(len(tasks)):
            now, end = matrix.get((v, j, j)), matrix.get((v, last, j))
            cells.append(f"{np.mean(now) - np.mean(end):+.1f}" if now and end and last != j else "-")
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    plot_curves(sequences, tasks, out / "curves.png")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out / "report.md"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m transfer.report.continual", description=__doc__.split("\n\n")[0])
    p.add_argument("base", help="ROOT/NAME of a transfer.continual sequence")
    p.add_argument("--out", help="report folder (default BASE/report)")
    args = p.parse_args(argv)
    print(write_report(args.base, args.out or pathlib.Path(args.base) / "report"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
