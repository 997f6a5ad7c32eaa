"""Teacher pretraining (generalist and mixture), DDP gradients, teacher files and transfer.run teacher=PATH."""
import os
import pathlib

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import collect_random, compose, pretrain_cfg
from teacher.data.dataset import OfflineDataset
from teacher.model import build_teacher, read_teacher
from teacher.pretrain import Pretrainer

A = 12


@pytest.fixture(scope="module")
def dmc_data(tmp_path_factory):
    return collect_random(tmp_path_factory.mktemp("data"))


def test_generalist_pretraining_lowers_heldout_loss_and_resumes(dmc_data, tmp_path):
    cfg = pretrain_cfg(dmc_data, tmp_path, "steps=40", "eval_every=40", "log_every=20")
    trainer = Pretrainer(cfg, tmp_path)
    assert trainer.wm.reward is None and trainer.wm.labels == 0
    before = trainer.evaluate()
    after = trainer.run()
    assert trainer.step == 40
    assert after["heldout/loss"] < 0.8 * before["heldout/loss"], (before, after)
    assert after["heldout/rec_image"] < before["heldout/rec_image"]
    assert sorted(p.name for p in (tmp_path / "openloop").glob("*.png")) == ["step0000000.png", "step0000040.png"]
    info = read_teacher(tmp_path / "teacher.pt")
    assert info["kind"] == "generalist" and info["act_dim"] == A and info["step"] == 40
    wm = build_teacher(info)
    assert all(torch.equal(a, b) for a, b in zip(wm.pretrained_modules().state_dict().values(),
                                                  trainer.wm.pretrained_modules().state_dict().values()))
    # rerun with more steps: resumes at 40
    again = Pretrainer(pretrain_cfg(dmc_data, tmp_path, "steps=45", "eval_every=1000", "log_every=5"), tmp_path)
    assert again.step == 40
    again.run()
    assert again.step == 45


def test_mixture_teacher_is_label_conditioned(dmc_data, tmp_path):
    cfg = pretrain_cfg(dmc_data, tmp_path, "kind=mixture", "steps=3", "eval_every=3")
    trainer = Pretrainer(cfg, tmp_path)
    assert trainer.labels == ["cartpole_balance", "reacher_easy"] and trainer.wm.labels == 2
    trainer.run()
    info = read_teacher(tmp_path / "teacher.pt")
    assert info["kind"] == "mixture" and info["labels"] == trainer.labels
    wm = build_teacher(info)
    batch = {k: torch.as_tensor(v) for k, v in trainer.data.sample(2, 6, np.random.default_rng(0)).items()}
    torch.manual_seed(0)
    post0, _ = wm.observe({**batch, "label": torch.zeros(2, dtype=torch.long)})
    torch.manual_seed(0)
    post1, _ = wm.observe({**batch, "label": torch.ones(2, dtype=torch.long)})
    assert not torch.allclose(post0["deter"][:, 1:], post1["deter"][:, 1:])  # the label reaches encoder + transition
    with pytest.raises(ValueError, match="label"):
        wm.observe({k: v for k, v in batch.items() if k != "label"})


def _ddp_worker(rank, world, store, dataset, run_dir, halves, out):
    dist.init_process_group("gloo", store=dist.FileStore(store, world), rank=rank, world_size=world)
    torch.set_num_threads(1)
    trainer = Pretrainer(pretrain_cfg(dataset, run_dir, "steps=1"), run_dir, rank, world)
    torch.manual_seed(100 + rank)
    trainer.grads(halves[rank])
    if rank == 0:
        torch.save([p.grad.clone() for p in trainer.wm.parameters()], out)
    trainer.close()
    assert not dist.is_initialized()


def test_ddp_gradients_match_single_process(dmc_data, tmp_path):
    """2 gloo processes, each on its half of a batch, average to the single-process gradient."""
    data = OfflineDataset(dmc_data, max_action_dim=A)
    batch = data.sample(4, 10, np.random.default_rng(3))
    halves = [{k: v[:2] for k, v in batch.items()}, {k: v[2:] for k, v in batch.items()}]
    single = Pretrainer(pretrain_cfg(dmc_data, tmp_path / "single", "steps=1"), tmp_path / "single")
    total = None
    for rank in range(2):
        torch.manual_seed(100 + rank)
        single.grads(halves[rank])
        grads = [p.grad.clone() for p in single.wm.parameters()]
        total = grads if total is None else [a + b for a, b in zip(total, grads)]
    expected = [g / 2 for g in total]
    out = tmp_path / "ddp_grads.pt"
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "store"), str(dmc_data), str(tmp_path / "ddp"), halves, str(out)),
             nprocs=2, join=True)
    got = torch.load(out)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)  # fp32 sums in another order


