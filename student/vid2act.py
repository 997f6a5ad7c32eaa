"""The `vid2act` component (method=vid2act, method=hybrid): domain-selective distillation from a frozen
teacher (student/distill.py) and the action-replay VAE (student/vae.py), attached through the seams of
core.agent.Agent (loss_terms, acting_observers, set_actor_input) and of transfer's Context (log sources,
one-off log rows, random streams), which every attach function and part class here takes as `ctx`.

Source domains (K):
- vid2act: the mixture teacher's task labels; the VAE learns from the teacher's offline source data;
- hybrid: the values of `method.domain_key` (task or embodiment) among the retrieved trajectories
  (the `retrieved` artifact of the retrieval part, listed first); the VAE learns from the retrieved data.

Parts (transfer/components.py), each a class here: `distillation` (the frozen teacher, the source domains
and the weighted distillation loss; provides the `distillation` artifact), `action_replay` (the VAE on the
distilled teacher features, its acting observer and the actor's extra input; needs `distillation`,
provides `action_replay`) and `vae_prior` (the VAE's replayed action as the guidance `prior`).

The domain used by the VAE, k*, is the one with the highest learned weight: per imagination start
state and per acting step (the teacher filters the real observations with its own state). With
uniform weights or distillation off, k* is the domain with the most source trajectories.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
from torch.nn import functional as F

from core.logger import mean_metrics
from core.optim import Optimizer
from student.distill import DomainDistiller, teacher_features
from student.guidance import GuidanceSchedule, GuidedActing
from student.vae import ActionVAE
from teacher.data.dataset import OfflineDataset
from teacher.model import build_teacher

log = logging.getLogger(__name__)


def source_data(ctx) -> OfflineDataset:
    """The source data, labelled by domain (see module doc); ctx: transfer's Context."""
    m, info = ctx.method, ctx.teacher
    got = ctx.artifacts.get("retrieved")
    if got is not None:  # hybrid: the retrieved trajectories (a view; the dataset is not opened again)
        return got.subset.with_labels(m.domain_key)
    if not info["labels"]:
        raise ValueError(f"method={m.name} needs a mixture (task-label conditioned) teacher; {ctx.run.teacher} is "
                         f"{info['kind']}: pretrain one with `python -m teacher.pretrain kind=mixture dataset=DIR`")
    root, key = m.dataset or info["dataset"]["root"], info["label_key"]
    data = OfflineDataset(root, max_action_dim=ctx.run.max_action_dim, where={key: info["labels"]}, label_key=key)
    return data.with_labels(key, info["labels"])


class ReplayGuidance(GuidedActing):
    """Execution guidance whose prior is the VAE decoder: the action it replayed on the last acting step."""

    def __init__(self, owner, schedule: GuidanceSchedule, num_envs: int):
        super().__init__(None, schedule, num_envs)
        self.owner = owner

    def act(self, indices) -> np.ndarray:
        return self.owner.last_prior[list(indices)].astype(np.float32)


