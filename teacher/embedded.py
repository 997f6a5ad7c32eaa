"""The embedded default teachers: when a method needs a teacher (method.teacher_kind, or
method.init_from_teacher: generalist) and none is given, `ensure(cfg)` builds a small one once and caches it in `default_teacher.dir`
(default runs/default_teacher):

1. collect a small multi-embodiment offline dataset (python -m teacher.data.collect): DMC random episodes
   on several bodies and Meta-World scripted experts with GSA's action noise;
2. pretrain a tiny generalist teacher on it (teacher.pretrain, reward-free).

The mixture teacher (method=vid2act) is built the same way in `default_teacher.mixture_dir` from
Meta-World scripted-expert sources (`mixture_tasks`), conditioned on their task labels.

Both steps show their progress bars and resume if interrupted; later runs reuse the finished teacher.
"""
from __future__ import annotations

import logging
import pathlib

log = logging.getLogger(__name__)


def collect_commands(d, data: pathlib.Path) -> list[list[str]]:
    """teacher.data.collect command lines of the default dataset."""
    common = ["--dataset", str(data), "--workers", str(d.workers), "--seed", "0"]
    frames = [f"episode_frames={d.dmc_frames}"]
    return [
        [*common, "--suite", "dmc", "--tasks", *d.dmc_tasks, "--policy", "random", "--episodes", str(d.dmc_episodes),
         "--env-config", *frames],
        [*common, "--suite", "metaworld", "--tasks", *d.metaworld_tasks, "--policy", "expert",
         "--noise", *[str(n) for n in d.metaworld_noise], "--episodes", str(d.metaworld_episodes)],
    ]


def finished(path: pathlib.Path, steps: int) -> dict | None:
    """The teacher file's contents if it exists and has trained `steps` updates, else None."""
    if not path.exists():
        return None
    from teacher.model import read_teacher
    info = read_teacher(path)
    return info if info["step"] >= steps else None


def check_labels(info: dict, teacher: pathlib.Path, tasks, root: pathlib.Path) -> None:
    """A cached mixture teacher (`info`, read from `teacher`) must be conditioned on exactly
    `default_teacher.mixture_tasks`."""
    labels = [str(x) for x in info["labels"]]
    if sorted(labels) != sorted(str(t) for t in tasks):
        raise ValueError(f"the cached default mixture teacher {teacher} was built on the sources {labels}, but "
                         f"default_teacher.mixture_tasks is {list(tasks)}: move or delete {root} to rebuild it, "
                         f"or set default_teacher.mixture_dir to another folder")


def mixture_commands(d, data: pathlib.Path) -> list[list[str]]:
    """teacher.data.collect command line of the default mixture teacher's data: Vid2Act-style Meta-World
    expert sources, one label per task."""
    return [["--dataset", str(data), "--workers", str(d.workers), "--seed", "0", "--suite", "metaworld",
             "--tasks", *d.mixture_tasks, "--policy", "expert", "--episodes", str(d.mixture_episodes)]]


def compose_pretrain(overrides: list[str]):
    """configs/pretrain.yaml with overrides, from inside the running `transfer.run` Hydra app (its
    config path is configs/) or from plain Python (tests, notebooks)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    if GlobalHydra.instance().is_initialized():
        return compose("pretrain", overrides=overrides)
    with initialize_config_dir(config_dir=str(pathlib.Path(__file__).resolve().parents[1] / "configs"), version_base=None):
        return compose("pretrain", overrides=overrides)


def ensure(cfg, kind: str = "generalist") -> pathlib.Path:
    """Path of the default teacher.pt of this kind (generalist | mixture), building it first if needed."""
    from teacher.data.collect import main as collect
    from teacher.pretrain import Pretrainer
    d = cfg.default_teacher
    if kind not in ("generalist", "mixture"):
        raise ValueError(f"teacher kind {kind!r}: use generalist or mixture")
    root = pathlib.Path(d.dir if kind == "generalist" else d.mixture_dir)
    run, data = root / "pretrain", root / "data"
    teacher = run / "teacher.pt"
    steps = d.steps if kind == "generalist" else d.mixture_steps
    info = finished(teacher, steps)
    if info is not None:
        if kind == "mixture":
            check_labels(info, teacher, d.mixture_tasks, root)
        log.info("using the default teacher %s (delete %s to rebuild it)", teacher, root)
        return teacher
    log.info("no teacher given: building the embedded default once in %s (collect, then pretrain %d updates)",
             root, steps)
    for argv in (collect_commands if kind == "generalist" else mixture_commands)(d, data):
        collect(argv)
    pcfg = compose_pretrain([
        f"dataset={data.resolve()}", f"run_dir={run}", f"kind={kind}", "model=tiny", f"steps={steps}",
        f"batch_size={d.batch_size}", f"batch_length={d.batch_length}", f"max_action_dim={cfg.max_action_dim}",
        f"eval_every={max(steps // 4, 1)}", "workers=0", f"device={cfg.device}",
        "logger.wandb=disabled", f"logger.progress={cfg.logger.progress}"])
    Pretrainer(pcfg, run).run()
    return teacher
