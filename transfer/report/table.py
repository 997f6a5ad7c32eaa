"""Compare methods over seeds: `python -m transfer.report RUN_DIR [RUN_DIR ...] [--out DIR]
[--published gsa] [--metric auto|return|success]`.

Each RUN_DIR is a run directory (metrics.jsonl next to hydra/config.yaml, as transfer.run writes it),
a folder searched recursively for such runs, or a compact run archive (*.jsonl.gz, transfer/report/runs.py,
written by --archive FILE: one file in place of the run directories, e.g. for results kept in git). Runs are grouped by (method.name, env.suite, task)
from their composed config; their seeds are the repeats. Writes to DIR (default runs/report):

- report.csv / report.md: per method and task the number of seeds, the mean final score and a 95%
  percentile-bootstrap confidence interval of that mean over seeds ("n=1" for a single seed), the
  markdown table also printed; with --published gsa the GSA paper's numbers for the task beside ours;
- curves_<suite>-<task>.png: eval score against env steps, the mean over seeds per method with a
  min-max band over seeds (runs evaluated at different steps are interpolated onto the union of
  their steps, each only within its own range);
- for runs that log distillation weights (vid2act, hybrid): weights.csv, a weights table in report.md
  and weights_<suite>-<task>.png (transfer/report/domain_weights.py);
- for runs with a diagnostics.json (`python -m transfer.diagnose`): diagnostics.csv and a
  "Diagnostics (per run)" table in report.md (transfer/report/diagnostics_table.py);
- aggregates across the tasks of each suite (transfer/report/aggregate.py, rliable; --no-aggregate skips them):
  aggregate.md / aggregate.csv and an "Aggregates across tasks" section in report.md with IQM, mean, median and
  optimality gap of normalised scores with 95% stratified-bootstrap CIs (--aggregate-reps resamples), the
  probability of improvement over --baseline (default dreamer), with --published gsa the paper's aggregates
  beside them, and aggregate_metrics_<suite>.png, performance_profile_<suite>.png, prob_improvement_<suite>.png.

Score: "final/return" (--metric return) or "final/success_final" (--metric success: success at the
final step, Meta-World's score), written once at the end of a run; --metric auto (default) takes
success for Meta-World and return elsewhere. A run without a final row is unfinished: its last
eval/* value stands in, and the notes under the table name it.
"""
from __future__ import annotations

import argparse
import csv
import math
import pathlib
import sys

import numpy as np

from transfer.report import aggregate as agg
from transfer.report.basics import markdown, ordered_columns, resolve_metric
from transfer.report import diagnostics_table as diag
from transfer.report import published as pub
from transfer.report.runs import KEYS, Run, align, find_runs, write_archive
from transfer.report import domain_weights as weights

LABELS = {"return": "eval return", "success": "eval success at the final step"}
CONFIDENCE = 0.95
BOOTSTRAP_SEED = 0


def group_runs(runs: list[Run]) -> dict[tuple[str, str, str], list[Run]]:
    """(method, suite, task) -> its runs sorted by seed; groups sorted by suite, task, method."""
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.method, run.suite, run.task), []).append(run)
    return {k: sorted(groups[k], key=lambda r: (r.seed, r.name))
            for k in sorted(groups, key=lambda k: (k[1], k[2], k[0]))}


