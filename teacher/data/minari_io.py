"""Minari <-> our offline datasets (the teacher.data.dataset format), lossless both ways.

    python -m teacher.data.minari_io export --dataset DIR --minari-id [NAMESPACE/]NAME-vN [--root MINARI_ROOT]
                                            [--where KEY=V1,V2 ...] [--per-embodiment] [--jpeg]
    python -m teacher.data.minari_io import --minari-id ID --dataset DIR [--root MINARI_ROOT] [--max-action-dim 12]
                                            [--image-key KEY] [--suite S] [--task T] [--embodiment E] [--policy P]

--root is the Minari datasets folder (default: $MINARI_DATASETS_PATH, else ~/.minari/datasets).

Step alignment. Ours: L observations; action[t] LED TO obs t (action[0] = 0), reward[t] came with obs t,
is_terminal[t] = the episode really ended at obs t, obs L-1 is the last (is_last), obs 0 the first.
Minari: T + 1 = L observations; actions[t], rewards[t], terminations[t], truncations[t] belong to step t,
which LEAVES obs t and arrives at obs t+1. So, per trajectory:
    observations = {"image": image}          (L, H, W, 3) uint8        <->  image
    actions      = action[1:]                (T, native A) float32     <->  action = [0; actions]
    rewards      = reward[1:], or zeros      (T,) float32              <->  reward = [reward_0; rewards]
    terminations = is_terminal[1:]           (T,) bool                 <->  is_terminal = [False; terminations]
    truncations  = [0, ..., 0, not is_terminal[-1]]   (T,) bool: the data ends without a real end
Export: one Minari dataset (hdf5 storage, raw frames; --jpeg: JPEG, lossy and smaller) with observation
space Dict(image=Box(0, 255, (H, W, 3), uint8)) and action space Box(-1, 1, (native A,)) (our envs'
range; padding is not stored, as in our format). Minari has ONE action space, so a selection mixing native
action dims is refused, or with --per-embodiment exported as one dataset per embodiment, id
NAMESPACE/<embodiment>/NAME-vN (the D4RL "namespace/env/name" layout). Rewards: Minari requires them; a
reward-free trajectory gets zeros and is MARKED: episode metadata has_reward = False (and infos
"has_reward" (L,) bool per observation). Episode metadata (HDF5 attrs, storage.get_episode_metadata):
has_reward, reward_0 (our reward[0]), ours (our manifest row as JSON: suite, task, embodiment, policy,
noise, seed, job, ...); the episode seed is ours. Dataset metadata "ours" says where it came from.
Trajectories with a single observation (no step) are skipped with a warning. is_terminal[0] is not kept
(an episode cannot end before its first step).
Import: a Minari dataset whose observations are an image (a Box, or a Dict entry: "image", the only image
entry, or --image-key) of shape (H, W, 3), (3, H, W), (H, W, 1) or (H, W) uint8 (made HWC RGB) and whose
actions are a Box (A,) with A <= --max-action-dim, through our DatasetWriter: native actions stored, so
samples are zero-padded to max_action_dim with the action mask = the native dims; reward marked present
(absent where has_reward = False). Metadata: flags > the episode's "ours" row > defaults (suite minari,
task and embodiment = the env id or dataset name, policy = algorithm name). Each trajectory's manifest row
gets "minari" = "ID#episode", so rerunning an import skips what is already in.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import re
import shutil
import sys
import warnings

import numpy as np

from teacher.data.dataset import OfflineDataset, read_manifest
from teacher.data.writer import DatasetWriter

ALIGNMENT = ("ours: action[t] led to obs t (action[0] = 0), reward[t] came with obs t; minari: step t leaves obs "
             "t, so actions = action[1:], rewards = reward[1:], terminations = is_terminal[1:]")
ID_RE = re.compile(r"^(?:(?P<ns>[-_\w][-_\w/]*[-_\w]+)/)?(?P<name>[-_\w]+?)-v(?P<version>\d+)$")


@contextlib.contextmanager
def minari_root(root):
    """Within: MINARI_DATASETS_PATH = root (None: unchanged). Minari reads it at every call."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    if root is not None:
        pathlib.Path(root).mkdir(parents=True, exist_ok=True)
        os.environ["MINARI_DATASETS_PATH"] = str(pathlib.Path(root).resolve())
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def parse_id(minari_id: str) -> tuple[str | None, str, int]:
    """(namespace or None, name, version) of a Minari dataset id; ValueError if malformed."""
    match = ID_RE.match(str(minari_id))
    if not match:
        raise ValueError(f"malformed Minari dataset id {minari_id!r}: use [NAMESPACE/]NAME-vN, e.g. ours/mixed-v0")
    return match["ns"], match["name"], int(match["version"])