class Distillation:
    """The `distillation` part: the frozen teacher, the source domains (K) and the learned, floored,
    per-domain weighted distillation of the teacher's features into the student's (student/distill.py)."""

    def __init__(self, ctx):
        m, agent = ctx.method, ctx.agent
        self.m, self.agent, self.device = m, agent, ctx.device
        self.teacher = build_teacher(ctx.teacher, ctx.device)  # frozen; never attached or saved
        if self.teacher.act_dim != agent.act_dim:
            raise ValueError(f"the teacher acts in {self.teacher.act_dim} padded dims, this run in {agent.act_dim}; "
                             f"rerun with max_action_dim={self.teacher.act_dim}")
        self.source = source_data(ctx)
        self.names = [str(v) for v in self.source.labels]
        k, fs = len(self.names), agent.wm.rssm.feat_dim
        counts = np.bincount(self.source.label, minlength=k)
        self.fixed = int(np.argmax(counts))  # k* when weights are not learned
        d = m.distill
        self.learned = d.enabled and d.weights == "learned"
        self.distiller = agent.attach("distiller", DomainDistiller(
            self.teacher.rssm.feat_dim, fs, k, conditioned=not self.teacher.labels, layers=d.layers,
            units=d.units, floor=d.floor, weights=d.weights, score_layers=d.score_layers,
            fit=d.get("fit", "weighted"), residual=d.get("residual", False)))
        self.best = None             # (N,) k* per imagination start state, set by the loss term
        # summed on the device and read once per log (no host sync per update)
        self.weight_sum, self.weight_n = torch.zeros(k, device=self.device), 0
        if d.enabled:
            agent.loss_terms.append(self.loss)
        ctx.add_log_source(self.metrics)

    def loss(self, agent, batch: dict, post: dict) -> dict:
        student = agent.wm.rssm.feat(post)  # (B, T, Fs), not detached
        loss, w = self.distiller(teacher_features(self.teacher, batch), student)  # (B, T), (B, T, K)
        w = w.detach()
        self.weight_sum += w.mean((0, 1)).float()
        self.weight_n += 1
        self.best = w.argmax(-1).flatten() if self.learned else None  # (B*T,) like the start states
        return {"distill": self.m.distill.alpha * loss}

    def choose(self, teacher_feat: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
        """teacher_feat (N, K|1, Ft), student (N, Fs) -> k* (N,)."""
        if not self.learned:
            return torch.full(student.shape[:1], self.fixed, device=student.device, dtype=torch.long)
        return self.distiller.weights(teacher_feat, student).argmax(-1)

    def metrics(self) -> dict:
        """Mean domain weights since the last call (Vid2Act Fig. 9)."""
        if not self.weight_n:
            return {}
        w = (self.weight_sum / self.weight_n).tolist()
        self.weight_sum, self.weight_n = torch.zeros_like(self.weight_sum), 0
        return {f"distill/weight_{name}": v for name, v in zip(self.names, w)}


class ActionReplay:
    """The `action_replay` part: a conditional VAE on the distilled teacher features of the source data
    (student/vae.py), trained with the world model; on acting steps the teacher filters the real observations
    and the VAE replays an action for k* (the guidance prior's action); optionally the actor's extra input."""

    def __init__(self, ctx):
        m, agent = ctx.method, ctx.agent
        self.d = ctx.artifacts["distillation"]
        self.m, self.agent, self.device = m, agent, ctx.device
        a = m.action_replay
        self.vae = agent.attach("action_vae", ActionVAE(agent.wm.rssm.feat_dim, ctx.spec.action_mask,
                                                        len(self.d.names), a.units, a.hidden))
        self.rng = ctx.rng("vid2act", ctx.run.seed + 11)
        self.last_prior = None       # (N, A) the VAE's action on the last acting step (guidance prior)
        self.vae_log = []
        agent.loss_terms.append(self.loss)
        wants_prior = m.get("guidance", False) and m.get("prior", "bc") == "vae"
        if a.get("prior_z", "sample") not in ("sample", "zero"):
            raise ValueError(f"method.action_replay.prior_z={a.prior_z!r}: use sample (a sampled latent) or zero "
                             f"(the decoder's mean action)")
        self.prior_sample = a.get("prior_z", "sample") == "sample"  # False: the prior acts with the mean action
        if m.actor_input or wants_prior:
            agent.acting_observers.append(self.observe)
        if m.actor_input:
            agent.set_actor_input(self)
        if a.get("pretrain_steps", 0) and (m.actor_input or wants_prior) \
                and not ctx.resuming:  # a resumed run has its trained VAE in the checkpoint
            ctx.log_once(self.pretrain_vae(a.pretrain_steps, ctx.run.wm_opt))
        ctx.add_log_source(self.metrics)

    # ---- world-model loss term -----------------------------------------------------------------
    def loss(self, agent, batch: dict, post: dict) -> dict:
        freeze = self.m.action_replay.freeze_after  # 0: trained all along (authors' code); N: frozen after N updates
        if freeze and agent.updates >= freeze:
            return {}
        return {"action_replay": self.m.action_replay.beta * self.vae_loss()}

    def vae_loss(self) -> torch.Tensor:
        """The VAE on a source batch: distilled teacher feature at t (for the source's own domain) -> the
        action taken there (stored at t + 1)."""
        a = self.m.action_replay
        teacher, sb = self.d.teacher, self.d.source.sample(a.batch, a.length, self.rng)
        t = {k: torch.as_tensor(sb[k]).to(self.device) for k in ("image", "action", "is_first", "label", "action_mask")}
        b, n = t["is_first"].shape
        with torch.no_grad():
            tf = teacher_features(teacher, t, labels=t["label"] if teacher.labels else None)  # (B, T, 1, Ft)
            d = self.d.distiller.distilled(tf)  # (B, T, K, Fs)
            s = d.gather(2, t["label"][:, None, None, None].expand(b, n, 1, d.shape[-1])).squeeze(2)  # (B, T, Fs)
        label = t["label"][:, None].expand(b, n - 1)
        mask = t["action_mask"][:, None].expand(b, n - 1, -1)  # the source's native dims
        loss, metrics = self.vae.loss(s[:, :-1].flatten(0, 1), t["action"][:, 1:].flatten(0, 1), label.flatten(),
                                      valid=~t["is_first"][:, 1:].flatten(), mask=mask.flatten(0, 1))
        self.vae_log.append({k: v.detach().float() for k, v in metrics.items()})  # 0-dim tensors
        return loss

    def pretrain_vae(self, steps: int, opt_cfg) -> dict:
        """Train the VAE alone on source data before the first acting step, so that a VAE guidance prior
        replays trained actions from the start (GSA trains its BC prior up front in the same way), with the
        world model's optimiser settings `opt_cfg`. The student, the distiller and the teacher are not
        changed. Returns the log row {vae/pretrain_first_mse, vae/pretrain_final_mse}."""
        log.info("training the action-replay VAE on the source data for %d updates before acting", steps)
        opt = Optimizer(self.vae.parameters(), opt_cfg)
        for _ in range(steps):
            opt.step(self.vae_loss())
        mse = torch.stack([r["vae/mse"] for r in self.vae_log]).tolist()
        self.vae_log = []
        return {"vae/pretrain_first_mse": mse[0], "vae/pretrain_final_mse": float(np.mean(mse[-10:]))}

    # ---- the actor's extra input and acting ------------------------------------------------------
    @property
    def extra_dim(self) -> int:
        return self.vae.hidden_dim

    def imagined(self, feat: torch.Tensor) -> torch.Tensor:
        """(..., N, Fs) -> decoder features (..., N, X) for each start state's k*."""
        n = feat.shape[-2]
        best = self.d.best if self.d.best is not None and len(self.d.best) == n else \
            torch.full((n,), self.d.fixed, device=feat.device, dtype=torch.long)
        return self.vae.features(feat, best.expand(feat.shape[:-1]))

    def acting(self, latent: dict) -> torch.Tensor:
        return self.vae.features(self.agent.wm.rssm.feat(latent), latent["domain"].long())  # (N, X)

    @torch.no_grad()
    def observe(self, x: dict, is_first: torch.Tensor, state: dict, latent: dict) -> dict:
        """One acting step of the frozen teacher on the real observations, with its own state per env (and
        per label for a mixture teacher); chooses k* and the VAE's replayed action."""
        teacher, n = self.d.teacher, is_first.shape[0]
        kt = max(teacher.labels, 1)
        if "t_deter" in state:  # (N, kt, ...) -> (kt * N, ...), label-major
            prev = {k: state[f"t_{k}"].transpose(0, 1).flatten(0, 1) for k in ("deter", "stoch")}
        else:
            prev = teacher.rssm.initial(kt * n, is_first.device)
        cond = F.one_hot(torch.arange(kt, device=is_first.device).repeat_interleave(n), kt).float() \
            if teacher.labels else None  # (kt * N, K)
        embed = teacher.encoder({k: v.repeat(kt, *[1] * (v.dim() - 1)) for k, v in x.items()}, cond)
        new = teacher.rssm.obs_step(prev, state["action"].repeat(kt, 1), embed, is_first.repeat(kt), cond)
        student = self.agent.wm.rssm.feat(latent)  # (N, Fs)
        tfeat = teacher.rssm.feat(new).reshape(kt, n, -1).transpose(0, 1)  # (N, kt, Ft)
        domain = self.d.choose(tfeat, student)
        self.last_prior = self.vae.act(student, domain, self.prior_sample).float().cpu().numpy()  # (N, A)
        carry = {f"t_{k}": new[k].reshape(kt, n, *new[k].shape[1:]).transpose(0, 1) for k in ("deter", "stoch")}
        return {**carry, "domain": domain}

    # ---- logs --------------------------------------------------------------------------------
    def metrics(self) -> dict:
        """The VAE's losses since the last call."""
        out, self.vae_log = (mean_metrics(self.vae_log) if self.vae_log else {}), []
        return out


def attach_distillation(ctx) -> None:
    """The `distillation` part (ctx: transfer's Context); provides ctx.artifacts["distillation"]."""
    ctx.artifacts["distillation"] = Distillation(ctx)


def attach_action_replay(ctx) -> None:
    """The `action_replay` part (method.action_replay.enabled); provides ctx.artifacts["action_replay"]."""
    ctx.artifacts["action_replay"] = ActionReplay(ctx)


def attach_prior(ctx) -> None:
    """The `vae_prior` part: the VAE decoder's replayed action as the guidance prior."""
    owner = ctx.artifacts["action_replay"]
    ctx.artifacts["prior"] = lambda schedule, n: ReplayGuidance(owner, schedule, n)
