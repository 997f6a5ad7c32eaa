"""Aggregates across tasks for `python -m transfer.report` (rliable: Agarwal et al., "Deep RL at the Edge of the
Statistical Precipice", NeurIPS 2021): IQM, mean, median and optimality gap with 95% stratified-bootstrap CIs,
performance profiles and the probability of improvement, per suite (one metric per suite, as in the table).

Scores: each run's final score (the table's: final row, else its last eval, named in the table's notes),
normalised per (suite, metric) so that tasks can be pooled (NORMALISATION, written next to every result):
success is already in [0, 1]; DMC returns are divided by 1000 (an episode of 1000 frames earns at most 1000,
the scale of the published DMC numbers); any other return is min-max normalised per task over every run of the
methods compared (0: the worst run, 1: the best; relative to this report only).

Tasks and methods: rliable wants a (runs, tasks) array per method, so the methods of a suite are compared on one
shared task set: the set that maximises methods x tasks (preferring two or more methods, then more methods); a
method lacking one of those tasks and a task not run by every kept method are left out, with a note. Per method,
each task keeps the method's fewest seeds over those tasks (its lowest seed ids; the others are named in a note):
methods may differ in runs, tasks within a method may not. One task is allowed: the aggregates are then that
task's statistics over seeds (median = mean); a method with one run per task gets no CI ("n=1").

CIs: percentile bootstrap over runs within each task (`rliable.library.get_interval_estimates` and
`create_performance_profile`, REPS resamples, seeded per method and per pair, so adding a method changes no other
CI). The probability of improvement P(X > Y) is of each method over --baseline (default dreamer), or of every pair
when the baseline was not run. `profile` and `improvement` are rliable's score distribution and
`metrics.probability_of_improvement`, vectorised (the same numbers; tests/test_aggregate.py checks).
With --published gsa, the paper's per-task means (transfer/report/published.py) give point estimates of the same
aggregates over our tasks ("IQM" of 3-seed task means, not of runs), and its own Mean/Median rows over all of
its tasks are listed as they are (normalised alike).
"""
from __future__ import annotations

import contextlib
import csv
import math
import pathlib
from dataclasses import dataclass, field

import numpy as np

from transfer.report import published as pub
from transfer.report.basics import markdown, ordered_columns, resolve_metric

REPS = 2000
SEED = 0
CONFIDENCE = 0.95
BASELINE = "dreamer"
STATS = ("IQM", "mean", "median", "optimality gap")
TAUS = np.linspace(0.0, 1.0, 101)  # performance-profile thresholds on the normalised score
SEP = "\t"  # joins "X<SEP>Y" pair names for rliable's probability-of-improvement plot
SUCCESS = "success rate, already in [0, 1]"
DMC_RETURN = "DMC return / 1000 (an episode of 1000 frames earns at most 1000)"
MIN_MAX = "min-max per task over every run of the methods compared (0: worst run, 1: best run; relative to this report)"


def normalisation(suite: str, metric: str) -> tuple[float, float, str] | None:
    """(score mapped to 0, score mapped to 1, description) of a fixed reference, None for per-task min-max."""
    if metric == "success":
        return 0.0, 1.0, SUCCESS
    if suite == "dmc" and metric == "return":
        return 0.0, 1000.0, DMC_RETURN
    return None


def rliable_library():
    """rliable.library (imported late: it loads arch, statsmodels and pandas). arch 7.2 needs pandas < 3, pinned
    in constraints.txt (arch 8 rejects the `random_state` keyword that rliable 1.2 passes to its bootstraps)."""
    import rliable.library as rly
    return rly


