"""benchmarks.prior_view's latent kind: the features a policy acts on, filtered one frame at a time, are those it
was trained on, filtered over the whole episode at once (a mismatch would silently ruin the latent prior)."""
import numpy as np
import torch
from omegaconf import OmegaConf

from benchmarks.prior_view import A, LatentFilter
from core.world_model import WorldModel
from teacher.model import save_teacher


def test_latent_features_while_acting_equal_those_of_the_whole_episode(tmp_path):
    base, tiny = OmegaConf.load("configs/model/base.yaml"), OmegaConf.load("configs/model/tiny.yaml")
    cfg = OmegaConf.merge(base.wm, tiny.wm)
    torch.manual_seed(0)
    wm = WorldModel({"image": (64, 64, 3)}, 12, cfg)  # a random teacher; padded action dim 12 > A
    save_teacher(tmp_path / "teacher.pt", wm, "generalist", [], "task", {}, 0, {})
    latent = LatentFilter(str(tmp_path / "teacher.pt"))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    actions = rng.uniform(-1, 1, (6, A)).astype(np.float32)  # action[t]: taken after frame t
    torch.manual_seed(1)
    whole = latent.episode(images, actions)  # (L, F)
    torch.manual_seed(1)  # the posterior samples are drawn in the same order
    steps = [latent.step(images[0], None)] + [latent.step(images[t], actions[t - 1]) for t in range(1, 6)]
    stepped = torch.cat(steps).numpy()
    assert whole.shape == (6, cfg.deter + cfg.stoch * cfg.classes)
    np.testing.assert_allclose(stepped, whole, atol=1e-4)
    assert np.abs(whole[1:] - whole[:1]).max() > 1e-3  # the features move with the frames
    torch.manual_seed(1)
    moved = latent.episode(images, actions[::-1].copy())  # past actions enter the state (same samples)
    assert np.abs(moved[2:] - whole[2:]).max() > 1e-4