def parse_where(items) -> dict:
    """["task=reach,push", "noise=0.1"] -> {"task": ["reach", "push"], "noise": [0.1]} (JSON values, else str)."""
    where = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--where entries look like KEY=V1,V2; got {item!r}")
        key, values = item.split("=", 1)
        where[key] = [_value(v) for v in values.split(",")]
    return where


def _value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


# -- export ---------------------------------------------------------------------------------------
def export(dataset, minari_id: str, root=None, where: dict | None = None, per_embodiment: bool = False,
           jpeg: bool = False) -> list[dict]:
    """Export the trajectories of `dataset` (filtered by where) as Minari dataset(s); returns summaries."""
    namespace, name, version = parse_id(minari_id)
    data = OfflineDataset(dataset, where=where)
    if per_embodiment:
        bodies = sorted({r["embodiment"] for r in data.meta})
        ids = [f"{namespace + '/' if namespace else ''}{body}/{name}-v{version}" for body in bodies]
        groups = [[i for i, r in enumerate(data.meta) if r["embodiment"] == body] for body in bodies]
    else:
        ids, groups = [minari_id], [list(range(len(data)))]
    for group in groups:
        dims = {}
        for i in group:
            dims.setdefault(data.meta[i]["action_dim"], set()).add(data.meta[i]["embodiment"])
        if len(dims) > 1:
            found = "; ".join(f"{d}: {', '.join(sorted(b))}" for d, b in sorted(dims.items()))
            raise ValueError(f"a Minari dataset has one action space but these trajectories have native action dims "
                             f"({found}): pass --per-embodiment or select one with --where embodiment=...")
    with minari_root(root):
        taken = [i for i in ids if _path(i).exists()]
        if taken:
            raise ValueError(f"Minari dataset(s) {taken} already exist under {_path()}; use another id or version")
        return [_export_one(data.subset(g), i, dict(dataset=str(data.root), where=where), jpeg)
                for i, g in zip(ids, groups)]


def _path(minari_id: str | None = None) -> pathlib.Path:
    from minari.storage import get_dataset_path
    return pathlib.Path(get_dataset_path(minari_id))


def _export_one(data: OfflineDataset, minari_id: str, origin: dict, jpeg: bool) -> dict:
    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer

    keep = [i for i, r in enumerate(data.meta) if r["length"] >= 2]
    if len(keep) < len(data):
        warnings.warn(f"skipping {len(data) - len(keep)} trajectories with a single observation (no step)")
    if not keep:
        raise ValueError(f"no trajectory for {minari_id} has a step (all have a single observation)")
    frames = {tuple(data.first_frames([i]).shape[1:]) for i in keep}  # {(H, W, 3)}
    if len(frames) > 1:
        raise ValueError(f"trajectories for {minari_id} have several image sizes {sorted(frames)}; "
                         f"select one with --where")
    frame, dim = frames.pop(), data.meta[keep[0]]["action_dim"]
    obs_space = gym.spaces.Dict(image=gym.spaces.Box(0, 255, frame, np.uint8))
    act_space = gym.spaces.Box(-1.0, 1.0, (dim,), np.float32)
    episode_meta = []  # filled while the episodes stream to disk

    def episodes():
        for k, i in enumerate(keep):
            row = data.meta[i]
            has_reward = bool(row.get("has_reward"))
            traj = data.read(i, with_reward=has_reward)  # image (L, H, W, 3), action (L, A), is_terminal (L,)
            length, terminal = len(traj["image"]), traj["is_terminal"]
            reward = traj.get("reward", np.zeros(length, np.float32))  # (L,): zeros when absent (marked)
            truncation = np.zeros(length - 1, bool)  # (T,)
            truncation[-1] = not terminal[-1]
            episode_meta.append(dict(has_reward=has_reward, reward_0=float(reward[0]), ours=json.dumps(row)))
            yield EpisodeBuffer(id=k, seed=row.get("seed"), observations={"image": traj["image"]},
                                actions=traj["action"][1:], rewards=reward[1:], terminations=terminal[1:].copy(),
                                truncations=truncation, infos={"has_reward": np.full(length, has_reward)})

    policies = sorted({str(data.meta[i]["policy"]) for i in keep})
    try:
        with warnings.catch_warnings():  # minari warns about every unset field (author, permalink, eval env, ...)
            warnings.filterwarnings("ignore", category=UserWarning, module="minari")
            out = minari.create_dataset_from_buffers(
                minari_id, episodes(), observation_space=obs_space, action_space=act_space,
                algorithm_name=",".join(policies), author="teacher.data.minari_io", data_format="hdf5",
                description=f"exported from our offline dataset {origin['dataset']}: {ALIGNMENT}", jpeg_encoding=jpeg)
        out.storage.update_episode_metadata(episode_meta, range(len(keep)))
        out.storage.update_metadata({"ours": dict(origin, alignment=ALIGNMENT, action_dim=dim, reward_absent_flag=
                                                  "episode metadata has_reward = False: rewards are zeros, not data")})
    except BaseException:
        shutil.rmtree(_path(minari_id), ignore_errors=True)  # never leave half a dataset behind
        raise
    return dict(id=minari_id, path=str(_path(minari_id)), episodes=len(keep), steps=int(out.total_steps),
                skipped=len(data) - len(keep), action_dim=dim, image=frame)