@contextlib.contextmanager
def seeded(seed: int):
    """rliable's bootstraps draw from numpy's global RNG: seed it, and restore its state afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


@dataclass
class Block:
    """The runs of one suite, scored with one metric, on the shared task set."""
    suite: str
    metric: str
    normalisation: str
    tasks: list[str]
    scores: dict[str, np.ndarray]  # method -> (runs, tasks) normalised final scores, runs = its fewest seeds
    refs: dict[str, tuple[float, float]]  # task -> (raw score mapped to 0, raw score mapped to 1)
    notes: list[str] = field(default_factory=list)


def shared_tasks(have: dict[str, set[str]]) -> tuple[list[str], list[str]]:
    """(methods, tasks): the task set (some method's, or all methods' common ones) that maximises methods x tasks,
    preferring 2+ methods, then more methods, then more tasks; methods keep their order, tasks are sorted."""
    candidates = {frozenset(t) for t in have.values()} | {frozenset(set.intersection(*have.values()))}
    best = min(((-min(len(ms), 2), -len(ms) * len(ts), -len(ms), -len(ts), sorted(ts), ms)  # sorted: ties fixed
                for ts in candidates if ts for ms in [[m for m in have if ts <= have[m]]]), default=None)
    return (best[5], best[4]) if best else ([], [])


def collect(groups, metric: str = "auto") -> list[Block]:
    """One Block per suite from the report's groups ((method, suite, task) -> runs sorted by seed)."""
    raw: dict[str, dict[str, dict[str, list[tuple[int, str, float]]]]] = {}  # suite -> method -> task -> runs
    unfinished: dict[str, list[str]] = {}  # suite -> names of unfinished runs
    for (method, suite, task), runs in groups.items():
        name = resolve_metric(metric, suite)
        scored = [(r.seed, r.name, *r.score(name)[::2]) for r in runs]  # (seed, name, score, finished)
        unfinished.setdefault(suite, []).extend(n for _, n, v, done in scored if v is not None and not done)
        scored = [s[:3] for s in scored if s[2] is not None]
        if scored:
            raw.setdefault(suite, {}).setdefault(method, {})[task] = scored
    blocks = []
    for suite, by_method in raw.items():
        name = resolve_metric(metric, suite)
        methods, tasks = shared_tasks({m: set(t) for m, t in by_method.items()})
        notes = [f"{m}: left out (not run on every task of {', '.join(tasks)})" for m in by_method if m not in methods]
        dropped = sorted({t for m in methods for t in by_method[m]} - set(tasks))
        if dropped:
            notes.append(f"tasks left out (not run by every method kept): {', '.join(dropped)}")
        if unfinished.get(suite):
            notes.append(f"unfinished, their last eval stands in: {', '.join(unfinished[suite])}")
        fixed = normalisation(suite, name)
        refs = {}
        for t in tasks:
            if fixed:
                refs[t] = fixed[:2]
            else:
                values = [v for m in methods for _, _, v in by_method[m][t]]
                refs[t] = (min(values), max(values))
                if refs[t][0] == refs[t][1]:
                    notes.append(f"{t}: every run scored {refs[t][0]:g}; normalised to 0.5")
        scores = {}
        for m in methods:
            n = min(len(by_method[m][t]) for t in tasks)  # the method's fewest runs on a task
            extra = [name_ for t in tasks for _, name_, _ in by_method[m][t][n:]]
            if extra:
                notes.append(f"{m}: {n} run(s) per task (its fewest); left out: {', '.join(extra)}")
            table = np.array([[v for _, _, v in by_method[m][t][:n]] for t in tasks]).T  # (runs n, tasks)
            scores[m] = normalise(table, [refs[t] for t in tasks])
        blocks.append(Block(suite, name, fixed[2] if fixed else MIN_MAX, tasks, scores, refs, notes))
    return blocks


def normalise(values: np.ndarray, refs: list[tuple[float, float]]) -> np.ndarray:
    """(..., tasks) raw scores -> normalised, task j by refs[j] = (low, high); low == high gives 0.5."""
    low, high = np.array(refs, dtype=float).T  # (tasks,), (tasks,)
    span = np.where(high > low, high - low, 1.0)
    return np.where(high > low, (np.asarray(values, dtype=float) - low) / span, 0.5)


def aggregates(scores: np.ndarray) -> np.ndarray:
    """(runs, tasks) normalised scores -> (4,): IQM, mean, median, optimality gap (gamma = 1)."""
    from rliable import metrics
    return np.array([metrics.aggregate_iqm(scores), metrics.aggregate_mean(scores),
                     metrics.aggregate_median(scores), metrics.aggregate_optimality_gap(scores)])


