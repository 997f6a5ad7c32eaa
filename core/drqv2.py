"""DrQ-v2 (Yarats et al. 2021, "Mastering Visual Continuous Control: Improved Data-Augmented RL"): a model-free
pixel actor-critic, the second agent type the one training loop runs (method=drqv2, method.agent=drqv2).

Owns: `Encoder` (k stacked frames (3k, R, R) -> conv 3x3 stride 2, then 3 x conv 3x3 stride 1, 32 channels,
ReLU, flattened), `Actor` (trunk Linear-LayerNorm-Tanh to `feature_dim`, MLP -> tanh mean; padded action dims
exactly 0), `Critic` (its own trunk, two Q heads), `transitions` (n-step transitions from replay windows) and
`DrQV2Agent`, which has the interface of core.agent.Agent that the loop and transfer.evaluate use:
initial_state(n), policy(obs, state, explore) -> (actions (N, A) np, state), train_step(batch) -> {name: 0-dim
tensor}, `updates`, full_state() / load_full_state(). The acting frame stack rides in the policy state.

The paper's frames are 84 x 84; here they are the env's image size (env.image_size, 64 by default), so the encoder
output is 32 x 25 x 25 instead of 32 x 35 x 35. Exploration: a truncated normal around the actor's mean with a
std that decays linearly in ENVIRONMENT steps (frames) read from `clock` (the loop's step, set by transfer/build.py);
the critic's and actor's sampled actions clip the noise at `std_clip`. Evaluation with explore=False uses the mean.
`model.bf16` (auto: on where the device computes bf16 natively, core.runtime.native_bf16) runs acting and the
updates under bf16 autocast, but for the last layer of every head: Q values, actions, losses and TD targets are fp32.

Replay windows (core/replay.py): image, action, reward, is_first, is_last, is_terminal of (B, T) consecutive
stored steps, where action[t] is the action that LED TO observation t and reward[t] came with observation t. With
k stacked frames and n-step returns (T >= k + n), each window gives one transition anchored at t0 = k - 1:
  s      = frames t0-k+1 .. t0 (the stack the actor saw),  a = action[t0 + 1] (taken after seeing s),
  m      = the steps i in 1..n with no is_first in (t0, t0 + i] (n unless an episode starts within the window),
  return = sum_{i=1..m} gamma^(i-1) reward[t0 + i],
  s'     = frames t0+m-k+1 .. t0+m,  discount = gamma^m (0 if is_terminal[t0 + m]: no bootstrap).
m = 0 (observation t0 ends its episode: action[t0 + 1] is the reset's zero) is no transition: weight 0 in the
critic loss. A stack never reaches across an episode start: frames before the episode's first observation repeat
that observation, as the acting stack does after is_first.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from core.ops import linear_schedule, random_shift
from core.runtime import bf16_autocast, resolve_bf16, section


def init_weights(module: nn.Module) -> None:
    """DrQ-v2's init: orthogonal weights (ReLU gain for convolutions), zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.orthogonal_(m.weight, nn.init.calculate_gain("relu") if isinstance(m, nn.Conv2d) else 1.0)
            nn.init.zeros_(m.bias)