# -- import ---------------------------------------------------------------------------------------
def _image_like(space) -> bool:
    """A uint8 Box of shape (H, W, 3), (3, H, W), (H, W, 1) or (H, W)."""
    import gymnasium as gym
    shape = getattr(space, "shape", None) or ()
    return (isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and
            (len(shape) == 2 or (len(shape) == 3 and (shape[-1] in (1, 3) or shape[0] == 3))))


def image_key_of(space, key: str | None, minari_id: str) -> str | None:
    """The Dict key holding the image (None: the observation is the image); ValueError if there is none."""
    import gymnasium as gym
    if isinstance(space, gym.spaces.Dict):
        if key is not None and key not in space.spaces:
            raise ValueError(f"--image-key {key!r} is not an observation key of {minari_id}; keys: {list(space.spaces)}")
        found = [key] if key is not None else [k for k, s in space.spaces.items() if _image_like(s)]
        found = ["image"] if "image" in found else found
        if len(found) == 1 and _image_like(space.spaces[found[0]]):
            return found[0]
        if len(found) > 1:
            raise ValueError(f"{minari_id} has several image observations {found}; pick one with --image-key")
    elif _image_like(space) and key is None:
        return None
    raise ValueError(f"{minari_id} has no image observations (observation space {space}); only image datasets "
                     f"(uint8 (H, W, 3) frames, a Box or a Dict entry) can be imported")


def to_hwc3(obs: np.ndarray) -> np.ndarray:
    """(L, H, W, 3) | (L, 3, H, W) | (L, H, W, 1) | (L, H, W) uint8 -> (L, H, W, 3) uint8."""
    obs = np.asarray(obs, np.uint8)
    if obs.ndim == 3:
        obs = obs[..., None]
    if obs.shape[-1] != 3 and obs.shape[1] == 3:
        obs = obs.transpose(0, 2, 3, 1)  # CHW -> HWC
    return np.ascontiguousarray(np.repeat(obs, 3, axis=-1) if obs.shape[-1] == 1 else obs)


