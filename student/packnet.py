"""PackNet (Mallya & Lazebnik, 2018) on the actor: GSA's continual-learning baseline (Sec. 4.3), the `packnet`
part (transfer/components.py, switched on by `method.packnet.enabled`).

Every actor parameter gets an owner map of its shape (int16): 0 = free, k = kept for the k-th task of a sequence
(task index k - 1). While a task trains only free entries change: their gradients are kept and the others'
zeroed before the actor's clipping and step, and after every step the owned entries are written back to their
values at the first update (zeroing gradients alone is not enough: Adam's momentum and weight decay still move
them). At the end of task t (`OwnerMaps.prune(t, fraction)`, run by transfer.continual after the task's run has
finished, on its final checkpoint), in every weight matrix (ndim >= 2) the top (1 - fraction) of the free entries
by magnitude become owned by task t and the rest are set to zero and stay free for the next task; 1-D parameters
(biases, LayerNorm scales and offsets) are trained by the first task and owned by it from then on. No
retraining follows the pruning. Evaluating an earlier task j (`OwnerMaps.keep_tasks(j)`) zeroes every entry not
owned by tasks 0..j.

The owner maps are buffers of a module attached to the actor (Agent.attach_actor), so every checkpoint holds
them, a resume restores them, and init.keep=[actor] carries them to the next task's run with the weights.
The critic is not PackNet's business: the continual variant re-initialises it per task (init.keep=[wm, actor]).
"""
from __future__ import annotations

import torch
from torch import nn


class OwnerMaps(nn.Module):
    """Owner maps of an actor's parameters (buffers owner0, owner1, ... in named_parameters order) and the
    number of tasks pruned so far (`pruned`); also the actor-update hook (Agent.actor_update_hooks)."""

    def __init__(self, actor: nn.Module):
        super().__init__()
        params = list(actor.parameters())
        for i, p in enumerate(params):
            self.register_buffer(f"owner{i}", torch.zeros(p.shape, dtype=torch.int16, device=p.device))
        self.register_buffer("pruned", torch.zeros((), dtype=torch.int64))  # tasks pruned so far
        self.params = params  # a plain list: the actor owns (and registers) them
        self.kept: list[torch.Tensor] | None = None  # the owned entries' values, taken at the first update

    def owner(self, i: int) -> torch.Tensor:
        return getattr(self, f"owner{i}")

    # ---- while a task trains (Agent.actor_update_hooks) ------------------------------------------
    @torch.no_grad()
    def before(self):
        """Gradients ready: zero those of owned entries. The first call (after any resume or init load) takes
        the values the owned entries keep."""
        if self.kept is None:
            self.kept = [p.detach().clone() for p in self.params]
        for i, p in enumerate(self.params):
            if p.grad is not None:
                p.grad.masked_fill_(self.owner(i) != 0, 0.0)

    @torch.no_grad()
    def after(self):
        """After the optimiser step: owned entries get their kept values back."""
        for i, p in enumerate(self.params):
            p.copy_(torch.where(self.owner(i) != 0, self.kept[i], p))

    # ---- between tasks --------------------------------------------------------------------------
    @torch.no_grad()
    def prune(self, task: int, fraction: float) -> dict:
        """End of task `task` (0-based; tasks 0..task-1 were pruned before): see the module doc. Returns
        {packnet/kept: share of this task's free matrix entries it keeps, packnet/free: share of all matrix
        entries left free}."""
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"method.packnet.prune={fraction}: use a fraction in (0, 1) of each task's weights "
                             f"to free")
        if int(self.pruned) != task:
            raise ValueError(f"PackNet: task {task} cannot be pruned after {int(self.pruned)} pruned tasks; "
                             f"prune the tasks in order, once each")
        label, trained, kept = task + 1, 0, 0
        for i, p in enumerate(self.params):
            owner = self.owner(i)
            free = owner == 0
            if p.dim() < 2:  # biases and norms: the first task's, then frozen
                owner[free] = label
                continue
            n = int(free.sum())
            keep = n - int(round(n * fraction))
            if keep > 0:
                magnitude = p.abs().masked_fill(~free, -1.0).flatten()  # owned entries are never chosen
                owner.view(-1)[magnitude.topk(keep).indices] = label
            p.masked_fill_(owner == 0, 0.0)
            trained, kept = trained + n, kept + keep
        self.pruned.fill_(task + 1)
        self.kept = None
        return {"packnet/kept": kept / max(trained, 1), **self.stats()}

    @torch.no_grad()
    def keep_tasks(self, task: int):
        """Zero every actor entry not owned by tasks 0..task (evaluating task `task` of the sequence)."""
        if not 0 <= task < int(self.pruned):
            raise ValueError(f"PackNet: task {task} has no mask; tasks 0..{int(self.pruned) - 1} are pruned")
        for i, p in enumerate(self.params):
            owner = self.owner(i)
            p.masked_fill_((owner == 0) | (owner > task + 1), 0.0)

    def stats(self) -> dict:
        """{packnet/free: share of matrix entries free, packnet/tasks: tasks pruned}."""
        mats = [self.owner(i) for i, p in enumerate(self.params) if p.dim() >= 2]
        free = sum(int((o == 0).sum()) for o in mats) / max(sum(o.numel() for o in mats), 1)
        return {"packnet/free": free, "packnet/tasks": float(self.pruned)}


def find(agent) -> OwnerMaps | None:
    """The owner maps attached to an agent's actor by the packnet part, None without them."""
    ac = getattr(agent, "ac", None)
    maps = getattr(getattr(ac, "actor", None), "packnet", None)
    return maps if isinstance(maps, OwnerMaps) else None


def attach(ctx) -> None:
    """The `packnet` part (ctx: transfer's Context): owner maps on the actor and the update hook that keeps
    earlier tasks' entries fixed; logs packnet/free and packnet/tasks."""
    agent, prune = ctx.agent, ctx.method.packnet.get("prune")
    if not hasattr(agent, "attach_actor"):
        raise ValueError("method.packnet works on the DreamerV3 agent's actor; this method's agent has none "
                         "(method.agent=dreamer)")
    if prune is None or not 0.0 < float(prune) < 1.0:
        raise ValueError(f"method.packnet.prune={prune}: use a fraction in (0, 1) of each task's weights to free")
    maps = agent.attach_actor("packnet", OwnerMaps(agent.ac.actor))
    agent.actor_update_hooks.append(maps)
    ctx.add_log_source(maps.stats)
