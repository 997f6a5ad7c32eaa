"""The CUDA-graph update's preconditions, checked on CPU (the graph itself needs a GPU: benchmarks.throughput
--device cuda --update graphs): a clear error off CUDA, capturable optimisers, and an update whose metrics are all
device tensors, so nothing in it copies to or syncs with the host."""
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose
from core.agent import Agent
from core.graphs import GraphedTrainStep
from core.optim import Optimizer


def tiny_agent():
    cfg = compose("model=tiny").model
    mask = np.zeros(12, np.float32)
    mask[:4] = 1
    return Agent({"image": (64, 64, 3)}, mask, cfg, torch.device("cpu"))


def batch(b=2, t=8):
    out = dict(image=torch.randint(0, 256, (b, t, 64, 64, 3), dtype=torch.uint8), action=torch.rand(b, t, 12),
               reward=torch.rand(b, t), is_first=torch.zeros(b, t, dtype=torch.bool),
               is_terminal=torch.zeros(b, t, dtype=torch.bool))
    out["is_first"][:, 0] = True
    return out


def test_graphs_need_cuda_and_say_so():
    with pytest.raises(ValueError, match="CUDA graphs need the agent on a CUDA device"):
        GraphedTrainStep(tiny_agent(), batch())


def test_adam_becomes_capturable_and_laprop_says_why_not():
    agent = tiny_agent()
    agent.train_step(batch())  # Adam state exists, step counts on the host
    agent.wm_opt.make_capturable()
    assert all(g["capturable"] for g in agent.wm_opt.opt.param_groups)
    steps = [s["step"] for s in agent.wm_opt.opt.state.values()]
    assert steps and all(torch.is_tensor(s) and s.dtype == torch.float32 and float(s) == 1 for s in steps)
    laprop = Optimizer([torch.nn.Parameter(torch.zeros(3))], OmegaConf.create(
        dict(name="laprop", lr=1e-3, eps=1e-8, weight_decay=0.0, clip=1.0)))
    with pytest.raises(ValueError, match="name=adam"):
        laprop.make_capturable()


def test_an_update_returns_device_tensors_only():
    agent = tiny_agent()
    out = agent.train_step(batch())
    assert out and all(torch.is_tensor(v) and v.shape == () and v.device == agent.device for v in out.values())
    assert agent.ac.retnorm.q.device == agent.device and "q" not in dict(agent.ac.retnorm.state_dict())


def test_the_loop_asks_for_cuda_before_building_anything():
    from transfer.loop import Trainer
    with pytest.raises(ValueError, match="model.cuda_graphs=true needs a CUDA device.*device=cuda"):
        Trainer.check(compose("preset=quick", "device=cpu", "model.cuda_graphs=true"))
    Trainer.check(compose("preset=quick", "device=cpu"))  # off by default
