"""The whole DreamerV3 update (world model + actor-critic, forward, backward and the three optimiser steps)
captured once as a CUDA graph and replayed per update: one launch instead of thousands of small kernels, which
is what bounds small models on fast GPUs.

    step = GraphedTrainStep(agent, batch)     # warms up on `batch` (real updates), then captures
    metrics = step(next_batch)                # copies into the static inputs, replays, returns fresh metrics

Requirements, all met by core/agent.py and checked here: CUDA; static shapes (every batch the same B x T and
dtypes, as the loop's fixed batch_size x batch_length gives); no host sync inside the update (metrics stay
0-dim device tensors; ReturnNorm keeps its quantile levels on the device); capturable optimisers (Adam with its
step counts on the device: Optimizer.make_capturable). Random draws inside the update (imagination) use the
default CUDA generator, whose offsets PyTorch advances at every replay. `agent.updates` counts replays.
In the training loop: model.cuda_graphs=true (GraphedUpdates below, captured at the first update). Measured on
one H200 (benchmarks/results/throughput-cuda*-h200.json, 2026-11-30): ms/update at 16 x 64, eager -> graph, fp32
tiny 319 -> 51, small 378 -> 77, large 632 -> 545; bf16 tiny 345 -> 40, small 385 -> 56, large 401 -> 185.
"""
from __future__ import annotations

import torch

from core.runtime import section


class GraphedTrainStep:
    def __init__(self, agent, batch: dict, warmup: int = 3):
        """agent: core.agent.Agent on a CUDA device, before or during training; batch: one update's batch
        {key: (B, T, ...) tensor}, used for the `warmup` eager updates on a side stream that CUDA graphs
        need before capture (they train the agent: pass a real batch)."""
        device = agent.device
        if device.type != "cuda" or not torch.cuda.is_available():
            raise ValueError(f"CUDA graphs need the agent on a CUDA device (it is on {device}); use device=cuda")
        if agent.cfg.get("compile"):
            raise ValueError("model.compile and CUDA graphs do not mix here: use one (compile mode "
                             "'reduce-overhead' makes its own graphs)")
        for opt in (agent.wm_opt, agent.actor_opt, agent.critic_opt):
            opt.make_capturable()
        self.agent = agent
        self.static = {k: v.to(device).clone() for k, v in batch.items()}  # the graph's fixed input buffers
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                agent.train_step(self.static)
        torch.cuda.current_stream().wait_stream(side)
        for opt in (agent.wm_opt, agent.actor_opt, agent.critic_opt):
            opt.opt.zero_grad(set_to_none=True)  # gradients are then allocated from the graph's pool
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = agent.train_step(self.static)  # {name: 0-dim device tensor}, rewritten by every replay
        # capture ran no kernels: the warm-up updates were real, the captured one was not
        agent.updates -= 1

    def __call__(self, batch: dict) -> dict:
        """One update on `batch` (same shapes and dtypes as at capture); {name: 0-dim device tensor}."""
        for k, v in batch.items():
            if v.shape != self.static[k].shape or v.dtype != self.static[k].dtype:
                raise ValueError(f"a CUDA graph replays fixed shapes: batch[{k!r}] is {tuple(v.shape)} {v.dtype}, "
                                 f"captured {tuple(self.static[k].shape)} {self.static[k].dtype}")
            self.static[k].copy_(v, non_blocking=True)
        self.graph.replay()
        self.agent.updates += 1
        return {k: v.clone() for k, v in self.out.items()}


class GraphedUpdates:
    """agent.train_step for the training loop (model.cuda_graphs=true): the first call runs GraphedTrainStep's
    warm-up updates on its batch and captures the graph; every call replays it. The loop's stopwatch times the
    replay as one section, `update` (the world_model / actor_critic split needs an eager update)."""

    def __init__(self, agent, warmup: int = 3):
        self.agent, self.warmup, self.step = agent, warmup, None

    def __call__(self, batch: dict) -> dict:
        if self.step is None:
            stopwatch, self.agent.stopwatch = self.agent.stopwatch, None  # no timing (nor a sync) inside the capture
            try:
                self.step = GraphedTrainStep(self.agent, batch, self.warmup)
            except RuntimeError as err:
                raise RuntimeError(f"model.cuda_graphs: this run's update could not be captured as a CUDA graph "
                                   f"({str(err).splitlines()[0]}); run with model.cuda_graphs=false") from err
            finally:
                self.agent.stopwatch = stopwatch
        with section(self.agent.stopwatch, "update"):
            return self.step(batch)
