"""Per-run diagnostics of a finished (or checkpointed) transfer run, written to RUN_DIR/diagnostics.json:

    python -m transfer.diagnose RUN_DIR [RUN_DIR ...] [--dataset DIR] [--episodes 10]

- retrieval purity (runs with retrieved.json): the share of retrieved trajectories of the target task
  and of the target's embodiment;
- the guidance prior acting alone (runs with guidance and a checkpoint; GSA's BC prior or the hybrid's
  VAE decoder, `prior_kind`): success at the last step (Meta-World's score), success at any step and
  return over `--episodes` evaluation episodes, the prior acting whole episodes;
- guidance: the guided fraction of acting steps in the first and the last logged interval;
- training episodes: how many, how many succeeded (at any step), and how many of those the prior took part in
  (train/guided > 0; null for runs that log no train/guided);
- the reward head on successful episodes: the target task's successful episodes in the offline dataset
  (recorded rewards; the world model never saw them) filtered by the run's world model: R^2 and
  correlation of predicted against real per-step rewards, and the mean predicted against real return;
- the learned actor on the same episodes (runs whose actor acts on world-model features alone): its
  deterministic actions on the experts' states against the experts' (MSE, sign agreement, mean per
  dim), and the return the world model predicts for it from their first frames (policy_imagined_return;
  far above the real final return = the actor exploits errors of the model), acting as the run's last final
  evaluation did (policy_final_sampled 1: sampled actions, 0: the actor's mean);
- the run's own last 10 unguided training episodes (from its replay): their real return against the return the
  reward head gives their posterior states, the open-loop prediction from their first frame driven by their
  recorded actions, and the actor imagined from the same frame (own_*: which of the three over-values);
- domain weights (vid2act, hybrid): the source with the highest weight over the last quarter of logs.
The world-model entries are skipped for agents without one (method=drqv2).

The dataset is --dataset, else the run's `diagnostics.dataset`, else `method.dataset`, else the one its
teacher was pretrained on; without one, the dataset-based entries are null. Keys are flat scalars
(null when not applicable); transfer.report lists them per run.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np
import torch
from omegaconf import OmegaConf

from core import checkpoint
from core.agent import Agent
from core.logger import read_rows

MAX_FIT_EPISODES = 10   # successful target episodes filtered for the reward fit


def run_config(run: pathlib.Path, state: dict | None) -> dict:
    """The run's final composed config: the checkpoint's (it holds the teacher's architecture), else Hydra's."""
    if state is not None:
        return state["config"]
    return OmegaConf.to_container(OmegaConf.load(run / "hydra" / "config.yaml"), resolve=True)


def dataset_root(cfg: dict, given: str | None) -> str | None:
    method = cfg.get("method", {})
    root = given or (cfg.get("diagnostics") or {}).get("dataset") or method.get("dataset")
    if root is None and cfg.get("teacher"):
        from teacher.model import read_teacher
        root = read_teacher(cfg["teacher"])["dataset"]["root"]
    return root


def target_rows(dataset, cfg: dict) -> list[int]:
    suite = cfg["env"]["suite"]
    return [i for i, r in enumerate(dataset.meta) if r.get("task") == cfg["task"] and r.get("suite") == suite]


def target_embodiment(cfg: dict) -> str | None:
    """The target's embodiment when the dataset holds no episode of the task itself (e.g. GSA's
    cheetah_run_hard, whose data are cheetah_run's): the suite's own rule, else its task registry."""
    from envs import suite_module
    module = suite_module(cfg["env"]["suite"])
    if hasattr(module, "embodiment"):
        return module.embodiment(cfg["task"])
    return next((r.embodiment for r in module.tasks(cfg["env"]) if r.task == cfg["task"]), None)


def retrieval_purity(run: pathlib.Path, cfg: dict, dataset) -> dict:
    path = run / "retrieved.json"
    if not path.exists() or dataset is None:
        return {}
    ids = set(json.loads(path.read_text()))
    rows = [r for r in dataset.meta if r["id"] in ids]
    own = [dataset.meta[i] for i in target_rows(dataset, cfg)]
    embodiment = own[0]["embodiment"] if own else target_embodiment(cfg)
    n = max(len(rows), 1)
    return {"retrieval_trajectories": len(rows),
            "retrieval_target_share": sum(r["task"] == cfg["task"] for r in rows) / n,
            "retrieval_embodiment_share": sum(r["embodiment"] == embodiment for r in rows) / n if embodiment else None,
            "dataset_target_trajectories": len(own)}


def prior_alone(run: pathlib.Path, cfg: dict, episodes: int) -> dict:
    """The run's guidance prior (GSA's BC prior, or the hybrid's VAE decoder acting on the world model's
    features) acting alone for whole episodes on the eval envs: the run is rebuilt from its config and
    checkpoint, as `transfer.evaluate` does, and nothing is trained or logged."""
    method = cfg.get("method", {})
    if episodes <= 0 or not method.get("guidance") or not (run / "checkpoint.pt").exists():
        return {}
    from transfer.evaluate import rebuild
    trainer = rebuild(run)
    try:
        out = trainer.evaluate_prior(episodes)
    finally:
        trainer.close()
    return {"prior_kind": method.get("prior", "bc"), "prior_alone_success": out["prior/success_final"],
            "prior_alone_success_any": out["prior/success"], "prior_alone_return": out["prior/return"],
            "prior_alone_episodes": out["prior/episodes"]}


def has_world_model(state: dict) -> bool:
    """Does the checkpoint's agent have a world model (DreamerV3's Agent; DrQ-v2's agent has none)?"""
    return any(k.startswith("wm.") for k in state["agent"]["model"])


