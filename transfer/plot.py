"""Learning curves from a run's metrics.jsonl: `python -m transfer.plot RUN_DIR` writes
RUN_DIR/returns.png (train episode returns, eval and final returns against env steps)."""
from __future__ import annotations

import json
import pathlib
import sys


def curves(run_dir) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {"train/return": [], "eval/return": [], "final/return": []}
    for line in (pathlib.Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        for key in out:
            if key in row:
                out[key].append((row["step"], row[key]))
    return out


def plot(run_dir) -> pathlib.Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    styles = {"train/return": dict(alpha=0.5, lw=1), "eval/return": dict(marker="o"), "final/return": dict(marker="*", ms=12)}
    for key, points in curves(run_dir).items():
        if points:
            ax.plot(*zip(*points), label=key, **styles[key])
    ax.set_xlabel("env steps (frames)")
    ax.set_ylabel("episode return")
    ax.set_title(pathlib.Path(run_dir).name)
    ax.grid(alpha=0.3)
    ax.legend()
    path = pathlib.Path(run_dir) / "returns.png"
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


if __name__ == "__main__":
    print(plot(sys.argv[1] if len(sys.argv) > 1 else "."))
