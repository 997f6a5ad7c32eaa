"""method=gsa end to end on real envs: retrieval at the start, rehearsal batches, guided acting,
cached choices on resume, and the ablation switches."""
import json

import numpy as np
import pytest

from conftest import collect_random, compose, pretrain_cfg
from student.rehearsal import Rehearsal
from teacher.pretrain import Pretrainer
from transfer.build import build_trainer

LOOP = ["preset=quick_dmc", "env.action_repeat=2", "trainer.warmup=40", "model.ac.horizon=4", "trainer.batch_size=4",
        "trainer.batch_length=8", "trainer.train_ratio=32", "trainer.eval_every=1000000",
        "trainer.final_eval_episodes=1", "trainer.log_every=20", "logger.wandb=disabled", "logger.progress=false",
        "method.bc.steps=4", "method.bc.batch=8"]
FAST = LOOP + ["method.retrieval.queries=2", "method.schedule.duration=200"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny generalist teacher on real DMC (cartpole, walker) and Meta-World (reach) random data."""
    data = tmp_path_factory.mktemp("data")
    collect_random(data, tasks=("cartpole_balance", "walker_walk"), episodes=3, frames=40)
    collect_random(data, tasks=("reach",), episodes=3, frames=40, suite="metaworld")
    run = tmp_path_factory.mktemp("teacher")
    Pretrainer(pretrain_cfg(data, run, "steps=2", "eval_every=2"), run).run()
    return run / "teacher.pt"


def run_gsa(tmp_path, teacher, *overrides):
    cfg = compose(*FAST, "method=gsa", f"teacher={teacher}", f"run_dir={tmp_path}", *overrides)
    trainer = build_trainer(cfg, tmp_path)
    try:
        trainer.run()
    finally:
        trainer.close()
    return trainer


@pytest.mark.parametrize("env,task,embodiment", [("dmc", "cartpole_balance", "cartpole"), ("metaworld", "reach", "sawyer")])
def test_gsa_end_to_end(tmp_path, teacher, env, task, embodiment):
    trainer = run_gsa(tmp_path, teacher, f"env={env}", f"task={task}", "env.episode_frames=40",
                      "trainer.steps=120", "method.retrieval.k=3")
    ids = json.loads((tmp_path / "retrieved.json").read_text())
    assert len(ids) == 3                                   # only this task's action dim is compatible
    assert (tmp_path / "retrieval.png").exists() and (tmp_path / "bc_prior.pt").exists()
    assert isinstance(trainer.batch_source, Rehearsal) and trainer.agent.updates > 0
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any(f"retrieval/embodiment/{embodiment}" in r or "retrieval/retrieved" in r for r in rows)
    guided = [r["guidance/fraction"] for r in rows if "guidance/fraction" in r]
    assert guided and all(0.0 <= g <= 1.0 for g in guided)
    assert guided[0] == 1.0                                # warm-up episodes are guided whole
    start = [r for r in rows if "prior/success_final" in r]  # the prior alone, before the run (final_eval_episodes)
    assert len(start) == 1 and start[0]["step"] == 0 and start[0]["prior/episodes"] == 1
    assert start[0]["prior/guided"] == 1.0 and 0.0 <= start[0]["prior/success_final"] <= 1.0


def test_gsa_ablation_switches(tmp_path, teacher):
    base = ["env=dmc", "task=cartpole_balance", "env.episode_frames=40", "trainer.steps=60", "method.retrieval.k=3"]
    no_rehearsal = run_gsa(tmp_path / "a", teacher, *base, "method.rehearsal=false")
    assert not isinstance(no_rehearsal.batch_source, Rehearsal) and no_rehearsal.acting_hooks
    run_gsa(tmp_path / "a", teacher, *base, "method.rehearsal=false", "trainer.steps=80")  # resumed: no 2nd prior eval

    def prior_rows(run):
        return [line for line in (run / "metrics.jsonl").read_text().splitlines() if '"prior/return"' in line]
    assert len(prior_rows(tmp_path / "a")) == 1
    no_guidance = run_gsa(tmp_path / "b", teacher, *base, "method.guidance=false")
    assert isinstance(no_guidance.batch_source, Rehearsal) and not no_guidance.acting_hooks
    assert not (tmp_path / "b" / "bc_prior.pt").exists() and not prior_rows(tmp_path / "b")
    # resume keeps the retrieved set (read back from the run directory, not retrieved again)
    first = json.loads((tmp_path / "b" / "retrieved.json").read_text())
    again = run_gsa(tmp_path / "b", teacher, *base, "method.guidance=false", "trainer.steps=80")
    assert json.loads((tmp_path / "b" / "retrieved.json").read_text()) == first and again.step >= 80
    with pytest.raises(ValueError, match="teacher=PATH"):
        build_trainer(compose(*FAST, "method=gsa", "default_teacher.enabled=false", f"run_dir={tmp_path / 'c'}"), tmp_path / "c")


def test_sliced_wasserstein_orders_distances():
    from student.shift_monitor import sliced_wasserstein
    rng = np.random.default_rng(0)
    d = rng.normal(size=(32, 5))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    a, same, shifted = rng.normal(size=(400, 5)), rng.normal(size=(400, 5)), rng.normal(size=(400, 5)) + 2.0
    near, far = sliced_wasserstein(a, same, d), sliced_wasserstein(a, shifted, d)
    assert near < 0.2 < 1.0 < far
    assert sliced_wasserstein(a, a, d) == 0.0


def test_gsa_logs_distribution_shift(tmp_path, teacher):
    run_gsa(tmp_path, teacher, "env=dmc", "task=cartpole_balance", "env.episode_frames=40", "trainer.steps=80",
            "method.retrieval.k=3", "method.guidance=false", "method.shift.every=40", "method.shift.batch=2",
            "method.shift.length=8")
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    shift = [r for r in rows if "shift/online_offline" in r]
    assert shift and all(r[k] >= 0 for r in shift for k in ("shift/online_retrieved", "shift/retrieved_offline"))


def test_resume_continues_every_random_stream(tmp_path, teacher):
    """A gsa run checkpoints and is abandoned (as if killed right after the checkpoint); the run that
    resumes from that checkpoint draws the same guidance plans and offline windows as the
    uninterrupted run would have drawn next."""
    import copy
    from student.guidance import GuidanceSchedule
    base = ["env=dmc", "task=cartpole_balance", "env.episode_frames=40", "method.retrieval.k=3",
            "method.shift.every=40", "method.shift.batch=2", "method.shift.length=8"]
    done = run_gsa(tmp_path, teacher, *base, "trainer.steps=80")    # saves its checkpoint at the end
    assert set(done.rngs) == {"replay", "rehearsal", "guidance", "shift"}
    uninterrupted = {k: copy.deepcopy(g) for k, g in done.rngs.items()}
    fresh = run_gsa(tmp_path / "fresh", teacher, *base, "trainer.steps=0").rngs  # streams at their seeds
    resumed = build_trainer(compose(*FAST, "method=gsa", f"teacher={teacher}", f"run_dir={tmp_path}", *base,
                              "trainer.steps=200"), tmp_path)
    try:
        schedule = GuidanceSchedule(1.0, 0.1, 200, 20, 40)

        def plans(rng):
            return [schedule.plan(80 + 10 * i, rng) for i in range(30)]

        def windows(rng):
            return resumed.batch_source.offline.sample(3, 8, rng)

        assert plans(resumed.rngs["guidance"]) == plans(uninterrupted["guidance"]) != plans(fresh["guidance"])
        got, want = windows(resumed.rngs["rehearsal"]), windows(uninterrupted["rehearsal"])
        assert all(np.array_equal(got[k], want[k]) for k in want)
        assert not np.array_equal(windows(fresh["rehearsal"])["image"], want["image"])
        for name in ("replay", "shift"):
            assert resumed.rngs[name].integers(1 << 30, size=8).tolist() == \
                uninterrupted[name].integers(1 << 30, size=8).tolist()
        # guidance's run-long counters (guidance/fraction_total) go on from the checkpoint, not from zero
        counters = done.part_states["guidance"][0]()
        assert counters["steps"] == 40 and counters["episodes"] == 2
        assert resumed.part_states["guidance"][0]() == counters
    finally:
        resumed.close()


def test_jsrl_end_to_end_stores_the_priors_prefix(tmp_path, teacher):
    """method=jsrl on real cartpole: DreamerV3 from scratch, a BC prior on the task's own trajectories (from the
    manifest), and every episode starts with the prior for h in prefixes; the executed actions are stored."""
    from student.guidance import PrefixSchedule
    data = str(read_teacher_dataset(teacher))
    cfg = compose(*LOOP, "method=jsrl", f"method.dataset={data}", "env=dmc", "task=cartpole_balance",
                  "env.episode_frames=40", "trainer.steps=120", "method.schedule.prefixes=[20]", f"run_dir={tmp_path}")
    trainer = build_trainer(cfg, tmp_path)
    try:
        assert len(trainer.artifacts["retrieved"].indices) == 3 and trainer.teacher is None
        prior = trainer.artifacts["prior"](PrefixSchedule([20], 20), 1)
        trainer.run()
    finally:
        trainer.close()
    assert (tmp_path / "bc_prior.pt").exists() and trainer.agent.updates > 0
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["task_data/trajectories"] for r in rows if "task_data/trajectories" in r] == [3.0]
    assert all(r["guidance/fraction"] == 1.0 for r in rows if "guidance/fraction" in r)  # h = T: all prior
    # the replay holds the prior's actions (stored at t + 1): replay them through the prior's own stacks
    steps = {k: np.concatenate([np.load(tmp_path / "replay" / f)[k] for f in trainer.replay.files])
             for k in ("image", "action", "is_first")}
    first = np.flatnonzero(steps["is_first"])[0]
    obs = [{"image": steps["image"][first + t], "is_first": t == 0, "is_last": False} for t in range(5)]
    expected = [prior.apply([o], np.zeros((1, 12), np.float32), 0, np.random.default_rng(0))[0][0] for o in obs]
    np.testing.assert_allclose(steps["action"][first + 1:first + 5], np.stack(expected[:4]), atol=1e-5)
    with pytest.raises(ValueError, match="holds no trajectories of task 'walker_run'"):
        build_trainer(compose(*LOOP, "method=jsrl", f"method.dataset={data}", "task=walker_run",
                              f"run_dir={tmp_path / 'x'}"), tmp_path / "x")
    with pytest.raises(ValueError, match="needs offline data of the target task: pass method.dataset=DIR"):
        build_trainer(compose(*LOOP, "method=jsrl", f"run_dir={tmp_path / 'y'}"), tmp_path / "y")


def read_teacher_dataset(teacher):
    from teacher.model import read_teacher
    return read_teacher(teacher)["dataset"]["root"]