class OutputLinear(nn.Linear):
    """A head's last layer: fp32 even under bf16 autocast (Q values near 100 have a bf16 step of 0.5, as large as
    a step's reward)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


def head(inp: int, out: int, hidden: int) -> nn.Sequential:
    """Linear -> ReLU -> Linear -> ReLU -> Linear: hidden x 2 MLP of the actor and of each Q head."""
    return nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), OutputLinear(hidden, out))


def trunk(inp: int, features: int) -> nn.Sequential:
    """Linear -> LayerNorm -> Tanh: (N, E) encoder output -> (N, F) features."""
    return nn.Sequential(nn.Linear(inp, features), nn.LayerNorm(features), nn.Tanh())


class Encoder(nn.Module):
    """(N, 3k, R, R) uint8 stacked frames -> (N, E) flattened conv features (E = 32 x 25 x 25 at R = 64)."""

    def __init__(self, frames: int, image_size: int, channels: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3 * frames, channels, 3, stride=2), nn.ReLU(inplace=True),
                                 *[m for _ in range(3) for m in (nn.Conv2d(channels, channels, 3), nn.ReLU(inplace=True))],
                                 nn.Flatten())
        init_weights(self)
        with torch.no_grad():
            self.out_dim = self.net(torch.zeros(1, 3 * frames, image_size, image_size)).shape[1]  # E

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div_(255.0).sub_(0.5)  # [-0.5, 0.5]
        return self.net(x.contiguous(memory_format=torch.channels_last))  # channels_last: faster convs on CPU


class Actor(nn.Module):
    """(N, E) encoder features -> (N, A) tanh mean, padded dims exactly 0."""

    def __init__(self, inp: int, mask: torch.Tensor, features: int, hidden: int):
        super().__init__()
        self.register_buffer("mask", mask)  # (A,)
        self.trunk, self.policy = trunk(inp, features), head(features, len(mask), hidden)
        init_weights(self)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.policy(self.trunk(h))) * self.mask

    def sample(self, mean: torch.Tensor, std: float, clip: float | None = None) -> torch.Tensor:
        """A truncated-normal action around `mean` (N, A): noise std * N(0, 1), clipped at +-clip when given,
        the sum clamped into (-1, 1) with a straight-through gradient to `mean`; padded dims 0."""
        noise = torch.randn_like(mean) * std
        if clip is not None:
            noise = noise.clamp(-clip, clip)
        x = mean + noise
        x = x - x.detach() + x.detach().clamp(-1 + 1e-6, 1 - 1e-6)
        return x * self.mask


class Critic(nn.Module):
    """(N, E) encoder features and (N, A) actions -> (N, 2) values of the two Q heads."""

    def __init__(self, inp: int, act_dim: int, features: int, hidden: int):
        super().__init__()
        self.trunk = trunk(inp, features)
        self.q1, self.q2 = head(features + act_dim, 1, hidden), head(features + act_dim, 1, hidden)
        init_weights(self)

    def forward(self, h: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.trunk(h), action], -1)  # (N, F + A)
        return torch.cat([self.q1(x), self.q2(x)], -1)  # (N, 2)


def stack_at(images: torch.Tensor, start: torch.Tensor, end: torch.Tensor, frames: int) -> torch.Tensor:
    """The k-frame stacks ending at window index `end` (B,): images (B, T, R, R, 3), start (B, T) the index of
    the episode's first observation at or before each t (0 if none in the window). Frames before that start
    repeat it. Returns (B, 3k, R, R), oldest frame first."""
    b = images.shape[0]
    idx = end[:, None] + torch.arange(1 - frames, 1, device=end.device)  # (B, k)
    idx = torch.maximum(idx, start.gather(1, end[:, None])).clamp(min=0)
    stack = images[torch.arange(b, device=end.device)[:, None], idx]    # (B, k, R, R, 3)
    return stack.permute(0, 1, 4, 2, 3).flatten(1, 2)                  # (B, 3k, R, R)


def transitions(batch: dict, frames: int, nstep: int, gamma: float) -> dict:
    """One n-step transition per window of a replay batch (leaves (B, T, ...), T >= k + n; the indexing is in
    the module doc). Returns obs, next_obs (B, 3k, R, R) uint8, action (B, A), ret, discount, valid (B,)."""
    t = batch["reward"].shape[1]
    if t < frames + nstep:
        raise ValueError(f"DrQ-v2 needs replay windows of at least frames + nstep = {frames + nstep} steps, got "
                         f"{t}: set trainer.batch_length={frames + nstep}")
    is_first = batch["is_first"].bool()                                   # (B, T)
    pos = torch.arange(t, device=is_first.device)
    start = torch.cummax(torch.where(is_first, pos, 0), 1).values        # (B, T) first obs of t's episode
    t0 = frames - 1
    same = start[:, t0 + 1: t0 + nstep + 1] <= t0                        # (B, n) step i still in s's episode
    m = same.sum(1)                                                       # (B,)
    powers = gamma ** torch.arange(nstep, device=pos.device, dtype=torch.float32)   # (n,)
    ret = (batch["reward"][:, t0 + 1: t0 + nstep + 1].float() * same * powers).sum(1)  # (B,)
    end = t0 + m                                                          # (B,) index of s'
    terminal = batch["is_terminal"].bool().gather(1, end[:, None])[:, 0]  # (B,)
    discount = gamma ** m.float() * (~terminal).float()
    images = batch["image"]
    return dict(obs=stack_at(images, start, torch.full_like(m, t0), frames), next_obs=stack_at(images, start, end, frames),
                action=batch["action"][:, t0 + 1].float(), ret=ret, discount=discount, valid=(m > 0).float())


class DrQV2Agent(nn.Module):
    """Encoder, actor, critic and target critic, their Adam optimisers, acting and one update (module doc)."""

    def __init__(self, image_shape, action_mask: np.ndarray, cfg, device: torch.device, bf16=False):
        """image_shape (R, R, 3); action_mask (A,); cfg: method.drqv2 (configs/method/drqv2.yaml); bf16: model.bf16
        (true / false / auto)."""
        super().__init__()
        self.cfg, self.device, self.bf16 = cfg, device, resolve_bf16(bf16, device)
        mask = torch.as_tensor(np.asarray(action_mask, np.float32))
        self.act_dim, self.frames, self.image_size = len(mask), int(cfg.frames), int(image_shape[0])
        self.encoder = Encoder(self.frames, image_shape[0], cfg.channels)
        self.actor = Actor(self.encoder.out_dim, mask, cfg.feature_dim, cfg.hidden)
        self.critic = Critic(self.encoder.out_dim, self.act_dim, cfg.feature_dim, cfg.hidden)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.to(device)
        self.encoder_opt = torch.optim.Adam(self.encoder.parameters(), lr=cfg.lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr)
        self.clock = lambda: 0  # () -> env steps (frames) so far; transfer/build.py points it at the loop's step
        self.updates = 0
        self.stopwatch = None  # a core.runtime.Stopwatch (set by the loop): critic / actor wall time

    def std(self) -> float:
        """The exploration std at the clock's env step: linear(initial -> final over `duration` frames)."""
        s = self.cfg.std_schedule
        return linear_schedule(s.initial, s.final, s.duration, self.clock())

    # ---- acting ------------------------------------------------------------------------------
    def initial_state(self, n: int) -> dict:
        r = self.image_size
        return {"stack": torch.zeros(n, 3 * self.frames, r, r, dtype=torch.uint8, device=self.device),  # (N, 3k, R, R)
                "action": torch.zeros(n, self.act_dim, device=self.device)}  # (N, A): the loop stores what ran

    @torch.no_grad()
    def policy(self, obs: dict, state: dict, explore: bool = True) -> tuple[np.ndarray, dict]:
        """obs: image (N, R, R, 3) uint8 and is_first (N,); state from initial_state / the last call (its frame
        stack restarts with the new frame repeated where is_first). Returns padded actions np (N, A), new state."""
        frame = torch.as_tensor(np.asarray(obs["image"])).to(self.device).permute(0, 3, 1, 2)  # (N, 3, R, R)
        first = torch.as_tensor(np.asarray(obs["is_first"]), device=self.device)[:, None, None, None]
        stack = torch.where(first, frame.repeat(1, self.frames, 1, 1), torch.cat([state["stack"][:, 3:], frame], 1))
        with bf16_autocast(self.device, self.bf16):
            mean = self.actor(self.encoder(stack))                                           # (N, A) fp32
        action = self.actor.sample(mean, self.std()) if explore else mean
        return action.cpu().numpy(), {"stack": stack, "action": action}

    def imagined_return(self, start: dict, steps: int) -> None:
        """No world model, nothing imagined (Agent.imagined_return): the loop logs no eval/imagined_return."""
        return None

    # ---- learning ----------------------------------------------------------------------------
    def train_step(self, batch: dict) -> dict:
        """One critic (and encoder) update, one actor update on detached features, one EMA step of the target
        critic. batch leaves (B, T, ...). Returns {name: 0-dim float32 tensor on the agent's device}."""
        with section(self.stopwatch, "critic"), bf16_autocast(self.device, self.bf16):
            c = self.cfg
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            tr = transitions(batch, self.frames, c.nstep, c.gamma)
            action = tr["action"] * self.actor.mask                                  # (B, A), padded dims 0
            std = self.std()
            h = self.encoder(random_shift(tr["obs"], c.pad))                         # (B, E)
            with torch.no_grad():
                h_next = self.encoder(random_shift(tr["next_obs"], c.pad))           # (B, E)
                next_action = self.actor.sample(self.actor(h_next), std, c.std_clip)
                target = tr["ret"] + tr["discount"] * self.critic_target(h_next, next_action).min(-1).values  # (B,)
            q = self.critic(h, action)                                               # (B, 2)
            valid = tr["valid"]
            critic_loss = (((q - target[:, None]) ** 2).sum(-1) * valid).sum() / valid.sum().clamp(min=1)
            self.encoder_opt.zero_grad(set_to_none=True)
            self.critic_opt.zero_grad(set_to_none=True)
            critic_loss.backward()
            self.critic_opt.step()
            self.encoder_opt.step()

        with section(self.stopwatch, "actor"), bf16_autocast(self.device, self.bf16):
            h = h.detach()  # the encoder learns through the critic loss only
            actor_loss = -self.critic(h, self.actor.sample(self.actor(h), std, c.std_clip)).min(-1).values.mean()
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_opt.step()
            self.update_target()
        self.updates += 1
        metrics = dict(critic_loss=critic_loss, actor_loss=actor_loss, critic_q1=q[:, 0].mean(),
                       critic_q2=q[:, 1].mean(), critic_target_q=target.mean(), nstep_return=tr["ret"].mean(),
                       valid_share=valid.mean(), std=std)
        return {k: torch.as_tensor(v, device=self.device).detach().float().reshape(()) for k, v in metrics.items()}

    @torch.no_grad()
    def update_target(self):
        """target = (1 - tau) * target + tau * online, for every parameter of the critic."""
        for t, p in zip(self.critic_target.parameters(), self.critic.parameters()):
            t.lerp_(p, self.cfg.tau)

    # ---- persistence -------------------------------------------------------------------------
    def full_state(self) -> dict:
        return dict(model=self.state_dict(), encoder_opt=self.encoder_opt.state_dict(),
                    actor_opt=self.actor_opt.state_dict(), critic_opt=self.critic_opt.state_dict(),
                    updates=self.updates)

    def load_full_state(self, state: dict):
        self.load_state_dict(state["model"])
        for name in ("encoder_opt", "actor_opt", "critic_opt"):
            getattr(self, name).load_state_dict(state[name])
        self.updates = state["updates"]