def profile(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """(runs, tasks), (taus,) -> (taus,): the fraction of run x task scores above each tau; rliable's default
    score distribution (library.score_distributions), vectorised (30x faster)."""
    return (scores.reshape(-1)[:, None] > taus[None]).mean(0)


def improvement(x: np.ndarray, y: np.ndarray) -> float:
    """(runs x, tasks), (runs y, tasks) -> P(X > Y): per task the share of (run of X, run of Y) pairs that X wins,
    ties counting half, averaged over tasks; equals rliable.metrics.probability_of_improvement (Mann-Whitney
    U / (runs x * runs y); 0.5 for equal arrays), vectorised (scipy's U test costs ~0.6 ms per task and resample)."""
    diff = x[:, None, :] - y[None, :, :]  # (runs x, runs y, tasks)
    return float(((diff > 0) + 0.5 * (diff == 0)).mean((0, 1)).mean())


def pairs(methods: list[str], baseline: str | None) -> list[tuple[str, str]]:
    """(X, Y) pairs for P(X > Y): each method over the baseline, or every pair in method order without it."""
    if baseline in methods:
        return [(m, baseline) for m in methods if m != baseline]
    return [(x, y) for i, x in enumerate(methods) for y in methods[i + 1:]]


def estimate(block: Block, reps: int = REPS, seed: int = SEED, baseline: str | None = BASELINE) -> dict:
    """{"points": method -> (4,), "cis": method -> (2, 4) [low; high] (NaN for one run per task),
    "profiles": method -> (len(TAUS),), "profile_cis": method -> (2, len(TAUS)),
    "improvement": (X, Y) -> (P(X > Y), low, high)}."""
    rly = rliable_library()
    out = dict(points={}, cis={}, profiles={}, profile_cis={}, improvement={})
    for m, s in block.scores.items():
        with seeded(seed):
            point, ci = rly.get_interval_estimates({m: s}, aggregates, reps=reps,
                                                   confidence_interval_size=CONFIDENCE)
        with seeded(seed):
            curve, curve_ci = rly.create_performance_profile({m: s}, TAUS, custom_profile_func=profile, reps=reps,
                                                             confidence_interval_size=CONFIDENCE)
        out["points"][m] = point[m]
        out["cis"][m] = ci[m] if len(s) > 1 else np.full((2, len(STATS)), np.nan)
        out["profiles"][m], out["profile_cis"][m] = curve[m], curve_ci[m]
    for x, y in pairs(list(block.scores), baseline):
        sx, sy = block.scores[x], block.scores[y]
        with seeded(seed):
            point, ci = rly.get_interval_estimates({"p": [sx, sy]}, improvement, reps=reps,
                                                   confidence_interval_size=CONFIDENCE)
        low, high = (ci["p"][0], ci["p"][1]) if len(sx) > 1 or len(sy) > 1 else (math.nan, math.nan)
        out["improvement"][x, y] = (float(point["p"]), float(low), float(high))
    return out


def published(block: Block, source: str) -> tuple[list[dict], list[str]]:
    """(rows, notes): the paper's columns as point estimates over our tasks (from its per-task means), and its
    own aggregate rows over all of its tasks; rows are {label, source, tasks, values: {stat: value}}."""
    rows, notes = [], []
    entry = pub.PUBLISHED[source].get(block.suite)
    if entry is None:
        return rows, notes
    if entry[0] != block.metric:
        return rows, [f"the {source} paper reports {entry[0]} on {block.suite}, these aggregates {block.metric}; "
                      f"paper aggregates left out"]
    for col in ordered_columns(pub.columns(source, block.suite)):
        found = [(t, pub.lookup(source, block.suite, t)[2].get(col)) for t in block.tasks]
        found = [(t, v) for t, v in found if v is not None]
        if not found:
            continue
        means = normalise([v for _, v in found], [block.refs[t] for t, _ in found])[None]  # (1, tasks with a value)
        label = f"{col} ({source} paper)"
        rows.append(dict(label=label, source=f"published, point estimate over our tasks ({len(found)} of "
                         f"{len(block.tasks)}; IQM of task means)", tasks=len(found),
                         values=dict(zip(STATS, aggregates(means)))))
    fixed = normalisation(block.suite, block.metric)
    paper = pub.AGGREGATES if source == "gsa" else {}  # the GSA paper's Mean / Median rows
    if fixed and block.suite in paper:
        n = len(entry[2])
        for col in ordered_columns(entry[1]):
            i = entry[1].index(col)
            values = {stat: float(normalise([paper[block.suite][key][i]], [fixed[:2]])[0])
                      for stat, key in (("mean", "mean"), ("median", "median"))}
            rows.append(dict(label=f"{col} ({source} paper, all {n} tasks)", source="published, the paper's own "
                             "aggregate row", tasks=n, values=values))
    return rows, notes


def fmt(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def plot(block: Block, result: dict, paper: list[dict], out: pathlib.Path) -> list[pathlib.Path]:
    """aggregate_metrics_<suite>.png (paper rows over our tasks as points), performance_profile_<suite>.png and,
    with 2+ methods, prob_improvement_<suite>.png."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import plot_utils
    what = f"{block.suite}, {block.metric}, {len(block.tasks)} task(s)"
    points = {m: p for m, p in result["points"].items()}
    cis = {m: np.where(np.isnan(c), points[m], c) for m, c in result["cis"].items()}  # n=1: a bare point
    for row in paper:
        if len(row["values"]) == len(STATS):
            points[row["label"]] = np.array([row["values"][s] for s in STATS])
            cis[row["label"]] = np.stack([points[row["label"]]] * 2)
    names = list(points)
    fig, axes = plot_utils.plot_interval_estimates(points, cis, metric_names=STATS, algorithms=names,
                                                   xlabel="normalised score", wspace=0.3,
                                                   xlabel_y_coordinate=-0.3 if len(names) < 4 else -0.1)
    for i, ax in enumerate(np.atleast_1d(axes)):  # published point estimates as diamonds
        marks = [(points[n][i], names.index(n)) for n in names if n not in result["points"]]
        if marks:
            ax.plot(*zip(*marks), "kD", ms=5, clip_on=False)
    fig.suptitle(f"{what} (95% stratified-bootstrap CIs)", y=1.12, fontsize=12)
    paths = [out / f"aggregate_metrics_{block.suite}.png"]
    fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    plot_utils.plot_performance_profiles(result["profiles"], TAUS, performance_profile_cis=result["profile_cis"],
                                         ax=ax, xlabel=r"normalised score ($\tau$)",
                                         ylabel=r"fraction of runs with score $> \tau$")
    ax.legend(fontsize=9)
    ax.set_title(what, fontsize=11)
    paths.append(out / f"performance_profile_{block.suite}.png")
    fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
    plt.close(fig)
    if result["improvement"]:
        probs = {f"{x}{SEP}{y}": p for (x, y), (p, _, _) in result["improvement"].items()}
        bounds = {f"{x}{SEP}{y}": np.array([p if math.isnan(lo) else lo, p if math.isnan(hi) else hi])
                  for (x, y), (p, lo, hi) in result["improvement"].items()}
        fig, ax = plt.subplots(figsize=(5, 1.2 + 0.5 * len(probs)))
        plot_utils.plot_probability_of_improvement(probs, bounds, pair_separator=SEP, ax=ax, xticks=[0, 0.25, 0.5,
                                                                                                     0.75, 1])
        ax.set_xlim(0, 1)
        ax.set_title(what, fontsize=11)
        paths.append(out / f"prob_improvement_{block.suite}.png")
        fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
        plt.close(fig)
    return paths


def section(block: Block, result: dict, paper: list[dict], reps: int, seed: int) -> list[str]:
    """The markdown of one block: what was pooled, the aggregate table, P(X > Y) and notes."""
    runs = ", ".join(f"{m} {len(s)}" for m, s in block.scores.items())
    lines = [f"### {block.suite} ({block.metric}): {len(block.tasks)} task(s)", "",
             f"Tasks: {', '.join(block.tasks)}. Runs per task: {runs}. Normalised score: {block.normalisation}.",
             f"Point estimate and 95% CI (rliable stratified bootstrap over runs within each task, {reps} resamples, "
             f"seed {seed}). IQM: mean of the middle 50% of all run x task scores; mean, median: of the per-task "
             f"means; optimality gap: mean shortfall below 1 (lower is better)."
             + (" One task: these are its statistics over seeds (median = mean)." if len(block.tasks) == 1 else ""),
             ""]
    body = []
    for m, p in result["points"].items():
        c = result["cis"][m]
        body.append([m, "ours", len(block.tasks), len(block.scores[m])]
                    + [fmt(p[i]) + ("" if math.isnan(c[0, i]) else f" [{fmt(c[0, i])}, {fmt(c[1, i])}]")
                       + (" (n=1)" if math.isnan(c[0, i]) else "") for i in range(len(STATS))])
    body += [[r["label"], r["source"], r["tasks"], "-"] + [fmt(r["values"].get(s)) for s in STATS] for r in paper]
    lines += markdown(["method", "source", "tasks", "runs/task", *STATS], body) + [""]
    if result["improvement"]:
        lines += ["Probability of improvement P(X > Y): the chance that a run of X beats a run of Y on a task "
                  "(Mann-Whitney U / (runs X x runs Y), ties count half), averaged over tasks; 95% CI as above.", ""]
        lines += markdown(["X", "Y", "P(X > Y)", "95% CI"],
                          [[x, y, fmt(p), "n=1" if math.isnan(lo) else f"[{fmt(lo)}, {fmt(hi)}]"]
                           for (x, y), (p, lo, hi) in result["improvement"].items()]) + [""]
    notes = block.notes + result.get("notes", [])
    lines += (["Notes:", ""] + [f"- {n}" for n in notes] + [""]) if notes else []
    return lines


def csv_rows(block: Block, result: dict, paper: list[dict]) -> list[dict]:
    """Long format: one row per (method or pair, statistic)."""
    base = dict(suite=block.suite, metric=block.metric, normalisation=block.normalisation)
    rows = []
    for m, p in result["points"].items():
        for i, stat in enumerate(STATS):
            rows.append(dict(base, statistic=stat, method=m, versus="", source="ours", tasks=len(block.tasks),
                             runs=len(block.scores[m]), value=p[i], ci_low=result["cis"][m][0, i],
                             ci_high=result["cis"][m][1, i]))
    for r in paper:
        rows += [dict(base, statistic=s, method=r["label"], versus="", source=r["source"], tasks=r["tasks"], runs="",
                      value=v, ci_low="", ci_high="") for s, v in r["values"].items()]
    for (x, y), (p, lo, hi) in result["improvement"].items():
        rows.append(dict(base, statistic="P(X > Y)", method=x, versus=y, source="ours", tasks=len(block.tasks),
                         runs=f"{len(block.scores[x])};{len(block.scores[y])}", value=p, ci_low=lo, ci_high=hi))
    return rows


COLUMNS = ["suite", "metric", "normalisation", "statistic", "method", "versus", "source", "tasks", "runs", "value",
           "ci_low", "ci_high"]


def aggregate(groups, out, metric: str = "auto", published_source: str | None = None, reps: int = REPS,
              seed: int = SEED, baseline: str | None = BASELINE, plots: bool = True) -> dict:
    """Compute, write aggregate.md / aggregate.csv (and the plots) under `out`; returns {blocks, results, rows,
    lines (the markdown sections), md, csv, plots}. No scored run: nothing is written, lines is empty."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    blocks, results, rows, lines, pngs = collect(groups, metric), [], [], [], []
    for block in blocks:
        result = estimate(block, reps, seed, baseline)
        paper, result["notes"] = published(block, published_source) if published_source else ([], [])
        results.append(result)
        rows += csv_rows(block, result, paper)
        lines += section(block, result, paper, reps, seed)
        pngs += plot(block, result, paper, out) if plots else []
    if not blocks:
        return dict(blocks=[], results=[], rows=[], lines=[], md=None, csv=None, plots=[])
    with open(out / "aggregate.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if math.isnan(r[k]) else f"{r[k]:.6g}") if isinstance(r[k], float) else r[k]
                             for k in COLUMNS})
    lines += [f"![{p.stem}]({p.name})" for p in pngs]
    (out / "aggregate.md").write_text("\n".join(["# Aggregates across tasks", "", *lines]) + "\n")
    return dict(blocks=blocks, results=results, rows=rows, lines=lines, md=out / "aggregate.md",
                csv=out / "aggregate.csv", plots=pngs)