def import_minari(minari_id: str, dataset, root=None, max_action_dim: int | None = None, image_key: str | None = None,
                  meta: dict | None = None, shard_mb: float = 256, compression="lzf") -> dict:
    """Import Minari dataset `minari_id` (under root) into our dataset folder; returns the summary.
    meta: manifest fields that override the episodes' own (suite, task, embodiment, policy, ...)."""
    import gymnasium as gym
    import minari

    parse_id(minari_id)
    with minari_root(root):
        try:
            source = minari.load_dataset(minari_id)
        except FileNotFoundError:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                local = sorted(minari.list_local_datasets())
            raise ValueError(f"no Minari dataset {minari_id} under {_path()}; local datasets: {local[:20]} "
                             f"(download one with `minari download ID`)") from None
        key = image_key_of(source.observation_space, image_key, minari_id)
        act = source.action_space
        if not isinstance(act, gym.spaces.Box) or len(act.shape) != 1:
            raise ValueError(f"{minari_id} has action space {act}; only Box actions of shape (A,) can be imported")
        dim = int(act.shape[0])
        if max_action_dim is not None and dim > max_action_dim:
            raise ValueError(f"{minari_id} has {dim} action dims > --max-action-dim {max_action_dim}")
        info = source.storage.metadata
        name = getattr(source.env_spec, "id", None) or parse_id(minari_id)[1]
        defaults = dict(suite="minari", task=name, embodiment=name, policy=info.get("algorithm_name") or "minari")
        summary = dict(episodes=0, transitions=0, already_imported=0, skipped=0, action_dim=dim)
        done = {r.get("minari") for r in read_manifest(dataset)}
        episode_meta = source.storage.get_episode_metadata(source.episode_indices)
        with DatasetWriter(dataset, shard_mb=shard_mb, compression=compression) as writer:
            for episode, emeta in zip(source.iterate_episodes(), episode_meta):
                tag = f"{minari_id}#{episode.id}"
                if tag in done:
                    summary["already_imported"] += 1
                    continue
                obs = episode.observations[key] if key is not None else episode.observations
                image = to_hwc3(obs)                                                # (L, H, W, 3)
                steps = len(episode.rewards)                                        # T = L - 1
                if len(image) != steps + 1 or steps < 1:
                    warnings.warn(f"skipping {tag}: {len(image)} observations for {steps} steps (need T + 1, T >= 1)")
                    summary["skipped"] += 1
                    continue
                action = np.zeros((steps + 1, dim), np.float32)                     # (L, A): action[t] led to obs t
                action[1:] = np.asarray(episode.actions, np.float32).reshape(steps, dim)
                is_terminal = np.concatenate([[False], np.asarray(episode.terminations, bool)])  # (L,)
                traj = dict(image=image, action=action, is_terminal=is_terminal)
                has_reward = bool(emeta.get("has_reward", True))
                if has_reward:                                                      # (L,): reward[t] came with obs t
                    traj["reward"] = np.concatenate([[emeta.get("reward_0", 0.0)], episode.rewards]).astype(np.float32)
                ours = json.loads(emeta["ours"]) if "ours" in emeta else {}
                seed = {} if emeta.get("seed") is None else dict(seed=int(emeta["seed"]))
                writer.add(traj, {**defaults, **seed, **ours, **(meta or {}), "minari": tag})
                summary["episodes"] += 1
                summary["transitions"] += steps
    return summary


# -- CLI ------------------------------------------------------------------------------------------
def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m teacher.data.minari_io", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    exp = sub.add_parser("export", help="our dataset -> Minari dataset(s)")
    imp = sub.add_parser("import", help="a Minari image dataset -> our dataset")
    for q in (exp, imp):
        q.add_argument("--dataset", required=True, help="our dataset folder (import: created or appended to)")
        q.add_argument("--minari-id", required=True, help="[NAMESPACE/]NAME-vN")
        q.add_argument("--root", help="Minari datasets folder (default: $MINARI_DATASETS_PATH or ~/.minari/datasets)")
    exp.add_argument("--where", nargs="*", default=[], metavar="KEY=V1,V2", help="manifest filters, e.g. task=reach")
    exp.add_argument("--per-embodiment", action="store_true", help="one Minari dataset per embodiment")
    exp.add_argument("--jpeg", action="store_true", help="JPEG-encode frames (lossy, smaller; default: raw)")
    imp.add_argument("--max-action-dim", type=int, default=None, help="refuse datasets with more action dims")
    imp.add_argument("--image-key", help="the observation Dict entry holding the image (default: image / the only one)")
    for field in ("suite", "task", "embodiment", "policy"):
        imp.add_argument(f"--{field}", help=f"manifest {field} for every trajectory (default: the dataset's)")
    imp.add_argument("--shard-mb", type=float, default=256)
    imp.add_argument("--compression", choices=["lzf", "gzip", "none"], default="lzf")
    args = p.parse_args(argv)
    try:
        if args.command == "export":
            out = export(args.dataset, args.minari_id, args.root, parse_where(args.where), args.per_embodiment, args.jpeg)
            for s in out:
                print(f"exported {s['episodes']} trajectories ({s['steps']} steps, action dim {s['action_dim']}, "
                      f"images {s['image']}) to Minari dataset {s['id']} at {s['path']}"
                      + (f"; skipped {s['skipped']} without a step" if s["skipped"] else ""))
            return out
        meta = {f: getattr(args, f) for f in ("suite", "task", "embodiment", "policy") if getattr(args, f)}
        compression = None if args.compression == "none" else args.compression
        out = import_minari(args.minari_id, args.dataset, args.root, args.max_action_dim, args.image_key, meta,
                            args.shard_mb, compression)
        print(f"imported {out['episodes']} episodes ({out['transitions']} transitions, action dim {out['action_dim']}) "
              f"from Minari dataset {args.minari_id} into {args.dataset}; {out['already_imported']} were imported "
              f"before, {out['skipped']} skipped")
        return out
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
