"""The distillation's domain weights over seeds, for `transfer.report` (Vid2Act Fig. 9 over seeds).

Runs of method=vid2act / hybrid log `distill/weight_<source>` (the mean softmax weight of each source
over the batches since the last log row). For each (method, suite, task) group with such rows:

- `weight_rows`: per source, the mean weight over the whole run and over its last quarter of env
  steps (mean over seeds, with each seed's value), for weights.csv and the markdown report;
- `plot_weights`: weights_<suite>-<task>.png, one panel per method, one line per source (mean over
  seeds, min-max band), all seeds on the union of their logged steps.
"""
from __future__ import annotations

import csv
import pathlib

import numpy as np

from transfer.report.runs import align

PREFIX = "distill/weight_"
COLUMNS = ["method", "suite", "task", "source", "seeds", "mean", "last_quarter", "last_quarter_values"]


def sources(runs) -> list[str]:
    """Source names with a logged weight in any of the runs, sorted."""
    return sorted({k[len(PREFIX):] for run in runs for row in run.rows for k in row if k.startswith(PREFIX)})


def weight_rows(groups) -> list[dict]:
    """One row per (method, suite, task, source) with logged weights (see module doc)."""
    rows = []
    for (method, suite, task), runs in groups.items():
        for source in sources(runs):
            series = [s for s in (run.series(PREFIX + source) for run in runs) if len(s[0])]
            late = [float(v[s >= s[0] + 0.75 * (s[-1] - s[0])].mean()) for s, v in series]  # last quarter
            rows.append(dict(method=method, suite=suite, task=task, source=source, seeds=len(series),
                             mean=float(np.mean([v.mean() for _, v in series])), last_quarter=float(np.mean(late)),
                             last_quarter_values=";".join(f"{x:.3f}" for x in late)))
    return rows


def table(rows: list[dict]) -> tuple[list[str], list[list]]:
    """(header, body) of the weights table in report.md (rendered by transfer.report.table.markdown)."""
    head = ["method", "task", "source", "seeds", "mean weight", "last quarter", "per seed (last quarter)"]
    return head, [[r["method"], r["task"], r["source"], r["seeds"], f"{r['mean']:.3f}", f"{r['last_quarter']:.3f}",
                   r["last_quarter_values"]] for r in rows]


def write_csv(rows: list[dict], path: pathlib.Path) -> pathlib.Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def plot_weights(groups, out: pathlib.Path) -> list[pathlib.Path]:
    """weights_<suite>-<task>.png per task with weighted methods (see module doc)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tasks: dict[tuple[str, str], dict] = {}
    for (method, suite, task), runs in groups.items():
        if sources(runs):
            tasks.setdefault((suite, task), {})[method] = runs
    paths = []
    for (suite, task), methods in tasks.items():
        fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 3.5), squeeze=False, sharey=True)
        for ax, (method, runs) in zip(axes[0], methods.items()):
            for i, source in enumerate(sources(runs)):
                steps, mean, lo, hi = align([run.series(PREFIX + source) for run in runs])
                ax.plot(steps, mean, color=f"C{i}", lw=1.5, label=source)
                ax.fill_between(steps, lo, hi, color=f"C{i}", alpha=0.2, lw=0)
            ax.set_title(f"{method} (n={len(runs)})", fontsize=10)
            ax.set_xlabel("env steps (frames)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        axes[0][0].set_ylabel("domain weight (mean over seeds)")
        fig.suptitle(f"{suite} {task}: distillation weight per source (band: min-max over seeds)", fontsize=10)
        path = out / f"weights_{suite}-{task}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