def world_model_agent(state: dict, cfg: dict, mask: np.ndarray) -> Agent:
    """A CPU Agent holding only the world model of a run's checkpoint `state` (vid2act's actor is wider)."""
    agent = Agent({"image": (cfg["env"]["image_size"],) * 2 + (3,)}, mask, OmegaConf.create(cfg["model"]), torch.device("cpu"))
    keep = ("encoder", "rssm", "decoder", "reward", "cont")
    agent.load_state_dict({k: v for k, v in state["agent"]["model"].items()
                           if k.startswith("wm.") and k.split(".")[1] in keep}, strict=False)
    return agent


@torch.no_grad()
def posterior_feat(agent: Agent, batch: dict) -> torch.Tensor:
    """batch of image (B, L, R, R, 3), action (B, L, A), is_first (B, L) -> posterior features (B, L, F)."""
    post, _ = agent.wm.observe(batch)
    return agent.wm.rssm.feat(post)


@torch.no_grad()
def predicted_rewards(agent: Agent, batch: dict) -> np.ndarray:
    """The reward head on a batch's posterior states: (B, L)."""
    return agent.wm.predict_reward(posterior_feat(agent, batch)).float().numpy()


def load_actor(agent: Agent, state: dict) -> bool:
    """Load the run's actor into `agent` when it acts on the world-model features alone (not vid2act's)."""
    weights = {k[len("ac.actor."):]: v for k, v in state["agent"]["model"].items() if k.startswith("ac.actor.")}
    own = agent.ac.actor.state_dict()
    if not weights or any(k not in weights or weights[k].shape != v.shape for k, v in own.items()):
        return False
    agent.ac.actor.load_state_dict(weights)
    return True


@torch.no_grad()
def imagined_policy_return(agent: Agent, first: dict, steps: int, samples: int = 8, sampled: bool = False) -> float:
    """The return the world model predicts for the actor from a first frame (`first`: a batch with B=1,
    L=1), imagining `steps` steps with the actor acting on imagined states, its mean action or (sampled)
    an action drawn from it; mean over `samples` imagined rollouts, each from its own posterior sample."""
    post, _ = agent.wm.observe({k: v.expand(samples, *v.shape[1:]) for k, v in first.items()})
    return agent.imagined_return({k: v[:, -1] for k, v in post.items()}, steps, samples=1, sampled=sampled)


