"""Teacher checkpoints: a pretrained world model (encoder + RSSM + decoder) that carries its own
architecture, so `transfer.run ... teacher=PATH` rebuilds it without the user repeating model flags.

File layout (torch.save of a dict, written atomically):
    format "wmtransfer-teacher", version 1
    kind        "generalist" (label-free, GSA/WPT) | "mixture" (task-label conditioned, Vid2Act)
    wm          the model.wm config it was built with (architecture + loss settings)
    obs_shapes  {"image": [64, 64, 3]}
    act_dim     the padded action dim A it was trained with (= max_action_dim)
    labels      label names in one-hot order (mixture; [] for generalist), label_key
    state_dict  weights of wm.pretrained_modules() (encoder, rssm, decoder)
    dataset     {root, trajectories, transitions} it was trained on; step; config (the pretrain config)
"""
from __future__ import annotations

import pathlib

import torch
from omegaconf import OmegaConf

from core import checkpoint
from core.world_model import WorldModel

FORMAT, VERSION = "wmtransfer-teacher", 1
# model.wm keys that define the pretrained modules' shapes; a student initialised from a teacher takes these.
ARCH_KEYS = ("deter", "hidden", "stoch", "classes", "blocks", "cnn_depth", "cnn_mults", "mlp_layers",
             "units", "unimix", "labels")


def save_teacher(path, wm: WorldModel, kind: str, labels: list[str], label_key: str, dataset: dict,
                 step: int, config: dict) -> None:
    checkpoint.save(path, dict(
        format=FORMAT, version=VERSION, kind=kind, wm=OmegaConf.to_container(wm.cfg, resolve=True),
        obs_shapes={k: list(v) for k, v in wm.obs_shapes.items()}, act_dim=wm.act_dim,
        labels=list(labels), label_key=label_key,
        state_dict={k: v.detach().cpu() for k, v in wm.pretrained_modules().state_dict().items()},
        dataset=dataset, step=step, config=config))


def read_teacher(path) -> dict:
    """Load and validate a teacher file (no model built)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"teacher={path}: no such file. Pretrain one with `python -m teacher.pretrain "
                                f"dataset=DIR` (it writes RUN_DIR/teacher.pt)")
    info = checkpoint.load(path)
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        hint = " (this looks like a transfer.run checkpoint, not a teacher)" if isinstance(info, dict) and "agent" in info else ""
        raise ValueError(f"teacher={path} is not a teacher checkpoint{hint}; use the teacher.pt written by "
                         f"`python -m teacher.pretrain`")
    if info["version"] > VERSION:
        raise ValueError(f"teacher={path} has format version {info['version']}; this code reads up to {VERSION}")
    return info


def build_teacher(info: dict, device="cpu", frozen: bool = True) -> WorldModel:
    """Rebuild the teacher's world model (no reward / continue heads) with its weights."""
    cfg = OmegaConf.create({**info["wm"], "reward_head": False, "cont_head": False})
    wm = WorldModel(info["obs_shapes"], info["act_dim"], cfg)
    load_pretrained(wm, info)
    wm.to(device)
    if frozen:
        wm.eval().requires_grad_(False)
    return wm


def load_pretrained(wm: WorldModel, info: dict) -> None:
    """Copy the teacher's encoder, RSSM and decoder into `wm`; a shape mismatch says what differs."""
    try:
        wm.pretrained_modules().load_state_dict(info["state_dict"])
    except RuntimeError as e:
        arch = {k: info["wm"].get(k) for k in ARCH_KEYS}
        raise ValueError(f"the teacher's weights do not fit this world model (teacher architecture {arch}, "
                         f"action dim {info['act_dim']}): {str(e).splitlines()[0]}") from e


def apply_teacher_arch(cfg, info: dict) -> list[str]:
    """Make a transfer.run config agree with a teacher: copy its architecture into cfg.model.wm, and
    fail clearly on what cannot be changed silently (padded action dim, image size).
    Returns human-readable notes on what was changed."""
    if cfg.max_action_dim != info["act_dim"]:
        raise ValueError(f"the teacher was pretrained with max_action_dim={info['act_dim']} but this run has "
                         f"max_action_dim={cfg.max_action_dim}; rerun with max_action_dim={info['act_dim']}")
    size = info["obs_shapes"]["image"][0]
    if cfg.env.get("image_size", size) != size:
        raise ValueError(f"the teacher sees {size}x{size} images but env.image_size={cfg.env.image_size}; "
                         f"rerun with env.image_size={size}")
    if info["kind"] == "mixture":
        raise ValueError("a mixture (label-conditioned) teacher cannot initialise a label-free student; "
                         "use it as a frozen teacher (method=vid2act) or pretrain a generalist teacher "
                         "(python -m teacher.pretrain kind=generalist)")
    notes = []
    for k in ARCH_KEYS:
        theirs, ours = info["wm"].get(k, 0), cfg.model.wm.get(k, 0)
        if theirs != ours:
            notes.append(f"model.wm.{k}: {ours} -> {theirs}")
            cfg.model.wm[k] = theirs
    return notes
