"""Experience rehearsal (GSA): every world-model batch mixes online replay sequences with sequences
of the retrieved offline trajectories.

A batch of B rows holds round(B * offline_share) offline rows (GSA: 0.25, i.e. 12 online + 4 offline
of 16). Offline rows carry reward_mask 0, so the reward head learns from the online rows only; their
posterior states are imagination start states like the online ones (GSA's code: the actor-critic imagines
from every posterior state of the batch), or, with method.imagine_offline=false, only the online rows are.
"""
from __future__ import annotations

import numpy as np

def mix(online: dict, offline: dict) -> dict:
    """online: Replay.sample (B_on, T, ...); offline: OfflineDataset.sample (B_off, T, ...), actions
    padded to the same A. Returns {key: (B_on + B_off, T, ...)} with reward_mask 0 offline and, online, the
    replay's own (0 on steps adopted from an earlier task's run, core/replay.py), else 1."""
    b_on, b_off = len(online["image"]), len(offline["image"])
    t = online["image"].shape[1]
    if offline["image"].shape[1:] != online["image"].shape[1:]:
        raise ValueError(f"offline frames {offline['image'].shape[1:]} differ from online {online['image'].shape[1:]}")
    if offline["action"].shape[-1] != online["action"].shape[-1]:
        raise ValueError(f"offline actions are padded to {offline['action'].shape[-1]}, online to "
                         f"{online['action'].shape[-1]}: use the same max_action_dim for the dataset and the run")
    off = dict(image=offline["image"], action=offline["action"], reward=np.zeros((b_off, t), np.float32),
               is_first=offline["is_first"], is_last=np.zeros((b_off, t), bool), is_terminal=offline["is_terminal"])
    out = {k: np.concatenate([online[k], off[k]]) for k in off}
    online_mask = online.get("reward_mask", np.ones((b_on, t), np.float32))  # (B_on, T)
    out["reward_mask"] = np.concatenate([online_mask, np.zeros((b_off, t), np.float32)])
    return out


class Rehearsal:
    """A world-model batch source (the loop's replay.sample instead): (B, T) -> mixed batch of numpy arrays."""

    def __init__(self, replay, offline, share: float, seed: int = 0):
        if not 0.0 <= share < 1.0:
            raise ValueError(f"offline_share={share}: use a value in [0, 1)")
        self.replay, self.offline, self.share = replay, offline, share
        self.rng = np.random.default_rng(seed)

    def split(self, batch: int) -> tuple[int, int]:
        """(online rows, offline rows) of a batch of B rows; at least one online row."""
        off = min(int(round(batch * self.share)), batch - 1)
        return batch - off, off

    def __call__(self, batch: int, length: int) -> dict:
        b_on, b_off = self.split(batch)
        online = self.replay.sample(b_on, length)
        if not b_off:
            return {"reward_mask": np.ones(online["reward"].shape, np.float32), **online}
        return mix(online, self.offline.sample(b_off, length, self.rng))


def attach(ctx) -> None:
    """The `rehearsal` part (ctx: transfer's Context): world-model batches mix online replay with the `retrieved`
    trajectories."""
    source = Rehearsal(ctx.replay, ctx.artifacts["retrieved"].subset, ctx.method.offline_share,
                       seed=ctx.rng("rehearsal", ctx.run.seed))
    ctx.set_batch_source(source)
    if not ctx.method.get("imagine_offline", True):
        ctx.agent.start_rows = lambda batch: source.split(batch)[0]  # offline rows are last (mix)
