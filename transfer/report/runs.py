"""Run records for transfer.report: read from run directories or from a compact archive.

A run directory is what `python -m transfer.run` writes: metrics.jsonl next to hydra/config.yaml (and,
after `python -m transfer.diagnose`, diagnostics.json). A run archive (`*.jsonl.gz`, written by
`python -m transfer.report ... --archive FILE`) keeps only what a report needs, one JSON line per run:

    {"method": {...the method config...}, "suite": "metaworld",
     "task": "drawer-open", "seed": 0, "rows": [...metrics.jsonl's rows (core.logger.read_rows)...],
     "diagnostics": {...} | null}

(plus "init": {...} for a run that started from another run's state: transfer.continual's later tasks, labelled
e.g. "dreamer packnet init=wm+actor")

so results kept in the repository need no Hydra dumps, checkpoints or duplicates; a report built from
the archive equals the one built from the run directories.
"""
from __future__ import annotations

import functools
import gzip
import json
import os
import pathlib
from dataclasses import dataclass, field

import numpy as np
import yaml

from core.logger import read_rows, without_redone
from transfer.report import diagnostics_table as diag

KEYS = {"return": ("final/return", "eval/return"), "success": ("final/success_final", "eval/success_final")}
ARCHIVE_SUFFIX = ".jsonl.gz"


@dataclass
class Run:
    """One run: its identity (method label from the method config, suite, task, seed), its metric rows
    and its diagnostics; `name` (method/suite-task/seedK) names it in notes, tables and archives."""
    path: pathlib.Path
    method: str
    suite: str
    task: str
    seed: int
    rows: list[dict] = field(repr=False)
    method_config: dict = field(default_factory=dict, repr=False)
    diagnostics: dict | None = field(default=None, repr=False)
    note: str | None = None  # why an existing diagnostics.json was left out
    init: dict | None = field(default=None, repr=False)  # the run's init.* when it started from another run

    @property
    def name(self) -> str:
        return f"{self.method}/{self.suite}-{self.task}/seed{self.seed}"

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of `key`, sorted by step; a step logged twice (a resumed run redoes the
        steps after its last checkpoint) keeps its last value."""
        points = {row["step"]: row[key] for row in self.rows if key in row and row[key] is not None}
        steps = sorted(points)
        return np.array(steps, dtype=float), np.array([points[s] for s in steps], dtype=float)

    def score(self, metric: str) -> tuple[float | None, int | None, bool]:
        """(score, its step, finished): the final row's value, else the last eval value (unfinished)."""
        final_key, eval_key = KEYS[metric]
        for key, finished in ((final_key, True), (eval_key, False)):
            steps, values = self.series(key)
            if len(steps):
                return float(values[-1]), int(steps[-1]), finished
        return None, None, False


def read_run(run_dir: pathlib.Path) -> Run:
    """Read one run directory (metrics.jsonl + hydra/config.yaml); the rows as core.logger.read_rows gives them
    (unreadable lines skipped: a run killed mid-write can leave a partial last line; a resumed run's redone rows
    dropped)."""
    cfg = yaml.safe_load((run_dir / "hydra" / "config.yaml").read_text()) or {}
    diagnostics, note = diag.read(run_dir)
    rows = read_rows(run_dir)
    method = cfg.get("method") or {}
    init = cfg.get("init") if (cfg.get("init") or {}).get("checkpoint") else None
    return Run(run_dir, method_label(method) + init_label(init), str((cfg.get("env") or {}).get("suite", "?")),
               str(cfg.get("task", "?")), int(cfg.get("seed", 0)), rows, method, diagnostics, note, init)


# (key path in the method config, the value that marks an ablation, suffix in the method label)
CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


def _flag(on: str, off: str):
    return lambda v: on if v else off


# The switches a report label names, in label order: (key in the method config, the value a run's config
# stands for when it lacks the key (runs from before the switch existed; None: the method's default),
# value -> label, when the switch matters (method config -> bool)). A run's label names each switch whose
# label differs from that of its method's default (configs/method/<name>.yaml), so a method is a list of parts and
# switches with no special case here, and a new method or switch needs no new branch.
def _get(method: dict, path: str):
    node = method
    for key in path.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    return node


def _distilling(m: dict) -> bool:
    return _get(m, "distill.enabled") is not False


def _pessimistic(m: dict) -> bool:  # the penalty's kind and form matter where it is on
    return bool(_get(m, "pessimism.scale"))


def _vae_used(m: dict) -> bool:  # the VAE's pretraining matters where the VAE acts or feeds the actor
    guided = _get(m, "guidance") is not False and _get(m, "prior") == "vae"
    return _get(m, "action_replay.enabled") is not False and (guided or _get(m, "actor_input") is True)


SWITCHES = [("rehearsal", True, _flag("rehearsal", "no-rehearsal"), None),
            ("guidance", True, _flag("guidance", "no-guidance"), None),
            ("imagine_offline", True, _flag("offline-starts", "online-starts"), None),
            ("distill.enabled", True, _flag("distill", "no-distill"), None),
            ("distill.weights", "learned", lambda v: f"{v}-weights", None),
            ("action_replay.enabled", True, _flag("replay", "no-replay"), None),
            ("actor_input", None, _flag("actor-input", "no-actor-input"), None),
            ("prior", None, lambda v: f"{v}-prior", None),
            ("distill.alpha", 1.0, lambda v: f"alpha={float(v):g}", _distilling),
            ("distill.residual", False, _flag("residual-distiller", "plain-distiller"), _distilling),
            ("action_replay.pretrain_steps", 0, lambda v: "pretrained-vae" if v else "untrained-prior", _vae_used),
            ("packnet.enabled", False, _flag("packnet", "no-packnet"), None),
            ("pessimism.scale", 0.0, lambda v: f"pessimism={float(v):g}" if v else "no-pessimism", None),
            ("pessimism.kind", "dynamics", lambda v: f"pessimism-{v}", _pessimistic),
            ("pessimism.relative", False, _flag("relative", "absolute"), _pessimistic)]


