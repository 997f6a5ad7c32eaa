"""Per-run diagnostics for `transfer.report`: the table of each run's RUN_DIR/diagnostics.json.

`python -m transfer.diagnose RUN_DIR` writes diagnostics.json, a flat JSON object of scalars (numbers,
strings, booleans) or null. The report lists one row per run that has one: its method label, suite,
task and seed, then the union of the keys of all runs, known keys first in the order of KNOWN, others
sorted by name after them. A key a run lacks (or null) shows as '-'; numbers get 3 significant digits in
report.md, full precision in diagnostics.csv. Keys in CSV_ONLY (long paths) are left out of report.md.
A diagnostics.json that is not a JSON object is skipped with a note.
"""
from __future__ import annotations

import csv
import json
import math
import pathlib

FILE = "diagnostics.json"
KNOWN = [
    # retrieval purity (runs that retrieved trajectories from an offline dataset)
    "retrieval_trajectories", "retrieval_target_share", "retrieval_embodiment_share", "dataset_target_trajectories",
    # the guidance prior acting alone (bc: GSA's BC prior, vae: the hybrid's action-replay decoder)
    "prior_kind", "prior_alone_success", "prior_alone_success_any", "prior_alone_return", "prior_alone_episodes",
    # the same prior acting alone before the run started (trainer.prior_eval_episodes: the run's first prior/* row)
    "prior_start_success", "prior_start_return",
    # execution guidance: guided fraction of acting steps
    "guided_fraction_first", "guided_fraction_last", "guided_fraction_total",
    # training episodes, those successful at any step, and of those the ones the prior took part in
    "train_episodes", "train_successes", "train_successes_guided",
    # the reward head on the target's successful offline episodes
    "reward_fit_episodes", "reward_fit_r2", "reward_fit_corr", "reward_fit_pred_return", "reward_fit_real_return",
    # the learned actor's deterministic actions on the same expert states: MSE, sign agreement, mean actions
    "policy_expert_mse", "policy_expert_sign", "policy_action_mean", "expert_action_mean",
    # the return the world model imagines for the actor from the target's first frames, its real final return, and
    # whether both act with sampled actions (1) or the actor's mean (0), as the run's last final evaluation did
    "policy_imagined_return", "policy_final_return", "policy_final_sampled",
    # the run's own last unguided training episodes: real return, and the model's on their posterior states, along
    # its open-loop prediction with their recorded actions, and imagining the actor from their first frames
    "own_episodes", "own_real_return", "own_filtered_return", "own_openloop_return", "own_imagined_return",
    # distillation domain weights: the top source over the last quarter of logs
    "weight_top", "weight_top_value",
    "dataset",
]
CSV_ONLY = {"dataset"}
HEAD = ["label", "suite", "task", "seed"]


RENAMED = {"bc_alone_success": "prior_alone_success", "bc_alone_success_any": "prior_alone_success_any",
           "bc_alone_return": "prior_alone_return", "bc_alone_episodes": "prior_alone_episodes"}  # before: BC only


def upgrade(data: dict) -> dict:
    """Diagnostics written by an older transfer.diagnose, under today's keys (bc_alone_* -> prior_alone_*
    with prior_kind "bc": the only prior it measured)."""
    if not any(k in data for k in RENAMED):
        return data
    out = {"prior_kind": "bc", **data}
    return {RENAMED.get(k, k): v for k, v in out.items()}


def read(run_dir: pathlib.Path) -> tuple[dict | None, str | None]:
    """(diagnostics, note): the run's diagnostics.json as a dict, None when absent or unreadable
    (then a note says why)."""
    path = pathlib.Path(run_dir) / FILE
    if not path.is_file():
        return None, None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return None, f"{path}: not valid JSON ({err}); left out of the diagnostics table"
    if not isinstance(data, dict):
        return None, f"{path}: not a JSON object; left out of the diagnostics table"
    return upgrade(data), None


def rows(groups) -> tuple[list[dict], list[str], list[str]]:
    """(rows, keys, notes): one row per run with diagnostics, in the report's group order and by seed;
    keys: the union of their diagnostics keys (known first, see module doc)."""
    out, notes = [], []
    for (method, suite, task), runs in groups.items():
        for run in runs:
            if run.note:
                notes.append(run.note)
            if run.diagnostics is not None:  # a dict (read_run, read_archive) or None
                out.append({"label": method, "suite": suite, "task": task, "seed": run.seed, "run": run.name,
                            "values": run.diagnostics})
    found = {k for r in out for k in r["values"]}
    keys = [k for k in KNOWN if k in found] + sorted(found - set(KNOWN))
    return out, keys, notes


def fmt(value) -> str:
    """A value as report.md shows it: '-' for missing / null / NaN, numbers with 3 significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, str):
        return value
    return json.dumps(value)  # not a scalar; shown as written


def table(diag_rows: list[dict], keys: list[str]) -> tuple[list[str], list[list]]:
    """(head, body) for report.markdown: label, task, seed, then the keys (without CSV_ONLY)."""
    shown = [k for k in keys if k not in CSV_ONLY]
    head = ["label", "task", "seed"] + shown
    body = [[r["label"], r["task"], r["seed"]] + [fmt(r["values"].get(k)) for k in shown] for r in diag_rows]
    return head, body


def write_csv(diag_rows: list[dict], keys: list[str], path: pathlib.Path) -> pathlib.Path:
    """diagnostics.csv: label, suite, task, seed, run, then every key ('' when missing or null)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEAD + ["run"] + keys)
        for r in diag_rows:
            values = [r["values"].get(k) for k in keys]
            cells = ["" if v is None else json.dumps(v) if isinstance(v, (list, dict)) else v for v in values]
            writer.writerow([r[h] for h in HEAD] + [r["run"]] + cells)
    return path