def policy_fit(policy: list, expert: list, dims: int) -> dict:
    """The learned actor's deterministic actions against the experts' on the experts' own states,
    native dims only: MSE, agreement of signs where the expert moves (|a| > 0.1), and mean actions."""
    pol, exp = np.concatenate(policy)[:, :dims], np.clip(np.concatenate(expert)[:, :dims], -1, 1)  # (T, native action dims)
    moving = np.abs(exp) > 0.1
    return {"policy_expert_mse": float(((pol - exp) ** 2).mean()),
            "policy_expert_sign": float((np.sign(pol) == np.sign(exp))[moving].mean()) if moving.any() else None,
            "policy_action_mean": [round(float(x), 3) for x in pol.mean(0)],
            "expert_action_mean": [round(float(x), 3) for x in exp.mean(0)]}


def reward_fit(state: dict | None, cfg: dict, dataset, sampled: bool = False) -> dict:
    """The run's reward head (from its checkpoint `state`) on the target task's successful offline
    episodes (rewards recorded), and its actor's actions on the same states against the experts'; the
    imagined return is that of the policy the run's last final evaluation used (`sampled` or the mean)."""
    if dataset is None or state is None or not has_world_model(state):
        return {}  # e.g. method=drqv2: a model-free agent, nothing to filter the episodes with
    rows = [i for i in target_rows(dataset, cfg) if dataset.meta[i].get("success") and dataset.meta[i].get("has_reward")]
    rows = sorted(rows, key=lambda i: -dataset.meta[i].get("episode_return", 0.0))[:MAX_FIT_EPISODES]
    if not rows:
        return {"reward_fit_episodes": 0}
    a = int(cfg["max_action_dim"])
    mask = np.zeros(a, np.float32)
    mask[: dataset.meta[rows[0]]["action_dim"]] = 1
    agent = world_model_agent(state, cfg, mask)
    with_actor = load_actor(agent, state)
    real, pred, acts, expert, imagined = [], [], [], [], []
    for i in rows:
        traj = dataset.read(i, with_reward=True)
        action = np.zeros((len(traj["action"]), a), np.float32)
        action[:, : traj["action"].shape[1]] = traj["action"]        # (L, A) padded
        is_first = np.zeros(len(action), bool)
        is_first[0] = True
        batch = {"image": torch.as_tensor(traj["image"][None]), "action": torch.as_tensor(action[None]),
                 "is_first": torch.as_tensor(is_first[None])}        # (1, L, ...)
        feat = posterior_feat(agent, batch)                               # (1, L, F)
        with torch.no_grad():
            real.append(traj["reward"][1:]), pred.append(agent.wm.predict_reward(feat)[0, 1:].float().numpy())  # (L-1,)
            if with_actor:  # the action taken AFTER observing frame t is action[t + 1] (first row zero)
                acts.append(agent.ac.actor.mode(agent.ac.actor(feat)[0])[0, :-1].float().numpy())
                expert.append(action[1:])
                imagined.append(imagined_policy_return(agent, {k: v[:, :1] for k, v in batch.items()}, len(action) - 1,
                                                      sampled=sampled))
    r, p = np.concatenate(real), np.concatenate(pred)
    r2 = 1.0 - float(((r - p) ** 2).mean() / max(r.var(), 1e-12))
    corr = float(np.corrcoef(r, p)[0, 1]) if r.std() > 0 and p.std() > 0 else None
    return {"reward_fit_episodes": len(rows), "reward_fit_r2": r2, "reward_fit_corr": corr,
            "reward_fit_pred_return": float(np.mean([x.sum() for x in pred])),
            "reward_fit_real_return": float(np.mean([x.sum() for x in real])),
            **(policy_fit(acts, expert, int(mask.sum())) if with_actor else {}),
            **({"policy_imagined_return": float(np.mean(imagined))} if with_actor else {})}


