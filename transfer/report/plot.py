"""Curves from a run's metrics.jsonl: `python -m transfer.report.plot RUN_DIR` writes RUN_DIR/returns.png
(train episode returns, eval and final returns against env steps) and, for runs with distillation,
RUN_DIR/weights.png (the domain weights against env steps). The drawing is core.logger.plot's."""
from __future__ import annotations

import pathlib
import sys

from core.logger import plot, read_rows

RETURNS = {"train/return": dict(alpha=0.5, lw=1), "eval/return": dict(marker="o"),
           "final/return": dict(marker="*", ms=12)}


def plot_returns(run_dir) -> pathlib.Path:
    return plot(run_dir, RETURNS, "returns.png", "env steps (frames)", "episode return")


def plot_weights(run_dir) -> pathlib.Path | None:
    """RUN_DIR/weights.png: the distillation's per-source domain weights over time (Vid2Act Fig. 9);
    None when the run logged none."""
    keys: dict = {}
    for row in read_rows(run_dir):
        keys.update({k: dict(lw=1.5) for k in row if k.startswith("distill/weight_")})
    if not keys:
        return None
    return plot(run_dir, dict(sorted(keys.items())), "weights.png", "env steps (frames)",
                "domain weight (mean over the batch)")


if __name__ == "__main__":
    run = sys.argv[1] if len(sys.argv) > 1 else "."
    print(plot_returns(run), plot_weights(run) or "")
