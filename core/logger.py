"""Metrics to every sink at once: JSONL (always), TensorBoard (always), wandb (offline by default),
plus a live progress bar with steps/s, ETA and the latest return; videos (logger.video: an mp4 file,
also to TensorBoard and wandb, core/video.py); `curves` / `plot` read a run's metrics.jsonl back
(transfer.report.plot, teacher.pretrain draw with them)."""
from __future__ import annotations

import json
import os
import pathlib
import sys
import time
import uuid

from tqdm import tqdm

from core.video import save as save_video


class Logger:
    def __init__(self, run_dir, cfg, config_dict: dict, total: int, start: int, wandb_id: str | None):
        self.dir = pathlib.Path(run_dir)
        self.jsonl = open(self.dir / "metrics.jsonl", "a")
        self.tb = None
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(self.dir / "tensorboard"))
        self.wandb = None
        self.wandb_id = wandb_id
        if cfg.wandb != "disabled":
            self._init_wandb(cfg, config_dict)
        interactive = sys.stderr.isatty()
        self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, smoothing=0.05,
                        disable=not cfg.progress, mininterval=0.5 if interactive else 30)
        self.last_return = None
        self.video_on = bool(cfg.get("video", False))  # callers keep no frames when false (configs before it: off)

    def _init_wandb(self, cfg, config_dict):
        if cfg.wandb not in ("offline", "online"):
            raise ValueError(f"logger.wandb={cfg.wandb!r}: use offline, online or disabled")
        import wandb
        os.environ.setdefault("WANDB_SILENT", "true")
        self.wandb_id = self.wandb_id or uuid.uuid4().hex[:12]
        self.wandb = wandb.init(project=cfg.project, entity=cfg.entity, mode=cfg.wandb, dir=str(self.dir),
                                id=self.wandb_id, resume="allow", config=config_dict,
                                name=self.dir.name, settings=wandb.Settings(console="off"))

    def write(self, step: int, metrics: dict):
        """metrics: flat {name: float}; names like 'train/loss' group in TensorBoard and wandb."""
        metrics = {k: float(v) for k, v in metrics.items()}
        row = {"step": int(step), "time": time.time(), **metrics}
        self.jsonl.write(json.dumps(row) + "\n")
        self.jsonl.flush()
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)

    def video(self, tag: str, path, frames, step: int) -> pathlib.Path:
        """frames uint8 (L, h, w, 3) -> an mp4 at path, and the same clip to TensorBoard (a GIF) and wandb
        under `tag` (core/video.py). Callers check self.video_on first."""
        return save_video(path, frames, step, tag, self.tb, self.wandb)

    def progress(self, step: int, latest_return: float | None = None):
        if latest_return is not None:
            self.last_return = latest_return
            self.bar.set_postfix({"return": f"{latest_return:.1f}"}, refresh=False)
        self.bar.update(step - self.bar.n)

    def close(self):
        self.bar.close()
        self.jsonl.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def mean_metrics(rows: list[dict]) -> dict[str, float]:
    """Per-key mean of metric rows {name: 0-dim tensor} (all rows with the same keys), read back with one
    host sync: updates keep their metrics on the device and a log interval averages them here."""
    import torch
    keys = list(rows[0])
    return dict(zip(keys, torch.stack([torch.stack([r[k] for k in keys]) for r in rows]).mean(0).tolist()))


# ---- reading a run's metrics.jsonl back ----------------------------------------------------------
RESUMED = "run/resumed"   # the row a resumed run writes at its checkpoint's step before it trains on (transfer/loop.py)


def without_redone(rows: list[dict]) -> list[dict]:
    """Metrics rows in log order, each logged step counted once: a killed run that resumes redoes the steps after
    its last checkpoint and logs them again. The resumed run's RESUMED row (at the checkpoint's step S) drops the
    rows logged before it with step > S; logs from before that row existed drop, where the step goes back to s,
    the earlier rows with step >= s."""
    kept = []
    for row in rows:
        if RESUMED in row:
            kept = [r for r in kept if r["step"] <= row["step"]]
        elif kept and row["step"] < kept[-1]["step"]:
            kept = [r for r in kept if r["step"] < row["step"]]
        kept.append(row)
    return kept


def read_jsonl(path) -> list[dict]:
    """The JSON objects of a JSONL file, one per line; [] when there is none. A line that is not a JSON object is
    skipped (a run killed mid-write can leave a partial last line)."""
    path, rows = pathlib.Path(path), []
    for line in path.read_text(errors="replace").splitlines() if path.is_file() else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def read_rows(run_dir) -> list[dict]:
    """RUN_DIR/metrics.jsonl's rows with a step (read_jsonl), without those a resumed run redid (without_redone)."""
    return without_redone([r for r in read_jsonl(pathlib.Path(run_dir) / "metrics.jsonl") if "step" in r])


def curves(run_dir, keys) -> dict[str, list[tuple[int, float]]]:
    """{key: [(step, value), ...]} of the given keys in RUN_DIR/metrics.jsonl (read_rows), in file order."""
    out: dict[str, list[tuple[int, float]]] = {k: [] for k in keys}
    for row in read_rows(run_dir):
        for key in out:
            if key in row:
                out[key].append((row["step"], row[key]))
    return out


def plot(run_dir, keys: dict, name: str, xlabel: str, ylabel: str, log_y: bool = False) -> pathlib.Path:
    """RUN_DIR/name: one line per key ({key: matplotlib line options}) against the logged step."""
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
