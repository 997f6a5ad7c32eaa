"""The DreamerV3 agent: world model + actor-critic, their optimisers, acting and one update.

Extension seams used by other packages (student/, teacher/) without touching the loop:
- ``loss_terms``: callables ``(agent, batch, post) -> {name: (B, T) loss}`` added to the world-model
  loss (scaled by ``loss_scales[name]``, default 1): distillation, exploration ensembles, etc.
- ``ac.reward_fn``: ``(wm, feats (H+1, N, F), actions (H, N, A)) -> (H, N)`` replaces the reward head's
  prediction in imagination (intrinsic rewards, uncertainty penalties); it may also return ``(reward, {name:
  0-dim tensor})``, logged with the actor-critic's metrics.
- ``attach(name, module)``: a module trained by the world-model optimiser (kept in checkpoints).
- ``acting_observers``: callables run on every acting step (e.g. a frozen teacher filtering the same
  observations); what they return is carried in the per-env state.
- ``set_actor_input(provider)``: extra actor input features (Vid2Act's action-replay features).
- ``actor_update_hooks``: objects with ``before()`` (the actor's gradients are ready, before clipping and the
  step) and ``after()`` (after the step), e.g. PackNet keeping earlier tasks' weights fixed.
- ``start_rows``: None (imagination starts from every posterior state of the batch) or a callable
  ``B -> n``: only the first n rows of a B-row batch seed imagination (rehearsal puts its offline rows last).
- ``attach_actor(name, module)``: a module without parameters (e.g. PackNet's owner maps) kept with the
  actor in checkpoints (and carried with it by init.keep=[actor]).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from core.actor_critic import ActorCritic
from core.nets import set_channels_last
from core.optim import Optimizer
from core.runtime import bf16_autocast, resolve_bf16, section
from core.world_model import WorldModel, preprocess


class Agent(nn.Module):
    def __init__(self, obs_shapes: dict, action_mask: np.ndarray, cfg, device: torch.device):
        super().__init__()
        self.cfg, self.device = cfg, device
        self.bf16 = resolve_bf16(cfg.bf16, device)  # bf16 autocast of the updates and acting
        mask = torch.as_tensor(action_mask, dtype=torch.float32)
        self.act_dim = len(mask)
        self.wm = WorldModel(obs_shapes, self.act_dim, cfg.wm)
        self.ac = ActorCritic(self.wm.rssm.feat_dim, mask, cfg.ac)
        self.to(device)
        if cfg.get("tf32") and device.type == "cuda":
            torch.set_float32_matmul_precision("high")  # process-wide: fp32 matmuls on TF32 tensor cores
        if cfg.get("channels_last", False):
            set_channels_last(self.wm)
        self.wm_opt = Optimizer(self.wm.parameters(), cfg.wm_opt)
        self.actor_opt = Optimizer(self.ac.actor.parameters(), cfg.actor_opt)
        self.critic_opt = Optimizer(self.ac.critic.parameters(), cfg.critic_opt)
        self.loss_terms: list = []
        # (x preprocessed obs, is_first (N,), previous state, new latent) -> {name: (N, ...)} kept in the state
        self.acting_observers: list = []
        self.actor_update_hooks: list = []  # .before() / .after() around each actor optimiser step
        self.start_rows = None  # None, or B -> n: imagination starts from the batch's first n rows only
        self.updates = 0
        self.stopwatch = None  # a core.runtime.Stopwatch (set by the loop): world_model / actor_critic wall time
        if cfg.compile:
            from core.runtime import compile_agent
            compile_agent(self)

    def attach(self, name: str, module: nn.Module) -> nn.Module:
        """Register `module` under the world model so the world-model optimiser trains it and
        checkpoints keep it. Call before training starts (the optimiser is rebuilt, its state empty)."""
        if self.updates:
            raise RuntimeError(f"attach({name!r}) after training started would reset the optimiser state")
        self.wm.add_module(name, module.to(self.device))
        self.wm_opt = Optimizer(self.wm.parameters(), self.cfg.wm_opt)
        return module

    def set_actor_input(self, provider) -> None:
        """Give the actor extra input features from `provider` (see ActorCritic.set_actor_input and
        policy()); the actor and its optimiser are rebuilt, so call before training starts."""
        if self.updates:
            raise RuntimeError("set_actor_input after training started would discard the trained actor")
        attached = [name for name, _ in self.ac.actor.named_children() if name != "net"]
        if attached:
            raise RuntimeError(f"set_actor_input would drop the modules attached to the actor ({attached}); "
                               f"attach them after it (list their component after action_replay)")
        self.ac.set_actor_input(provider, self.wm.rssm.feat_dim)
        self.actor_opt = Optimizer(self.ac.actor.parameters(), self.cfg.actor_opt)

    def attach_actor(self, name: str, module: nn.Module) -> nn.Module:
        """Register `module` (buffers only: the actor's optimiser is not rebuilt) under the actor, so that
        checkpoints keep it and init.keep=[actor] carries it with the actor's weights."""
        if any(True for _ in module.parameters()):
            raise ValueError(f"attach_actor({name!r}): the module has parameters, which no optimiser would train")
        self.ac.actor.add_module(name, module.to(self.device))
        return module

    # ---- acting ------------------------------------------------------------------------------
    def initial_state(self, n: int) -> dict:
        state = self.wm.rssm.initial(n, self.device)
        state["action"] = torch.zeros(n, self.act_dim, device=self.device)
        return state

    @torch.no_grad()
    def policy(self, obs: dict, state: dict, explore: bool = True) -> tuple[np.ndarray, dict]:
        """obs: {key: np (N, ...)} incl. is_first; state from initial_state / last call.
        Returns padded actions np (N, A) and the new state."""
        tensors = {k: torch.as_tensor(np.asarray(obs[k])).to(self.device) for k in self.wm.obs_shapes}
        x = preprocess(tensors, self.wm.obs_shapes)
        is_first = torch.as_tensor(np.asarray(obs["is_first"]), device=self.device)
        with self.autocast():
            embed = self.wm.encoder(x)
            latent = self.wm.rssm.obs_step(state, state["action"], embed, is_first)
            for observe in self.acting_observers:  # what they carry per env rides in the state: (N, ...) leaves
                latent.update(observe(x, is_first, state, latent))
            inp = self.wm.rssm.feat(latent)  # (N, F)
            if self.ac.actor_input is not None:
                inp = torch.cat([inp, self.ac.actor_input.acting(latent)], -1)  # (N, F + X)
            mean, std = self.ac.actor(inp)
        action = self.ac.actor.sample(mean, std) if explore else self.ac.actor.mode(mean)
        latent["action"] = action
        return action.cpu().numpy(), latent

    @torch.no_grad()
    def imagined_return(self, start: dict, steps: int, samples: int = 4, sampled: bool = True) -> float:
        """The return the world model predicts for the actor (sampled actions, or its mean with sampled=False) over
        `steps` imagined steps from the posterior states `start` ({k: (N, ...)}, e.g. those of evaluation episodes'
        first frames), mean over the N states and `samples` rollouts each. Far above the real return: the actor
        exploits the model."""
        start = {k: v.repeat_interleave(samples, 0) for k, v in start.items() if k != "action"}  # (N*S, ...)
        with self.autocast():
            feats = self.ac.imagine(self.wm, start, steps, mode=not sampled)[0]  # (steps+1, N*S, F)
            return float(self.wm.predict_reward(feats[1:]).float().sum(0).mean())

    # ---- learning ----------------------------------------------------------------------------
    def autocast(self):
        return bf16_autocast(self.device, self.bf16)

    def train_step(self, batch: dict) -> dict:
        """One world-model update then one actor-critic update in imagination. batch leaves (B, T, ...).
        Returns {name: 0-dim float32 tensor on the agent's device}: no host sync here (the loop averages
        a log interval's metrics at once)."""
        with section(self.stopwatch, "world_model"):
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            c = self.cfg
            with self.autocast():
                losses, post, metrics = self.wm.loss(batch)
                for term in self.loss_terms:
                    losses.update(term(self, batch, post))
                wm_loss = sum(c.loss_scales.get(k, 1.0) * v.mean() for k, v in losses.items())
            metrics["wm_grad_norm"] = self.wm_opt.step(wm_loss)
        with section(self.stopwatch, "actor_critic"):
            rows = len(batch["action"]) if self.start_rows is None else self.start_rows(len(batch["action"]))
            start = {k: v[:rows].detach().flatten(0, 1) for k, v in post.items()}  # (n*T, ...) start states
            with self.autocast():
                ac_loss, ac_metrics = self.ac.loss(self.wm, start)
            self.actor_opt.opt.zero_grad(set_to_none=True)
            self.critic_opt.opt.zero_grad(set_to_none=True)
            ac_loss.backward()
            for hook in self.actor_update_hooks:
                hook.before()
            metrics["actor_grad_norm"] = self.actor_opt.apply()
            for hook in self.actor_update_hooks:
                hook.after()
            metrics["critic_grad_norm"] = self.critic_opt.apply()
            self.ac.update_slow()
        self.updates += 1
        metrics.update(ac_metrics)
        metrics.update({f"loss_{k}": v.mean().detach() for k, v in losses.items()})
        metrics["wm_loss"] = wm_loss.detach()
        # every metric is already a device tensor: no host copy or sync here (CUDA graphs capture this, core/graphs.py)
        return {k: v.detach().float().reshape(()) for k, v in metrics.items()}

    # ---- persistence -------------------------------------------------------------------------
    def full_state(self) -> dict:
        return dict(model=self.state_dict(), wm_opt=self.wm_opt.state_dict(),
                    actor_opt=self.actor_opt.state_dict(), critic_opt=self.critic_opt.state_dict(),
                    updates=self.updates)

    def load_full_state(self, state: dict):
        self.load_state_dict(state["model"])
        self.wm_opt.load_state_dict(state["wm_opt"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.updates = state["updates"]
