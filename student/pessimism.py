"""Pessimism in imagination: an uncertainty penalty on imagined rewards (MOPO-style; method.pessimism.scale > 0).

Why: on Meta-World box-close the actor learns to steer imagination into states where the reward head pays far
more than the real env does (imagined return of its own policy 1.7-4.5x the real one, while the model's open-loop
prediction along the real actions stays within 0.6-1.5x; docs/results/noncurated_mw/session17/NOTES.md). The
model is roughly right where the data is and wrong where the actor goes; the actor's objective should count that.

How: an ensemble of K next-state predictors (teacher.data.explore.Disagreement, as Plan2Explore's, trained with
the world model on every batch row) guesses, for each imagined transition (feat_t, a_t), K next stochastic states.
The reward head scores each guess together with the imagined next deterministic state, and the spread of those K
rewards, in reward units (so one scale suits every task), is subtracted from the reward the actor and critic see:

    r~_t = r^(deter_{t+1}, stoch_{t+1}) - scale * std_k r^(deter_{t+1}, stoch^k_{t+1})

Where the data pins the transition down the heads agree and nothing changes; where the actor leaves the data they
disagree and the imagined reward shrinks. scale 0 switches the part off. Logs train/pessimism_spread (mean std
over heads) and train/pessimism_share (the penalty over the mean |imagined reward|).
"""
from __future__ import annotations

import torch

from teacher.data.explore import Disagreement


class Pessimism:
    """The penalised reward (ac.reward_fn) and its log source; `ensemble` trains as a world-model loss term."""

    def __init__(self, ensemble: Disagreement, scale: float):
        self.ensemble, self.scale = ensemble, float(scale)

    def reward(self, wm, feats: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """feats (H+1, N, F), actions (H, N, A) -> penalised rewards (H, N) and metrics {pessimism_spread: mean
        std over heads, pessimism_share: the penalty over the mean |imagined reward|} (0-dim tensors). Gradients
        reach the actions (and states) through the frozen world model like the reward head's own: with dynamics
        backprop the actor is pushed away from uncertain transitions, not only paid less for them."""
        reward = wm.predict_reward(feats[1:])                                       # (H, N)
        guesses = self.ensemble.predict(feats[:-1], actions)                        # (K, H, N, S*C)
        deter = feats[1:, ..., :wm.rssm.deter]                                      # (H, N, D)
        heads = torch.cat([deter.expand(len(guesses), *deter.shape), guesses.to(deter.dtype)], -1)  # (K, H, N, F)
        spread = wm.predict_reward(heads).std(0)                                    # (H, N)
        mean_spread = spread.mean().detach()
        share = self.scale * mean_spread / reward.abs().mean().detach().clamp(min=1e-6)
        return reward - self.scale * spread, {"pessimism_spread": mean_spread, "pessimism_share": share}


def attach(ctx) -> None:
    """The `pessimism` part (ctx: transfer's Context): the next-state ensemble (a world-model loss term, kept in
    checkpoints) and the penalised imagined reward."""
    agent, c = ctx.agent, ctx.method.pessimism
    if not hasattr(agent, "wm"):
        raise ValueError("method.pessimism penalises a world model's imagination; this method's agent has none "
                         "(set method.pessimism.scale=0)")
    if agent.ac.reward_fn is not None:
        raise ValueError("method.pessimism: another component already replaces the imagined reward "
                         "(e.g. method=explore's disagreement); use one of them")
    if agent.wm.reward is None:
        raise ValueError("method.pessimism needs the world model's reward head (model.wm.reward_head=true)")
    rssm = agent.wm.rssm
    ensemble = Disagreement(rssm.feat_dim, agent.act_dim, rssm.stoch_dim, c.heads, c.layers, c.units)
    agent.attach("pessimism", ensemble)
    agent.loss_terms.append(ensemble.loss)
    part = Pessimism(ensemble, c.scale)
    agent.ac.reward_fn = part.reward
