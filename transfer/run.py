"""`python -m transfer.run [group=option ...]`: train one method on one task (see configs/)."""
from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from core.runtime import tune_malloc

log = logging.getLogger(__name__)


@hydra.main(config_path="../configs", config_name="config", version_base=None)
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig
    from transfer.loop import Trainer
    run_dir = HydraConfig.get().runtime.output_dir
    trainer = Trainer(cfg, run_dir)
    try:
        if trainer.step >= cfg.trainer.steps:
            log.info("run in %s already finished at step %d; pick another run_dir to train again",
                     run_dir, trainer.step)
            return 0.0
        result = trainer.run()
    finally:
        trainer.close()
    from transfer.plot import plot, plot_weights
    plot(run_dir), plot_weights(run_dir)
    log.info("done: %s (outputs in %s)", result, run_dir)
    return result.get("final/return", 0.0)


if __name__ == "__main__":
    tune_malloc("transfer.run")
    main()
