"""Entry point (`python -m transfer.run`) and the ONE training loop; methods are configurations; reports in transfer/report/."""
import os as _os

from omegaconf import OmegaConf as _OmegaConf

# ${abspath:PATH} (configs/config.yaml's hydra.sweep.subdir): a multirun's run goes to its own run_dir, relative
# to the directory the sweep was started from, whatever the launcher's process or node.
if not _OmegaConf.has_resolver("abspath"):
    _OmegaConf.register_new_resolver("abspath", lambda path: _os.path.abspath(str(path)))