def bootstrap_ci(values, confidence: float = CONFIDENCE, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean over seeds (needs 2+ values)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        raise ValueError("a confidence interval needs at least two seeds")
    if np.ptp(values) == 0:  # every resample has the same mean; scipy would warn about a degenerate CI
        return float(values[0]), float(values[0])
    from scipy.stats import bootstrap
    result = bootstrap((values,), np.mean, confidence_level=confidence, method="percentile",
                       random_state=seed)
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def summarize(groups, metric: str = "auto", published: str | None = None) -> tuple[list[dict], list[str], list[str]]:
    """(rows, published column names, notes): one row per (method, suite, task) group."""
    rows, notes, paper_cols = [], [], []
    if published:
        used = {suite for _, suite, _ in groups}
        paper_cols = ordered_columns(dict.fromkeys(c for s in sorted(used) for c in pub.columns(published, s)))
    for (method, suite, task), runs in groups.items():
        name = resolve_metric(metric, suite)
        scored = [(run, *run.score(name)) for run in runs]
        values = [v for _, v, _, _ in scored if v is not None]
        unfinished = [(run, step) for run, v, step, done in scored if v is not None and not done]
        for run, v, _, _ in scored:
            if v is None:
                notes.append(f"{run.name}: no {KEYS[name][0]} or {KEYS[name][1]} logged yet; left out")
        for run, step in unfinished:
            notes.append(f"{run.name}: unfinished (no {KEYS[name][0]}); its last {KEYS[name][1]} "
                         f"at step {step} stands in")
        seeds = [run.seed for run, v, _, _ in scored if v is not None]
        if len(set(seeds)) < len(seeds):
            notes.append(f"{method} {suite}-{task}: the same seed appears in more than one run ({seeds})")
        steps = [step for _, v, step, _ in scored if v is not None]
        row = dict(method=method, suite=suite, task=task, metric=name, seeds=len(values),
                   mean=float(np.mean(values)) if values else math.nan, ci_low=math.nan, ci_high=math.nan,
                   values=";".join(f"{v:.6g}" for v in values), seed_ids=";".join(map(str, seeds)),
                   steps=(f"{min(steps)}" if len(set(steps)) == 1 else f"{min(steps)}-{max(steps)}") if steps else "",
                   unfinished=len(unfinished))
        if len(values) >= 2:
            row["ci_low"], row["ci_high"] = bootstrap_ci(values)
        if published:
            paper_row, paper_metric, numbers = pub.lookup(published, suite, task)
            if paper_row is not None and paper_metric != name:
                notes.append(f"{suite}-{task}: the paper reports {paper_metric}, this table {name}; "
                             f"paper numbers left out (use --metric {paper_metric})")
                numbers = {}
            row.update({f"paper {c}": numbers.get(c) for c in paper_cols})
        rows.append(row)
    return rows, [f"paper {c}" for c in paper_cols], notes


def fmt(value, metric: str) -> str:
    """A number as the tables show it; None / NaN as '-'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.2f}" if metric == "success" else f"{value:.1f}"


def table_lines(rows: list[dict], paper_cols: list[str]) -> list[str]:
    """An aligned markdown table: method, suite, task, metric, seeds, mean, 95% CI, steps, paper columns."""
    head = ["method", "suite", "task", "metric", "seeds", "mean", "95% CI", "steps"] + paper_cols
    body = []
    for r in rows:
        m = r["metric"]
        if r["seeds"] >= 2:
            ci = f"[{fmt(r['ci_low'], m)}, {fmt(r['ci_high'], m)}]"
        else:
            ci = "n=1" if r["seeds"] == 1 else "-"
        seeds = f"{r['seeds']}" + (f" ({r['unfinished']} unfinished)" if r["unfinished"] else "")
        body.append([r["method"], r["suite"], r["task"], m, seeds, fmt(r["mean"], m), ci, r["steps"] or "-"]
                    + [fmt(r[c], m) for c in paper_cols])
    return markdown(head, body)


def write_csv(rows: list[dict], paper_cols: list[str], path: pathlib.Path) -> pathlib.Path:
    cols = ["method", "suite", "task", "metric", "seeds", "mean", "ci_low", "ci_high", "values", "seed_ids",
            "steps", "unfinished"] + paper_cols
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: "" if r.get(k) is None or (isinstance(r.get(k), float) and math.isnan(r[k]))
                             else r[k] for k in cols})
    return path


def plot_curves(groups, metric: str, out: pathlib.Path, published: str | None = None) -> list[pathlib.Path]:
    """One PNG per (suite, task): mean eval curve per method with a min-max band over seeds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tasks: dict[tuple[str, str], dict[str, list[Run]]] = {}
    for (method, suite, task), runs in groups.items():
        tasks.setdefault((suite, task), {})[method] = runs
    paths = []
    for (suite, task), methods in tasks.items():
        name = resolve_metric(metric, suite)
        fig, ax = plt.subplots(figsize=(6, 3.8))
        for i, (method, runs) in enumerate(methods.items()):
            steps, mean, lo, hi = align([run.series(KEYS[name][1]) for run in runs])
            if not len(steps):
                continue
            color = f"C{i}"
            ax.plot(steps, mean, color=color, marker="o", ms=3, label=f"{method} (n={len(runs)})")
            ax.fill_between(steps, lo, hi, color=color, alpha=0.2, lw=0)
            finals = [(v, st) for v, st, done in (run.score(name) for run in runs) if done and v is not None]
            if finals:  # the final evaluation (more episodes than the curve's): mean over finished seeds
                ax.plot([max(st for _, st in finals)], [np.mean([v for v, _ in finals])], color=color, marker="*", ms=12, ls="none")
        if published:
            row, paper_metric, numbers = pub.lookup(published, suite, task)
            for j, col in enumerate(c for c in ("GSA@150k", "DreamerV3@150k") if numbers.get(c) is not None):
                if paper_metric == name:
                    ax.axhline(numbers[col], color="k", ls=("--", ":")[j], lw=1, label=f"{published} paper: {col}")
        ax.set_xlabel("env steps (frames)")
        ax.set_ylabel(LABELS[name])
        ax.set_title(f"{suite} {task} (seed mean, min-max band; star: final eval)", fontsize=10)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        path = out / f"curves_{suite}-{task}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def report(paths, out="runs/report", published: str | None = None, metric: str = "auto",
           plots: bool = True, archive=None, aggregate: bool = True, reps: int | None = None,
           baseline: str | None = agg.BASELINE) -> dict:
    """Find, group, summarise and write everything (and, with `archive`, the runs' compact archive, see
    transfer/report/runs.py; with `aggregate`, the aggregates across tasks, `reps` bootstrap resamples, default
    agg.REPS); returns {rows, notes, table, csv, md, plots, weights, diagnostics, archive, aggregate}."""
    if published and published not in pub.PUBLISHED:
        raise KeyError(f"--published {published}: known sources are {', '.join(pub.PUBLISHED)}")
    groups = group_runs(find_runs(paths))
    if archive:
        archive = write_archive([r for runs in groups.values() for r in runs], archive)
    rows, paper_cols, notes = summarize(groups, metric, published)
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = table_lines(rows, paper_cols)
    pngs = plot_curves(groups, metric, out, published) if plots else []
    csv_path = write_csv(rows, paper_cols, out / "report.csv")
    wrows = weights.weight_rows(groups)
    if wrows:
        weights.write_csv(wrows, out / "weights.csv")
        pngs += weights.plot_weights(groups, out) if plots else []
    drows, dkeys, dnotes = diag.rows(groups)
    notes += dnotes
    if drows:
        diag.write_csv(drows, dkeys, out / "diagnostics.csv")
    aggregates = agg.aggregate(groups, out, metric, published, reps=agg.REPS if reps is None else reps,
                               baseline=baseline, plots=plots) if aggregate else None
    text = ["# Results", "",
            f"Mean final score over seeds; 95% CI: percentile bootstrap of the mean over seeds "
            f"(scipy.stats.bootstrap, random_state={BOOTSTRAP_SEED}). return = final/return, "
            f"success = final/success_final (success at the final step)."
            + (f" Paper columns: {published} (transfer/report/published.py)." if published else ""), ""]
    text += table + [""]
    text += (["Notes:", ""] + [f"- {n}" for n in notes] + [""]) if notes else []
    if aggregates and aggregates["lines"]:
        text += ["## Aggregates across tasks", "", "Also in aggregate.md and aggregate.csv "
                 "(transfer/report/aggregate.py).", ""] + aggregates["lines"] + [""]
    if wrows:
        text += ["Distillation domain weights (weights.csv): mean over seeds of each run's mean weight, over the "
                 "whole run and over its last quarter of env steps.", ""] + markdown(*weights.table(wrows)) + [""]
    if drows:
        text += ["## Diagnostics (per run)", "", "From each run's diagnostics.json (`python -m transfer.diagnose`); "
                 "'-': not recorded for that run. All values: diagnostics.csv.", ""]
        text += markdown(*diag.table(drows, dkeys)) + [""]
    text += [f"![{p.stem}]({p.name})" for p in pngs]
    md_path = out / "report.md"
    md_path.write_text("\n".join(text) + "\n")
    return dict(rows=rows, notes=notes, table=table, csv=csv_path, md=md_path, plots=pngs, weights=wrows,
                diagnostics=drows, archive=archive, aggregate=aggregates)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m transfer.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories or folders holding runs")
    parser.add_argument("--out", default="runs/report", help="where report.csv, report.md and curves go")
    parser.add_argument("--published", choices=sorted(pub.PUBLISHED), help="print a paper's numbers beside ours")
    parser.add_argument("--metric", choices=["auto", "return", "success"], default="auto",
                        help="final score: return, success (at the final step), or auto (success on Meta-World)")
    parser.add_argument("--no-plots", action="store_true", help="skip the learning-curve PNGs")
    parser.add_argument("--archive", metavar="FILE.jsonl.gz",
                        help="also write the runs' compact archive (metrics, method config, diagnostics), "
                             "which this command reads back in place of the run directories")
    parser.add_argument("--no-aggregate", action="store_true", help="skip the aggregates across tasks (rliable)")
    parser.add_argument("--aggregate-reps", type=int, default=agg.REPS, metavar="N",
                        help=f"bootstrap resamples for the aggregates' CIs (default {agg.REPS})")
    parser.add_argument("--baseline", default=agg.BASELINE, metavar="METHOD",
                        help="the method of P(X > baseline) (default dreamer); every pair when it was not run")
    args = parser.parse_args(argv)
    if args.aggregate_reps < 1:
        parser.error("--aggregate-reps must be positive")
    if args.archive and not args.archive.endswith(".jsonl.gz"):
        parser.error(f"--archive {args.archive}: name the archive *.jsonl.gz")
    try:
        result = report(args.run_dirs, args.out, args.published, args.metric, plots=not args.no_plots,
                        archive=args.archive, aggregate=not args.no_aggregate, reps=args.aggregate_reps,
                        baseline=args.baseline)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("\n".join(result["table"]))
    for note in result["notes"]:
        print(f"note: {note}")
    aggregates = result["aggregate"] or {}
    if aggregates.get("lines"):
        print("\n".join(line for line in aggregates["lines"] if not line.startswith("![")))
    files = [result["csv"], result["md"], *result["plots"]]
    files += [aggregates["csv"], aggregates["md"], *aggregates["plots"]] if aggregates.get("md") else []
    print("wrote " + ", ".join(map(str, files)) + (f", {result['archive']}" if result["archive"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
