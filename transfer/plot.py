"""Curves from a run's metrics.jsonl: `python -m transfer.plot RUN_DIR` writes RUN_DIR/returns.png
(train episode returns, eval and final returns against env steps) and, for runs with distillation,
RUN_DIR/weights.png (the domain weights against env steps); `plot_losses` writes a
pretraining run's RUN_DIR/losses.png (train and held-out losses against updates)."""
from __future__ import annotations

import json
import pathlib
import sys

RETURNS = {"train/return": dict(alpha=0.5, lw=1), "eval/return": dict(marker="o"),
           "final/return": dict(marker="*", ms=12)}
LOSSES = {"train/loss": dict(lw=1), "heldout/loss": dict(marker="o"), "heldout/rec_image": dict(marker="."),
          "heldout/kl": dict(marker="x")}


def curves(run_dir, keys=RETURNS) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {k: [] for k in keys}
    for line in (pathlib.Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        for key in out:
            if key in row:
                out[key].append((row["step"], row[key]))
    return out


def plot(run_dir, keys=RETURNS, name="returns.png", xlabel="env steps (frames)", ylabel="episode return",
         log_y=False) -> pathlib.Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, points in curves(run_dir, keys).items():
        if points:
            ax.plot(*zip(*points), label=key, **keys[key])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    ax.set_title(pathlib.Path(run_dir).name)
    ax.grid(alpha=0.3)
    ax.legend()
    path = pathlib.Path(run_dir) / name
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_weights(run_dir) -> pathlib.Path | None:
    """RUN_DIR/weights.png: the distillation's per-source domain weights over time (Vid2Act Fig. 9);
    None when the run logged none."""
    keys: dict = {}
    for line in (pathlib.Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        keys.update({k: dict(lw=1.5) for k in json.loads(line) if k.startswith("distill/weight_")})
    if not keys:
        return None
    return plot(run_dir, dict(sorted(keys.items())), "weights.png", ylabel="domain weight (mean over the batch)")


def plot_losses(run_dir) -> pathlib.Path:
    return plot(run_dir, LOSSES, "losses.png", "updates", "loss (sum over pixels + KL)", log_y=True)


if __name__ == "__main__":
    run = sys.argv[1] if len(sys.argv) > 1 else "."
    print(plot(run), plot_weights(run) or "")