def test_transfer_run_rebuilds_the_teacher(dmc_data, tmp_path):
    from transfer.build import build_trainer
    cfg = pretrain_cfg(dmc_data, tmp_path / "t", "steps=2", "eval_every=2", "model.wm.deter=64", "model.wm.hidden=64")
    Pretrainer(cfg, tmp_path / "t").run()
    path = tmp_path / "t" / "teacher.pt"
    run = compose("preset=quick_dmc", "method=finetune", f"teacher={path}", "env.episode_frames=20",
                  f"run_dir={tmp_path / 'run'}", "logger.wandb=disabled", "trainer.parallel=false")
    assert run.model.wm.deter == 128  # the user did not repeat the teacher's model flags
    trainer = build_trainer(run, tmp_path / "run")
    try:
        assert trainer.agent.wm.rssm.deter == 64
        teacher = build_teacher(read_teacher(path))
        for (k, a), b in zip(trainer.agent.wm.pretrained_modules().state_dict().items(),
                             teacher.pretrained_modules().state_dict().values()):
            assert torch.equal(a, b), k
    finally:
        trainer.close()
    bad = compose("preset=quick_dmc", "method=finetune", f"teacher={path}", "max_action_dim=6",
                  f"run_dir={tmp_path / 'bad'}", "logger.wandb=disabled", "trainer.parallel=false")
    with pytest.raises(ValueError, match="max_action_dim=12"):
        build_trainer(bad, tmp_path / "bad")
    not_teacher = tmp_path / "run" / "checkpoint.pt"
    torch.save({"agent": {}}, not_teacher)
    with pytest.raises(ValueError, match="not a teacher"):
        read_teacher(not_teacher)
    with pytest.raises(ValueError, match="teacher=PATH"):
        build_trainer(compose("preset=quick_dmc", "method=finetune", "default_teacher.enabled=false", f"run_dir={tmp_path / 'none'}"),
                tmp_path / "none")


def test_default_teacher_is_built_once_then_reused(tmp_path):
    """No teacher given: the CLI (`python -m transfer.run method=finetune`, as a user types it) adds the
    embedded default, collects + pretrains a small teacher once and fine-tunes; a later run reuses it."""
    import subprocess
    import sys

    from transfer.build import build_trainer
    recipe = [f"default_teacher.dir={tmp_path / 'default'}", "default_teacher.dmc_tasks=[cartpole_balance]",
              "default_teacher.dmc_episodes=2", "default_teacher.dmc_frames=40", "default_teacher.metaworld_tasks=[reach]",
              "default_teacher.metaworld_noise=[0.5]", "default_teacher.metaworld_episodes=1", "default_teacher.workers=0",
              "default_teacher.steps=2", "default_teacher.batch_size=2", "default_teacher.batch_length=8",
              "logger.wandb=disabled", "trainer.parallel=false", "env.episode_frames=20"]
    teacher = tmp_path / "default" / "pretrain" / "teacher.pt"
    fast = ["env.action_repeat=2", "trainer.steps=40", "trainer.warmup=20", "trainer.batch_size=2", "trainer.batch_length=8",
            "trainer.eval_every=0", "trainer.final_eval_episodes=1", "logger.progress=false"]
    out = subprocess.run([sys.executable, "-m", "transfer.run", "method=finetune", *recipe, *fast,
                          f"run_dir={tmp_path / '0'}"], cwd=pathlib.Path(__file__).parents[1], capture_output=True,
                         text=True, timeout=600, env=dict(os.environ, HYDRA_FULL_ERROR="1"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "runs the embedded default (preset=quick)" in out.stderr
    assert read_teacher(teacher)["step"] == 2 and (tmp_path / "0" / "checkpoint.pt").exists()
    stamp = teacher.stat().st_mtime_ns
    trainer = build_trainer(compose("preset=quick", "method=finetune", *recipe, f"run_dir={tmp_path / '1'}"), tmp_path / "1")
    trainer.close()
    assert trainer.cfg.teacher == str(teacher) and teacher.stat().st_mtime_ns == stamp  # reused, not rebuilt
    data = OfflineDataset(tmp_path / "default" / "data")
    assert {m["suite"] for m in data.meta} == {"dmc", "metaworld"} and len(data) == 3
