"""`python -m transfer.run [group=option ...]`: train one method on one task (see configs/)."""
from __future__ import annotations

import logging
import pathlib
import sys

import hydra
from omegaconf import DictConfig

from core.runtime import tune_malloc

log = logging.getLogger(__name__)


@hydra.main(config_path="../configs", config_name="config", version_base=None)
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig
    from transfer.build import build_trainer
    run_dir = HydraConfig.get().runtime.output_dir
    try:
        trainer = build_trainer(cfg, run_dir)
    except (ValueError, FileNotFoundError) as err:  # bad input (task, option, teacher or data file): one line
        raise SystemExit(f"error: {err}") from None
    try:
        if trainer.step >= cfg.trainer.steps:
            log.info("run in %s already finished at step %d; pick another run_dir to train again",
                     run_dir, trainer.step)
            return 0.0
        result = trainer.run()
    finally:
        trainer.close()
    from transfer.report.plot import plot_returns, plot_weights
    plot_returns(run_dir), plot_weights(run_dir)
    log.info("done: %s (outputs in %s)", result, run_dir)
    return result.get("final/return", 0.0)


def embedded_default(argv: list[str]) -> list[str]:
    """Command-line overrides with `preset=quick` added when a method that needs a teacher
    (`init_from_teacher` or `teacher_kind` in its config) is run with neither `teacher=` nor `preset=`:
    `python -m transfer.run method=gsa` on a fresh machine then builds the small default teacher once
    and fine-tunes a tiny model in minutes, instead of starting a 500k-step run from a tiny teacher."""
    values = dict(a.lstrip("+~").split("=", 1) for a in argv if "=" in a and not a.startswith("-"))
    if {"teacher", "preset"} & set(values) or values.get("default_teacher.enabled", "true").lower() == "false":
        return argv
    path = pathlib.Path(__file__).resolve().parents[1] / "configs" / "method" / f"{values.get('method', 'dreamer')}.yaml"
    if not path.exists():
        return argv  # Hydra reports the unknown option
    from omegaconf import OmegaConf
    method = OmegaConf.load(path)
    if not (method.get("init_from_teacher") or method.get("teacher_kind")):
        return argv
    print(f"no teacher= given: method={values['method']} runs the embedded default (preset=quick): a small "
          "default teacher is built once (cached in runs/), then a tiny model fine-tunes. Pass teacher=PATH "
          "(preset=none keeps full-size settings) for a real run.", file=sys.stderr)
    return ["preset=quick", *argv]


if __name__ == "__main__":
    tune_malloc("transfer.run")
    sys.argv[1:] = embedded_default(sys.argv[1:])
    main()
