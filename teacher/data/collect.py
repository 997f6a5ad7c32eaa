"""Offline-data collection: roll out a policy (teacher/data/policies.py) in a suite's envs and append every
episode to a dataset (teacher/data/writer.py DatasetWriter).

    python -m teacher.data.collect --dataset ROOT --suite {dmc,metaworld,driving,carla} --tasks T1 T2 ... | all
        --policy {expert,random,driver,autopilot,agent} [--noise S1 S2 ...] [--episodes N]
        [--workers W] [--seed S] [--env-config key=value ...] [--agent-run RUN_DIR]

Examples: Meta-World mixed-quality data (GSA): --suite metaworld --tasks all --policy expert
--noise 0.1 0.3 0.5 1.0 2.0; clean experts (Vid2Act): --noise 0; DMC agent rollouts (Vid2Act):
--suite dmc --tasks cheetah_run --policy agent --agent-run runs/dreamer/dmc-cheetah_run-seed0;
CARLA: --suite carla --tasks town01 town02 town03 --policy autopilot (env config =
configs/env/carla_source.yaml, needs a server). Reward-free exploration agents train through the training
loop: python -m transfer.explore.

One job = one episode of (task, noise, episode index); its id is "suite/task/policy/noise/seed" with a
seed derived from --seed, task, noise and the index, so that rerunning the same command (also after a
kill) runs only the jobs not yet in the dataset's manifest, and a larger --episodes appends new ones.
Episodes run in worker processes (no torch there unless --policy agent); this process is the
only writer. Stored per episode: every image from reset to the end (L = steps + 1), the EXECUTED
native action (noise added and clipped; action[0] = 0), reward (recorded, never used for
pretraining) and is_terminal; metadata: suite, task, embodiment, policy, noise, seed, job, return,
and success for Meta-World (any step).
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import multiprocessing as mp
import multiprocessing.connection
import pathlib
import sys
import time
import traceback
import zlib

import numpy as np

from envs import make_env, suite_module, SUITES
from envs.list import CONFIGS, suite_config
from teacher.data.policies import POLICIES

PAD = 64          # envs are built with this padded size; only the native dims are stored
RETRIES = 2       # a job whose worker process dies is retried this many times
ENV_CONFIG = {"carla": "carla_source"}  # suite -> collection env config (configs/env/<name>.yaml)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m teacher.data.collect", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="dataset folder (created if missing; appended to)")
    p.add_argument("--suite", choices=list(SUITES), help="env suite (default for --policy agent: the run's)")
    p.add_argument("--tasks", nargs="+", help="task names, or 'all' (python -m envs.list --suite SUITE)")
    p.add_argument("--policy", required=True, choices=[*POLICIES, "explore"])
    p.add_argument("--noise", nargs="+", type=float, default=[0.0],
                   help="Gaussian action-noise stds, one set of episodes each (autopilot: noise-burst std)")
    p.add_argument("--episodes", type=int, default=10, help="episodes per task and noise level")
    p.add_argument("--workers", type=int, default=1, help="worker processes (0: run in this process)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--env-config", nargs="*", default=[], metavar="KEY=VALUE",
                   help="overrides of configs/env/<suite>.yaml, e.g. episode_frames=200")
    p.add_argument("--agent-run", help="--policy agent: a `python -m transfer.run` run directory")
    p.add_argument("--shard-mb", type=float, default=256, help="dataset shard size")
    p.add_argument("--flush-seconds", type=float, default=120,
                   help="write finished episodes to disk at least this often (what a kill can lose)")
    args = p.parse_args(argv)
    if args.policy == "explore":
        p.exit(2, "--policy explore trains agents through the training loop: run python -m transfer.explore "
                  "--dataset ... --tasks ... (--episodes, --seed, --env-config as here)\n")
    if args.episodes < 0 or args.workers < 0:
        p.error("--episodes and --workers must be >= 0")
    return args


# ---- configuration --------------------------------------------------------------------------------
def load_env_config(name: str) -> dict:
    """configs/env/<name>.yaml as a dict, with its Hydra `defaults` list (other env configs) merged in."""
    from omegaconf import OmegaConf  # noqa: PLC0415
    raw = OmegaConf.to_container(OmegaConf.load(CONFIGS / f"{name}.yaml"), resolve=True)
    cfg = {}
    for entry in raw.pop("defaults", ["_self_"]):
        cfg.update(raw if entry == "_self_" else load_env_config(entry))
    return cfg


def suite_env_config(suite: str) -> dict:
    """The env config a suite collects with: configs/env/<suite>.yaml (carla: carla_source.yaml)."""
    return load_env_config(ENV_CONFIG.get(suite, suite))


def parse_overrides(items: list[str], cfg: dict) -> dict:
    import yaml  # noqa: PLC0415
    cfg, known = dict(cfg), set(cfg) | set(getattr(suite_module(cfg["suite"]), "DEFAULTS", {}))
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            raise ValueError(f"--env-config {item!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(known))}")
        cfg[key] = yaml.safe_load(value)
    return cfg


def resolve(args):
    """(env_cfg, tasks, policy class, options, max_action_dim) for the command line; ValueError if wrong."""
    options, max_action_dim = dict(agent_run=args.agent_run), PAD
    if args.policy == "agent":
        POLICIES["agent"].check(args.suite, options)
        from teacher.data.policies import run_config  # noqa: PLC0415 (loads torch, in this process only)
        run = run_config(args.agent_run)
        if args.suite not in (None, run["env"]["suite"]):
            raise ValueError(f"--agent-run {args.agent_run} was trained on suite {run['env']['suite']!r}, "
                             f"not {args.suite!r}")
        args.suite, env_cfg, max_action_dim = run["env"]["suite"], run["env"], run["max_action_dim"]
        args.tasks = args.tasks or [run["task"]]
    elif args.suite is None:
        raise ValueError("--suite is required (dmc, metaworld, driving or carla)")
    else:
        env_cfg = suite_env_config(args.suite)
    env_cfg = parse_overrides(args.env_config, env_cfg)
    if not args.tasks:
        raise ValueError("--tasks is required: task names or 'all' (python -m envs.list --suite SUITE)")
    if args.tasks == ["all"]:
        args.tasks = [row.task for row in suite_module(args.suite).tasks(env_cfg)]
    policy = POLICIES.get(args.policy)
    if policy is not None:
        policy.check(args.suite, options)
    return env_cfg, list(args.tasks), policy, options, max_action_dim


def job_seed(seed: int, task: str, noise: float, index: int) -> int:
    """A deterministic episode seed in [0, 2^31) from the run seed, task, noise level and episode index."""
    key = [seed, zlib.crc32(task.encode()), zlib.crc32(f"{noise:g}".encode()), index]
    return int(np.random.SeedSequence(key).generate_state(1)[0] & 0x7FFFFFFF)


def make_jobs(args, tasks: list[str], label: str) -> list[dict]:
    policy = args.policy + (f"@{label}" if label else "")
    jobs = []
    for task in tasks:
        for noise in args.noise:
            for index in range(args.episodes):
                seed = job_seed(args.seed, task, noise, index)
                jobs.append(dict(job=f"{args.suite}/{task}/{policy}/{noise:g}/{seed}", task=task,
                                 noise=float(noise), seed=seed))
    return jobs


# ---- one episode (in a worker) --------------------------------------------------------------------
def run_episode(common: dict, job: dict) -> tuple[dict, dict, dict]:
    """Rolls out one episode; returns (trajectory arrays, dataset meta, stats)."""
    policy_cls = POLICIES[common["policy"]]
    env_cfg = policy_cls.env_config(common["env_cfg"], job["noise"])
    env = make_env(env_cfg, job["task"], job["seed"], common["max_action_dim"])
    try:
        spec = env.spec
        policy = policy_cls(env, job["noise"], np.random.default_rng([job["seed"], 1]), common["options"])
        obs = env.reset()
        policy.reset(obs)
        images, actions = [obs["image"]], [np.zeros(spec.native_action_dim, np.float32)]  # action[0] = 0
        rewards, terminals, success, distance = [0.0], [False], False, 0.0
        while not obs["is_last"]:
            action = policy(obs)                                          # (native,) executed
            padded = np.zeros(spec.max_action_dim, np.float32)            # (A,)
            padded[: spec.native_action_dim] = action
            obs = env.step(padded)
            images.append(obs["image"])
            actions.append(policy.executed(action, obs))
            rewards.append(float(obs["reward"]))
            terminals.append(bool(obs["is_terminal"]))
            success = success or bool(obs.get("log_success", False))
            distance += float(obs.get("log_distance", 0.0))
        convention = getattr(env, "convention", None)  # DMC: gsa | dmc action and floor conventions
    finally:
        env.close()
    traj = dict(image=np.stack(images), action=np.stack(actions).astype(np.float32),   # (L, R, R, 3), (L, native)
                reward=np.asarray(rewards, np.float32), is_terminal=np.asarray(terminals))  # (L,), (L,)
    ret = float(np.sum(rewards))
    meta = dict(suite=spec.suite, task=spec.task, embodiment=spec.embodiment, policy=common["policy"],
                noise=job["noise"], seed=job["seed"], job=job["job"], source=common.get("source"),
                episode_return=ret)
    if convention is not None:
        meta["convention"] = convention
    stats = dict(task=spec.task, noise=job["noise"], steps=len(images) - 1, ret=ret, distance=distance,
                 success_final=float(bool(obs.get("log_success", False))))
    if "log_success" in obs:
        meta["success"] = stats["success"] = float(success)
        meta["success_final"] = stats["success_final"]   # GSA's Meta-World score: success at the last step
    return traj, meta, stats


def _worker_main(conn, common: dict) -> None:
    """Worker process: answers ("job", job) with ("ok", job id, traj, meta, stats) or ("error", job id, text)."""
    import signal  # noqa: PLC0415
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent owns Ctrl-C
    while True:
        try:
            cmd, job = conn.recv()
        except (EOFError, OSError):
            return
        if cmd == "close":
            return
        try:
            conn.send(("ok", job["job"], *run_episode(common, job)))
        except Exception:  # noqa: BLE001 (reported to the parent as text)
            conn.send(("error", job["job"], traceback.format_exc()))


class Workers:
    """W worker processes (envs.workers.start_child) running jobs; results() yields (traj, meta, stats) as they
    finish."""

    def __init__(self, count: int, common: dict):
        self.common, self.procs = common, []
        for _ in range(count):
            self.procs.append(self._start())

    def _start(self):
        from envs.workers import start_child  # noqa: PLC0415
        proc, parent = start_child(_worker_main, self.common)
        return [proc, parent, None]  # process, connection, running job

    def results(self, jobs: list[dict]):
        todo, tries = collections.deque(jobs), collections.Counter()
        while todo or any(w[2] for w in self.procs):
            for w in self.procs:
                if w[2] is None and todo:
                    w[2] = todo.popleft()
                    w[1].send(("job", w[2]))
            busy = [w for w in self.procs if w[2] is not None]
            ready = mp.connection.wait([w[1] for w in busy] + [w[0].sentinel for w in busy])
            for i, w in enumerate(self.procs):
                if w[2] is None:
                    continue
                if w[1] in ready and w[1].poll():
                    try:
                        status, job_id, *payload = w[1].recv()
                    except (EOFError, OSError):
                        status = None
                    if status == "ok":
                        w[2] = None
                        yield tuple(payload)
                        continue
                    if status == "error":
                        raise RuntimeError(f"episode {job_id} failed in its worker:\n{payload[0]}")
                if not w[0].is_alive():  # died (segfault, OOM kill): restart it and retry the job
                    job, code = w[2], w[0].exitcode
                    tries[job["job"]] += 1
                    if tries[job["job"]] > RETRIES:
                        raise RuntimeError(f"episode {job['job']} killed its worker {RETRIES + 1} times "
                                           f"(exit code {code})")
                    print(f"worker died (exit code {code}); retrying {job['job']}", file=sys.stderr)
                    w[1].close()
                    self.procs[i] = self._start()
                    todo.appendleft(job)

    def close(self) -> None:
        for proc, conn, _ in self.procs:
            with contextlib.suppress(OSError, ValueError):
                conn.send(("close", None))
        for proc, conn, _ in self.procs:
            proc.join(3.0)
            if proc.is_alive():
                proc.kill()
                proc.join()
            conn.close()


def _in_process(jobs: list[dict], common: dict):
    for job in jobs:
        yield run_episode(common, job)


# ---- main -----------------------------------------------------------------------------------------
def summary(stats: list[dict]) -> str:
    """One line per (task, noise): episodes, transitions, return (mean +- std), success (any step, final step)."""
    groups = collections.defaultdict(list)
    for s in stats:
        groups[s["task"], s["noise"]].append(s)
    lines = [f"{'task':<28} {'noise':>5} {'episodes':>8} {'transitions':>11} {'return':>17} {'success':>7} {'final':>5}"]
    for (task, noise), rows in groups.items():
        ret = np.array([r["ret"] for r in rows])
        line = (f"{task:<28} {noise:>5g} {len(rows):>8} {sum(r['steps'] for r in rows):>11} "
                f"{ret.mean():>8.1f} +- {ret.std():<6.1f}")
        if "success" in rows[0]:
            line += f" {np.mean([r['success'] for r in rows]):>7.2f} {np.mean([r['success_final'] for r in rows]):>5.2f}"
        lines.append(line)
    return "\n".join(lines)


def collect(args) -> list[dict]:
    """Runs the command line's jobs that the dataset does not hold yet; returns their stats."""
    from tqdm import tqdm  # noqa: PLC0415

    from teacher.data.writer import DatasetWriter  # noqa: PLC0415
    try:
        env_cfg, tasks, policy_cls, options, max_action_dim = resolve(args)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    with DatasetWriter(args.dataset, shard_mb=args.shard_mb) as writer:
        jobs = make_jobs(args, tasks, policy_cls.label(options))
        done = writer.done_jobs
        todo = [j for j in jobs if j["job"] not in done]
        print(f"{args.suite}, policy {args.policy}: {len(jobs)} episodes asked, {len(jobs) - len(todo)} already "
              f"in {args.dataset}, {len(todo)} to run on {args.workers or 'no'} worker(s)", file=sys.stderr)
        if not todo:
            return []
        prepare = getattr(suite_module(args.suite), "prepare", None)
        if prepare is not None:
            prepare(policy_cls.env_config(env_cfg, args.noise[0]))  # GL probe; CARLA: server check
        common = dict(env_cfg=env_cfg, policy=args.policy, options=options, max_action_dim=max_action_dim,
                      source=str(pathlib.Path(args.agent_run).resolve()) if args.agent_run else None)
        workers = Workers(min(args.workers, len(todo)), common) if args.workers else None
        stats, steps, start, flushed = [], 0, time.time(), time.time()
        bar = tqdm(total=len(todo), unit="ep", dynamic_ncols=True, file=sys.stderr)
        try:
            for traj, meta, episode in (workers.results(todo) if workers else _in_process(todo, common)):
                writer.add(traj, meta)
                stats.append(episode)
                steps += episode["steps"]
                bar.update(1)
                bar.set_postfix(transitions=steps, per_s=f"{steps / max(time.time() - start, 1e-9):.0f}")
                if time.time() - flushed > args.flush_seconds:
                    writer.flush()
                    flushed = time.time()
        finally:
            bar.close()
            if workers:
                workers.close()
        elapsed = time.time() - start
        print(f"collected {len(stats)} episodes, {steps} transitions in {elapsed:.0f} s "
              f"({steps / max(elapsed, 1e-9):.0f} transitions/s)\n{summary(stats)}", file=sys.stderr)
        return stats


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    try:
        return collect(args)
    except KeyboardInterrupt:
        raise SystemExit("interrupted; finished episodes are saved: rerun the same command to resume")
    except RuntimeError as err:
        if type(err).__name__ == "CarlaUnavailable" or "CarlaUnavailable" in str(err):
            raise SystemExit(f"error: {str(err).strip().splitlines()[-1]}")
        raise


if __name__ == "__main__":
    from teacher.data.collect import main as collect_main  # workers pickle functions of teacher.data.collect, not __main__
    collect_main()
