"""Is it the data or the view? GSA's BC prior from pixels against the same recipe on the simulator state
(issue 18: why the prior fails on door-unlock and handle-pull):

    python -m benchmarks.prior_view --task door-unlock --episodes 30 --kinds state pixel --steps 500 2000
        [--sigmas 0.1 0.3 0.5] [--eval-episodes 10] [--out benchmarks/results/prior_view.jsonl]
        [--encoder flat|keypoints] [--lr 1e-4] [--kinds latent --teacher RUN/teacher.pt] [--state-dims 0 1 2 3]
        [--eval-seeds 99000 1234]

1. collects --episodes noisy scripted-expert episodes of the task (Meta-World, the env of configs/env/metaworld.yaml:
   64 x 64 corner2 view, 200 frames, action repeat 2), cycling through --sigmas, keeping both the frames and the
   39-d simulator state of each step;
2. trains on them, once per --kinds:
   - pixel: GSA's prior (student.bc.BCPolicy: 3 stacked frames, 4 stride-2 convs, MLP), random shift (pad 3),
     Adam 1e-4, batch 256, MSE to the executed (noisy) action, as the methods train it;
     --encoder keypoints: the same with student.bc's spatial-softmax encoder (method.bc.encoder=keypoints);
   - state: an MLP (39 -> 256 -> 256 -> 4, ELU, tanh) on the standardised state, Adam 1e-3, batch 256;
   - latent: the same MLP on a frozen pretrained teacher's posterior features (deter + class probabilities),
     filtered over each episode (and step by step while acting): is the world model's representation enough?
3. lets the policy act alone for --eval-episodes on envs with other seeds (other goals and object positions;
   --eval-seeds 99000 1234 also replays the training episodes' own positions), after each number of updates in
   --steps, and appends one JSON row per evaluation to --out.

If the state policy succeeds where the pixel policy fails on the same episodes, the episodes hold enough to
imitate and what is missing is in the view or the pixel network; if both fail, the data are too few.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import time
import warnings

import numpy as np
import torch
from torch import nn

from core.ops import random_shift
from core.world_model import preprocess
from envs.list import suite_config
from envs.metaworld import MetaWorldEnv
from student.bc import BCPolicy, frame_indices, stack_frames, to_channels

A = 4  # Meta-World's native action dim (no padding here)


def env_for(task: str, seed: int) -> MetaWorldEnv:
    cfg = suite_config("metaworld")
    keys = ("action_repeat", "image_size", "episode_frames", "camera")
    return MetaWorldEnv(task, seed, A, **{k: cfg[k] for k in keys if cfg.get(k) is not None})


def collect(task: str, episodes: int, sigmas: list[float], seed: int) -> list[dict]:
    """Noisy-expert episodes: image (L, R, R, 3) uint8, state (L, 39), action (L, A) = the action taken
    AFTER frame t (not the dataset convention), success at the last step."""
    from metaworld.policies import ENV_POLICY_MAP
    warnings.filterwarnings("ignore", "Constant.s. may be too high")
    env, expert, rng, out = env_for(task, seed), ENV_POLICY_MAP[f"{task}-v3"](), np.random.default_rng(seed), []
    try:
        for i in range(episodes):
            sigma, obs = sigmas[i % len(sigmas)], env.reset()
            images, states, actions = [obs["image"]], [env.state.copy()], []
            while not obs["is_last"]:
                clean = np.clip(expert.get_action(env.state), -1, 1)
                action = np.clip(clean + rng.normal(0, sigma, A), -1, 1).astype(np.float32)
                obs = env.step(action)
                actions.append(action), images.append(obs["image"]), states.append(env.state.copy())
            out.append(dict(image=np.stack(images[:-1]), state=np.stack(states[:-1]).astype(np.float32),
                            action=np.stack(actions), success=float(obs["log_success"])))
    finally:
        env.close()
    return out


class StatePolicy(nn.Module):
    def __init__(self, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean)), self.register_buffer("std", torch.as_tensor(std))
        self.net = nn.Sequential(nn.Linear(len(mean), 256), nn.ELU(), nn.Linear(256, 256), nn.ELU(), nn.Linear(256, A))

    def forward(self, state: torch.Tensor) -> torch.Tensor:  # (B, 39) -> (B, A)
        return torch.tanh(self.net((state - self.mean) / self.std))


class LatentFilter:
    """A frozen teacher's posterior features of what a policy sees: deter + the posterior's class probabilities
    (its mean, no sampling noise), (D + S*C,). `episode` filters a whole episode, `step` one frame at a time while
    acting (prev: the action taken before this frame; None starts a new episode)."""

    def __init__(self, path: str):
        from teacher.model import build_teacher, read_teacher
        self.wm = build_teacher(read_teacher(path))
        self.state = None

    def _feat(self, post: dict) -> torch.Tensor:
        return torch.cat([post["deter"], post["logits"].exp().flatten(-2)], -1)

    def _pad(self, action: np.ndarray) -> torch.Tensor:
        out = np.zeros((*action.shape[:-1], self.wm.act_dim), np.float32)
        out[..., :action.shape[-1]] = action
        return torch.as_tensor(out)

    @torch.no_grad()
    def episode(self, images: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """images (L, R, R, 3), actions (L, A) taken after each frame -> (L, F) float32."""
        prev = np.concatenate([np.zeros_like(actions[:1]), actions[:-1]])  # (L, A): the action that led to frame t
        first = torch.zeros(1, len(images), dtype=torch.bool)
        first[0, 0] = True
        post, _ = self.wm.observe(dict(image=torch.as_tensor(images)[None], action=self._pad(prev)[None], is_first=first))
        return self._feat(post)[0].numpy()

    @torch.no_grad()
    def step(self, image: np.ndarray, prev: np.ndarray | None) -> torch.Tensor:
        """One frame (R, R, 3) and the action before it (None at the start) -> (1, F)."""
        first = torch.tensor([prev is None])
        if prev is None:
            self.state = self.wm.rssm.initial(1, "cpu")
            prev = np.zeros(A, np.float32)
        embed = self.wm.embed(preprocess(dict(image=torch.as_tensor(image)[None, None]), self.wm.obs_shapes))[:, 0]
        self.state = self.wm.rssm.obs_step(self.state, self._pad(prev)[None], embed, first)
        return self._feat(self.state)


def train(kind: str, episodes: list[dict], steps: list[int], evaluate, seed: int = 0, batch: int = 256,
          encoder: str = "flat", lr: float | None = None) -> None:
    """Adam updates up to max(steps); calls evaluate(policy, losses) after each count in `steps`."""
    torch.manual_seed(seed)
    rng, shifts = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    images = np.concatenate([e["image"] for e in episodes])    # (N, R, R, 3)
    states = np.concatenate([e["latent" if kind == "latent" else "state"] for e in episodes])  # (N, 39) or (N, F)
    actions = np.concatenate([e["action"] for e in episodes])  # (N, A)
    lengths = np.array([len(e["action"]) for e in episodes])
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    if kind in ("state", "latent"):
        policy, lr = StatePolicy(states.mean(0), states.std(0) + 1e-3), 1e-3
    else:
        policy, lr = BCPolicy(np.ones(A, np.float32), image_size=images.shape[1], encoder=encoder), lr or 1e-4
    opt, losses = torch.optim.Adam(policy.parameters(), lr=lr), []
    for update in range(1, max(steps) + 1):
        traj = rng.integers(len(episodes), size=batch)
        t = (rng.random(batch) * lengths[traj]).astype(np.int64)  # (B,) frame index in its episode
        if kind in ("state", "latent"):
            x = torch.as_tensor(states[offsets[traj] + t])
        else:  # (B, 3k, R, R) stacks ending at t, shifted
            x = random_shift(torch.as_tensor(to_channels(images[offsets[traj, None] + frame_indices(t)])), 3, shifts)
        loss = ((policy(x) - torch.as_tensor(actions[offsets[traj] + t])) ** 2).mean()
        opt.zero_grad(), loss.backward(), opt.step()
        losses.append(float(loss.detach()))
        if update in steps:
            policy.eval()
            evaluate(policy, losses)
            policy.train()


@torch.no_grad()
def act_alone(kind: str, policy: nn.Module, task: str, episodes: int, seed: int, latent: LatentFilter | None = None,
              dims=None) -> dict:
    """The policy acts alone for `episodes` on env seed `seed`; dims: the state entries a state policy reads."""
    env, rows = env_for(task, seed), []
    try:
        for _ in range(episodes):
            obs, frames, ret, any_success, prev = env.reset(), [], 0.0, 0.0, None
            frames.append(obs["image"])
            while not obs["is_last"]:
                if kind == "latent":
                    x = latent.step(obs["image"], prev)
                elif kind == "state":
                    x = torch.as_tensor(env.state.astype(np.float32)[slice(None) if dims is None else dims])[None]
                else:
                    x = torch.as_tensor(stack_frames(np.stack(frames), len(frames) - 1))[None]
                prev = policy(x)[0].numpy()
                obs = env.step(prev)
                frames.append(obs["image"])
                ret += float(obs["reward"])
                any_success = max(any_success, obs["log_success"])
            rows.append((obs["log_success"], any_success, ret))
    finally:
        env.close()
    r = np.array(rows)
    return dict(success=float(r[:, 0].mean()), success_any=float(r[:, 1].mean()), ret=float(r[:, 2].mean()))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.prior_view", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True)
    p.add_argument("--episodes", type=int, default=30)
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.1, 0.3, 0.5])
    p.add_argument("--kinds", nargs="+", choices=["state", "pixel", "latent"], default=["state", "pixel"])
    p.add_argument("--encoder", choices=["flat", "keypoints"], default="flat",
                   help="kind pixel: GSA's flat conv encoder, or keypoints (student.bc.BCPolicy encoder=keypoints)")
    p.add_argument("--lr", type=float, help="kind pixel: Adam's learning rate (default 1e-4, GSA's)")
    p.add_argument("--state-dims", type=int, nargs="+", help="kind state: read only these entries of the 39-d "
                   "state (Meta-World v3: 0-2 hand, 3 gripper, 4-6 object 1, 7-10 its quaternion, 11-17 object 2, 36-38 goal)")
    p.add_argument("--teacher", help="kind latent: the pretrained teacher.pt whose features the policy reads")
    p.add_argument("--steps", type=int, nargs="+", default=[500, 2000], help="evaluate after these update counts")
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--eval-seeds", type=int, nargs="+", default=[99_000],
                   help="env seeds to act on (one row each); the collection seed replays the training episodes' "
                        "first --eval-episodes object positions (does it fit its data, or fail to generalise?)")
    p.add_argument("--seed", type=int, default=1234, help="collection seed (evaluation: 99000, training: 0)")
    p.add_argument("--out", default="benchmarks/results/prior_view.jsonl")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    start = time.time()
    episodes = collect(args.task, args.episodes, args.sigmas, args.seed)
    print(f"collected {len(episodes)} episodes in {time.time() - start:.0f} s; experts' final success "
          f"{np.mean([e['success'] for e in episodes]):.2f}", flush=True)
    if args.state_dims:
        for e in episodes:
            e["state"] = e["state"][:, args.state_dims]
    latent = LatentFilter(args.teacher) if "latent" in args.kinds else None
    if latent is not None:
        for e in episodes:
            e["latent"] = latent.episode(e["image"], e["action"])
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for kind in args.kinds:
        start = time.time()

        def evaluate(policy, losses, kind=kind, start=start):
            extra = {"encoder": args.encoder, "lr": args.lr or 1e-4} if kind == "pixel" else {}
            if kind == "state" and args.state_dims:
                extra = {"state_dims": args.state_dims}
            for seed in args.eval_seeds:
                row = dict(task=args.task, kind=kind, **extra, episodes=args.episodes, sigmas=args.sigmas,
                           steps=len(losses), final_loss=float(np.mean(losses[-20:])), seconds=round(time.time() - start),
                           eval_seed=seed, **act_alone(kind, policy, args.task, args.eval_episodes, seed, latent, args.state_dims))
                print(json.dumps(row), flush=True)
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
        train(kind, episodes, sorted(set(args.steps)), evaluate, encoder=args.encoder, lr=args.lr)


if __name__ == "__main__":
    main()