def replay_episodes(run: pathlib.Path) -> list[dict]:
    """The run's complete training episodes from its replay files (stream 0, in order; an episode may span files
    split at a checkpoint), each {image (L, R, R, 3), action (L, A), reward (L,), is_first (L,)}."""
    files = sorted((run / "replay").glob("s00-*.npz"))
    if not files:
        return []
    keys = ("image", "action", "reward", "is_first", "is_last")
    parts = []
    for f in files:
        with np.load(f) as z:
            parts.append({k: z[k] for k in keys})
    steps = {k: np.concatenate([p[k] for p in parts]) for k in keys}  # (N, ...)
    starts = np.flatnonzero(steps["is_first"])
    ends = np.flatnonzero(steps["is_last"])
    episodes = []
    for a in starts:
        b = ends[ends >= a]
        if len(b) and not steps["is_first"][a + 1: b[0] + 1].any():  # reset ... is_last, no restart between
            episodes.append({k: steps[k][a: b[0] + 1] for k in keys[:4]})
    return episodes


@torch.no_grad()
def openloop_rewards(agent: Agent, batch: dict, samples: int = 4) -> np.ndarray:
    """The reward head along the world model's open-loop prediction of a recorded episode (batch B=1): its first
    frame observed, then the prior only, driven by the recorded actions; mean over `samples` rollouts: (L-1,)."""
    from teacher.openloop import rollout
    states = rollout(agent.wm, {k: v.expand(samples, *v.shape[1:]) for k, v in batch.items()}, context=1)  # (S, L, ...)
    return agent.wm.predict_reward(agent.wm.rssm.feat(states))[:, 1:].float().mean(0).numpy()


def own_episodes(run: pathlib.Path, state: dict | None, cfg: dict, sampled: bool, n: int = 10,
                 unguided: bool = True) -> dict:
    """Where the model's over-valuation of the actor comes from, on the run's own last `n` training episodes that
    the guidance prior took no part in (the replay's, matched from the end to the logged episodes by return):
    their real return; the reward head on their posterior states (own_filtered_return: does it value what it
    saw?); along the open-loop prediction from their first frame with the recorded actions (own_openloop_return:
    does the dynamics model predict where those actions lead?); and the actor imagined from the same first
    frames (own_imagined_return). Filtered ~ real, open-loop ~ real but imagined >> real: the actor drives
    imagination where real actions do not go; open-loop >> real: the dynamics err on the actor's real actions."""
    if state is None or not has_world_model(state) or cfg["trainer"].get("envs", 1) != 1:
        return {}
    episodes = replay_episodes(run)
    logged = [r for r in read_rows(run) if "train/return" in r]
    same = lambda ep, row: np.isclose(float(ep["reward"].sum()), row["train/return"], rtol=1e-3, atol=1e-2)
    # a run read while it trains may have written one more episode than it logged, or the other way round
    cut = next(((a, b) for a, b in ((0, 0), (1, 0), (0, 1), (2, 0), (0, 2))
                if len(episodes) > a and len(logged) > b and same(episodes[-1 - a], logged[-1 - b])), (0, 0))
    chosen = []
    for ep, row in zip(reversed(episodes[:len(episodes) - cut[0]]), reversed(logged[:len(logged) - cut[1]])):
        if not same(ep, row):
            break  # the two lists no longer line up
        if not unguided or row.get("train/guided", 0.0) == 0.0:
            chosen.append(ep)
        if len(chosen) == n:
            break
    if not chosen:
        return {"own_episodes": 0}
    mask = (np.abs(np.concatenate([e["action"] for e in chosen])).max(0) > 0).astype(np.float32)  # (A,) native dims
    agent = world_model_agent(state, cfg, mask)
    if not load_actor(agent, state):
        return {"own_episodes": 0}
    with torch.random.fork_rng():  # the same numbers on every call (the rollouts sample), the caller's stream kept
        torch.manual_seed(0)
        returns = np.array([own_returns(agent, ep, sampled) for ep in chosen])  # (n, 4)
    real, filtered, openloop, imagined = returns.mean(0)
    return {"own_episodes": len(chosen), "own_real_return": real, "own_filtered_return": filtered,
            "own_openloop_return": openloop, "own_imagined_return": imagined}


