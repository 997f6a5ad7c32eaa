"""`python -m transfer.run [group=option ...]`: train one method on one task (see configs/)."""
from __future__ import annotations

import logging
import os
import sys

import hydra
from omegaconf import DictConfig

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
    log.info("done: %s (outputs in %s)", result, run_dir)
    return result.get("final/return", 0.0)


def _tune_malloc():
    """glibc returns big activation buffers to the kernel on every update (about a third of CPU
    time on small CPUs). Re-exec once with mmap/trim thresholds raised, unless the user set them."""
    if os.environ.get("MALLOC_MMAP_MAX_") is None and os.environ.get("WMT_NO_MALLOC_TUNING") is None:
        env = dict(os.environ, MALLOC_MMAP_MAX_="0", MALLOC_TRIM_THRESHOLD_=str(1 << 32))
        os.execve(sys.executable, [sys.executable, "-m", "transfer.run", *sys.argv[1:]], env)


if __name__ == "__main__":
    _tune_malloc()
    main()
