"""Domain-selective distillation (Vid2Act Sec. 4.2) from a frozen teacher into the student's world model.

For K source domains, the teacher gives one feature per domain and time step, f^T_k (B, T, K, Ft):
- mixture teacher (Vid2Act): the teacher filters the SAME observation/action sequence with its own
  state once per task label k (never the student's state);
- generalist teacher (hybrid): the label-free teacher filters the sequence once; the domains differ
  through the distiller, which is conditioned on the domain's one-hot.

A distiller g maps teacher features to the student's feature space, d_k = g(f^T_k [, onehot_k]);
weights w_k = softmax_k(score([f^T_k [, onehot_k], f^S])) per time step, each floored at `floor`:

    L_distill = alpha * sum_k max(floor, w_k) * mean_D (f^S - d_k)^2           (B, T)

The student feature f^S is not detached (the distillation shapes the student), as in the authors' code.
The score sees the (frozen) teacher feature, not the distilled one: distilled features all converge to
f^S, so they would carry no signal about which domain fits. `score_layers=0` is the authors' linear
score; with a label-free teacher the domains differ only by their one-hot, and a linear score then
reduces to a per-domain constant, so the hybrid uses a hidden layer (state-dependent weights).
`weights=uniform` replaces the learned w_k by 1/K (the ablation).
`residual=true` (the hybrid, whose student starts as a copy of the teacher) makes the distiller
d_k = f^T_k + g(f^T_k, onehot_k) with g's output layer zeroed: at the start d_k = f^T = f^S, so the
loss starts at 0 instead of pulling the pretrained student towards a random projection of the teacher.
`fit=weighted` (authors) trains the distiller on the weighted loss too, so the domain that first gets
more weight gets a better-fitted distiller, hence a smaller gap and still more weight (in tiny runs the
winner then depends on the seed). `fit=uniform` trains the distiller on the unweighted mean gap
mean_k mean_D (sg(f^S) - d_k)^2 and the student and score on sum_k max(floor, w_k) (f^S - sg(d_k))^2,
so each domain's gap measures only how well its teacher features predict the student.
"""
from __future__ import annotations

import torch
from torch import nn

from core.nets import mlp, zero_last


@torch.no_grad()
def teacher_features(teacher, batch: dict, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Frozen teacher features of a batch (image, action, is_first with leading (B, T)).

    Mixture teacher (teacher.labels = K): (B, T, K, Ft), one filtering per label with the teacher's
    own state, or (B, T, 1, Ft) for the given labels (B,) only. Generalist: (B, T, 1, Ft)."""
    keys = ("image", "action", "is_first")
    k = teacher.labels
    if not k or labels is not None:
        data = {key: batch[key] for key in keys}
        if k:
            data["label"] = labels
        post, _ = teacher.observe(data)
        return teacher.rssm.feat(post)[:, :, None]  # (B, T, 1, Ft)
    b = batch["is_first"].shape[0]
    data = {key: batch[key].repeat(k, *[1] * (batch[key].dim() - 1)) for key in keys}  # (K*B, T, ...), label-major
    data["label"] = torch.arange(k, device=batch["is_first"].device).repeat_interleave(b)  # (K*B,)
    post, _ = teacher.observe(data)
    feat = teacher.rssm.feat(post)  # (K*B, T, Ft)
    return feat.reshape(k, b, *feat.shape[1:]).permute(1, 2, 0, 3)  # (B, T, K, Ft)


class DomainDistiller(nn.Module):
    """Distiller g, domain scorer and the floored, weighted distillation loss (see module doc)."""

    def __init__(self, teacher_dim: int, student_dim: int, domains: int, conditioned: bool,
                 layers: int = 1, units: int = 256, floor: float = 0.1, weights: str = "learned",
                 score_layers: int = 0, fit: str = "weighted", residual: bool = False):
        super().__init__()
        if weights not in ("learned", "uniform"):
            raise ValueError(f"distill.weights={weights!r}: use learned or uniform")
        if fit not in ("weighted", "uniform"):
            raise ValueError(f"distill.fit={fit!r}: use weighted or uniform")
        self.fit_uniform = fit == "uniform"
        if residual and teacher_dim != student_dim:
            raise ValueError(f"distill.residual=true needs equal teacher and student feature sizes (teacher {teacher_dim}, "
                             f"student {student_dim}); set method.distill.residual=false")
        self.residual = residual
        if floor * domains > 1.0 + 1e-6:
            raise ValueError(f"distill.floor={floor} with {domains} domains: the floors sum past 1; lower the floor")
        self.domains, self.conditioned, self.floor, self.learned = domains, conditioned, floor, weights == "learned"
        inp = teacher_dim + (domains if conditioned else 0)
        self.net = mlp(inp, student_dim, layers, units)
        if residual:
            zero_last(self.net)  # d_k = f^T_k at the start
        self.score = mlp(inp + student_dim, 1, score_layers, units)

    def domain_input(self, teacher_feat: torch.Tensor) -> torch.Tensor:
        """(..., K or 1, Ft) -> (..., K, Ft [+ K]); a single teacher feature is shared by every domain."""
        k = self.domains
        x = teacher_feat.expand(*teacher_feat.shape[:-2], k, teacher_feat.shape[-1])
        if self.conditioned:
            eye = torch.eye(k, device=x.device, dtype=x.dtype).expand(*x.shape[:-1], k)  # (..., K, K)
            x = torch.cat([x, eye], -1)
        return x

    def distilled(self, teacher_feat: torch.Tensor) -> torch.Tensor:
        """(..., K or 1, Ft) -> d (..., K, Fs)."""
        x = self.domain_input(teacher_feat)  # (..., K, Ft [+ K])
        return self.net(x) + x[..., :teacher_feat.shape[-1]] if self.residual else self.net(x)

    def weights(self, teacher_feat: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
        """teacher_feat (..., K|1, Ft), student (..., Fs) -> softmax weights (..., K) (before the floor)."""
        x = self.domain_input(teacher_feat)  # (..., K, Ft [+ K])
        if not self.learned:
            return torch.full(x.shape[:-1], 1.0 / self.domains, device=x.device)
        pair = torch.cat([x.detach(), student[..., None, :].expand(*x.shape[:-1], student.shape[-1])], -1)
        return torch.softmax(self.score(pair).squeeze(-1).float(), -1)  # fp32 under bf16 autocast: weights sum to 1

    def forward(self, teacher_feat: torch.Tensor, student: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """teacher_feat (B, T, K|1, Ft), student (B, T, Fs) -> loss (B, T), weights (B, T, K)."""
        d = self.distilled(teacher_feat)  # (B, T, K, Fs)
        w = self.weights(teacher_feat, student)
        if not self.fit_uniform:
            gap = (student[..., None, :] - d).pow(2).mean(-1)  # (B, T, K)
            return (w.clamp(min=self.floor) * gap).sum(-1), w
        gap = (student[..., None, :] - d.detach()).pow(2).mean(-1)       # (B, T, K): student and score
        fit = (student.detach()[..., None, :] - d).pow(2).mean(-1).mean(-1)  # (B, T): the distiller
        return (w.clamp(min=self.floor) * gap).sum(-1) + fit, w