def own_returns(agent: Agent, ep: dict, sampled: bool) -> tuple[float, float, float, float]:
    """One recorded episode's real return and the model's three returns for it (see own_episodes)."""
    batch = {k: torch.as_tensor(ep[k][None]) for k in ("image", "action", "is_first")}  # (1, L, ...)
    first = {k: v[:, :1] for k, v in batch.items()}
    return (float(ep["reward"][1:].sum()), float(predicted_rewards(agent, batch)[0, 1:].sum()),
            float(openloop_rewards(agent, batch).sum()),
            imagined_policy_return(agent, first, len(ep["reward"]) - 1, sampled=sampled))


def from_metrics(run: pathlib.Path) -> dict:
    rows = read_rows(run)
    out = {}
    final = [r for r in rows if "final/return" in r]
    if final:  # real, to set against policy_imagined_return (same policy: sampled actions or the mean)
        out.update(policy_final_return=final[-1]["final/return"], policy_final_sampled=final[-1].get("final/sampled", 0.0))
    start = [r for r in rows if "prior/success_final" in r]
    if start:  # the guidance prior acting alone before the run (trainer.prior_eval_episodes)
        out.update(prior_start_success=start[0]["prior/success_final"], prior_start_return=start[0]["prior/return"])
    guided = [r["guidance/fraction"] for r in rows if "guidance/fraction" in r]
    if guided:
        out.update(guided_fraction_first=guided[0], guided_fraction_last=guided[-1],
                   guided_fraction_total=[r["guidance/fraction_total"] for r in rows if "guidance/fraction_total" in r][-1])
    episodes = [r for r in rows if "train/success" in r]
    if episodes:  # successful (at any step) training episodes; guided: the prior took some of its steps
        won = [r for r in episodes if r["train/success"] > 0]
        logged = any("train/guided" in r for r in episodes)  # runs with guidance (and this version of the loop)
        out.update(train_episodes=len(episodes), train_successes=len(won),
                   train_successes_guided=sum(r.get("train/guided", 0.0) > 0 for r in won) if logged else None)
    weights = [r for r in rows if any(k.startswith("distill/weight_") for k in r)]
    if weights:
        last = weights[-max(len(weights) // 4, 1):]
        names = sorted({k for r in last for k in r if k.startswith("distill/weight_")})
        means = {k[len("distill/weight_"):]: float(np.mean([r[k] for r in last if k in r])) for k in names}
        top = max(means, key=means.get)
        out.update(weight_top=top, weight_top_value=means[top])
    return out


def diagnose(run_dir, dataset: str | None = None, episodes: int = 10) -> dict:
    from teacher.data.dataset import OfflineDataset
    run = pathlib.Path(run_dir)
    ckpt = run / "checkpoint.pt"
    state = checkpoint.load(ckpt) if ckpt.exists() else None  # read once: config and world-model weights
    cfg = run_config(run, state)
    root = dataset_root(cfg, dataset)
    gone = bool(root) and not dataset and not pathlib.Path(root).exists()
    if gone:  # the run's own dataset moved or was deleted: diagnose the rest (--dataset DIR names it explicitly)
        print(f"warning: {run}: the run's dataset {root} is gone; retrieval purity, the prior alone (rebuilding the "
              "run reads the data) and the reward fit are left out (pass --dataset DIR to compute them)",
              file=sys.stderr, flush=True)
        root = None
    data = OfflineDataset(root, max_action_dim=cfg["max_action_dim"]) if root else None
    out = {"dataset": str(root) if root else None}
    for part in (retrieval_purity(run, cfg, data), from_metrics(run), prior_alone(run, cfg, 0 if gone else episodes)):
        out.update(part)
    out.update(reward_fit(state, cfg, data, sampled=bool(out.get("policy_final_sampled"))))
    out.update(own_episodes(run, state, cfg, sampled=bool(out.get("policy_final_sampled"))))
    (run / "diagnostics.json").write_text(json.dumps(out, indent=1))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m transfer.diagnose", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--dataset", help="offline dataset with the target's episodes (default: from the run)")
    p.add_argument("--episodes", type=int, default=10, help="episodes of the guidance prior acting alone (0: skip)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    for run in args.run_dirs:
        print(json.dumps({"run": run, **diagnose(run, args.dataset, args.episodes)}), flush=True)


if __name__ == "__main__":
    main()