@functools.lru_cache(maxsize=None)
def method_defaults(name: str) -> dict | None:
    """The method's default config (configs/method/<name>.yaml composed by Hydra), None for a name that
    configs/ no longer has."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf
    try:
        if GlobalHydra.instance().is_initialized():  # inside a Hydra app: its config dir is ours
            cfg = compose("config", overrides=[f"method={name}"])
        else:
            with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
                cfg = compose("config", overrides=[f"method={name}"])
    except Exception:  # noqa: BLE001 (an unknown or removed method: no defaults to compare with)
        return None
    return OmegaConf.to_container(cfg.method, resolve=True)


def method_label(method: dict) -> str:
    """method.name plus each switch of SWITCHES whose value differs from the method's default, e.g.
    "gsa no-guidance", "hybrid bc-prior", "vid2act uniform-weights", "hybrid alpha=0.1". (method=finetune
    is gsa's config with both switches off, its defaults, so it stays "finetune".)"""
    name = str(method.get("name", "?"))
    defaults = method_defaults(name) or {}
    parts = []
    for key, legacy, label, matters in SWITCHES:
        default, value = _get(defaults, key), _get(method, key)
        if default is None or (matters is not None and not matters(method)):
            continue
        value = (default if legacy is None else legacy) if value is None else value
        if label(value) != label(default):  # compared as labels: 500 and 2000 VAE updates are both "pretrained"
            parts.append(label(value))
    return " ".join([name, *dict.fromkeys(parts)])


def init_label(init: dict | None) -> str:
    """The label suffix of a run that started from another run's state (transfer.continual's tasks after the
    first): " init=" and the parts it kept, e.g. " init=wm+actor+critic+replay"; "" for a run from scratch."""
    if not init or not init.get("checkpoint"):
        return ""
    parts = list(init.get("keep") or []) + (["replay"] if init.get("replay") else [])
    return " init=" + ("+".join(parts) or "none")


def align(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, min, max) over runs on the union of their eval steps; each run is linearly
    interpolated between its own evaluations and absent outside them (no extrapolation)."""
    curves = [(s, v) for s, v in curves if len(s)]
    if not curves:
        return (np.array([]),) * 4
    steps = np.unique(np.concatenate([s for s, _ in curves]))
    grid = np.full((len(curves), len(steps)), np.nan)
    for i, (s, v) in enumerate(curves):
        inside = (steps >= s[0]) & (steps <= s[-1])
        grid[i, inside] = np.interp(steps[inside], s, v)
    return steps, np.nanmean(grid, 0), np.nanmin(grid, 0), np.nanmax(grid, 0)


def is_run(path: pathlib.Path) -> bool:
    return (path / "metrics.jsonl").is_file() and (path / "hydra" / "config.yaml").is_file()


def find_runs(paths) -> list[Run]:
    """Every run directory given, or found under the given folders (each counted once), and every run
    of the given archives (*.jsonl.gz)."""
    found: dict[pathlib.Path, None] = {}
    archived: list[Run] = []
    for path in map(pathlib.Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        if path.is_file() and path.name.endswith(ARCHIVE_SUFFIX):
            archived += read_archive(path)
            continue
        for folder, subdirs, _ in os.walk(path):
            subdirs.sort()
            if is_run(pathlib.Path(folder)):
                found[pathlib.Path(folder).resolve()] = None
                subdirs.clear()  # a run's replay/, wandb/, ... hold no further runs
    if not found and not archived:
        raise FileNotFoundError(
            f"no runs found in {', '.join(map(str, paths))}: a run directory holds metrics.jsonl next to "
            f"hydra/config.yaml (what `python -m transfer.run` writes under runs/<method>/<suite>-<task>-seed<seed>/), "
            f"an archive is a *{ARCHIVE_SUFFIX} file of `transfer.report --archive`")
    return [read_run(p) for p in found] + archived


def write_archive(runs: list[Run], path) -> pathlib.Path:
    """One JSON line per run (see the module doc), gzip-compressed, in the order given; names must differ."""
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"runs of the same method, task and seed cannot share an archive: "
                         f"{sorted({n for n in names if names.count(n) > 1})}")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"method": r.method_config, "suite": r.suite, "task": r.task, "seed": r.seed,
                         "rows": r.rows, "diagnostics": r.diagnostics, **({"init": r.init} if r.init else {})})
             for r in runs]
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:  # same runs, same bytes
        f.write(("\n".join(lines) + "\n").encode())
    return path


def read_archive(path) -> list[Run]:
    """The runs of an archive; a line that is not a run record fails with its line number."""
    path, runs = pathlib.Path(path), []
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, EOFError) as err:
        raise FileNotFoundError(f"{path}: not a readable gzip run archive ({err}); rewrite it with "
                                f"`python -m transfer.report RUN_DIRS --archive {path.name}`") from err
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            method = r["method"] or {}
            run = Run(path, method_label(method) + init_label(r.get("init")), str(r["suite"]), str(r["task"]),
                      int(r["seed"]), without_redone(list(r["rows"])), method,
                      diag.upgrade(r["diagnostics"]) if isinstance(r.get("diagnostics"), dict) else None,
                      init=r.get("init"))
            run.path = path / run.name
            runs.append(run)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise FileNotFoundError(f"{path}, line {i}: not a run record ({err!r}); rewrite the archive with "
                                    f"`python -m transfer.report RUN_DIRS --archive {path.name}`") from err
    return runs


