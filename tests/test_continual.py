"""Continual task adaptation on real DMC cartpole tasks with the tiny model: PackNet's masks through real
updates, a run started from another run's checkpoint (parts and replay), `python -m transfer.continual` killed
inside the second task and rerun (finished tasks skipped, the interrupted one resumed, forgetting rows
complete and not duplicated), gsa's command path, the shipped sequence file and bad input."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import ROOT, compose, train_run
from core import checkpoint
from student.packnet import find
from transfer import continual
from transfer.build import build_trainer
from transfer.sweep import finished

FAST = ["preset=quick_dmc", "env.action_repeat=2", "env.episode_frames=60", "trainer.warmup=40", "model.ac.horizon=4", "trainer.batch_size=2",
        "trainer.batch_length=8", "trainer.train_ratio=16", "trainer.eval_every=1000000", "trainer.eval_episodes=1",
        "trainer.final_eval_episodes=1", "trainer.log_every=20", "trainer.parallel=false", "trainer.threads=1",
        "logger.wandb=disabled", "logger.progress=false", "logger.tensorboard=false"]
PACKNET = ["method.packnet.enabled=true", "method.packnet.prune=0.5"]
TASKS = ["cartpole_balance", "cartpole_swingup"]


def train(run_dir, *overrides):
    return train_run(run_dir, *FAST, *overrides)


def actor_params(trainer):
    return [p.detach().clone() for p in trainer.agent.ac.actor.parameters()]


def test_packnet_keeps_earlier_tasks_weights_and_masks_evaluation(tmp_path):
    first = train(tmp_path / "0", *PACKNET, f"task={TASKS[0]}", "trainer.steps=80")
    assert continual.prune(tmp_path / "0", 0)["packnet/kept"] == pytest.approx(0.5, abs=0.01)
    assert continual.prune(tmp_path / "0", 0) is None  # once: the checkpoint records the pruned tasks
    saved = checkpoint.load(tmp_path / "0" / "checkpoint.pt")["agent"]["model"]
    names = [n for n, _ in first.agent.ac.actor.named_parameters()]
    owners = [saved[f"ac.actor.packnet.owner{i}"] for i in range(len(names))]
    weights = [saved[f"ac.actor.{n}"] for n in names]
    assert int(saved["ac.actor.packnet.pruned"]) == 1
    for w, o in zip(weights, owners):
        if w.dim() >= 2:  # half of each matrix kept (the larger magnitudes), the rest zero and free
            assert (o == 1).sum() == o.numel() - round(o.numel() / 2) and set(o.unique().tolist()) == {0, 1}
            assert (w[o == 0] == 0).all() and w[o == 1].abs().min() >= w[o == 0].abs().max()
        else:  # biases and norms: the first task's
            assert (o == 1).all()

    # task 1 starts from the pruned checkpoint (actor with its owner maps, world model; a fresh critic) and
    # trains with weight decay, which would move every weight an optimiser step touches
    decay = ["model.actor_opt.weight_decay=0.1", f"init.checkpoint={tmp_path / '0' / 'checkpoint.pt'}",
             "init.keep=[wm,actor]"]
    second = build_trainer(compose(*FAST, *PACKNET, *decay, f"task={TASKS[1]}", "trainer.steps=80",
                                   f"run_dir={tmp_path / '1'}"), tmp_path / "1")
    try:
        start = actor_params(second)
        maps = find(second.agent)
        assert all(torch.equal(a, b) for a, b in zip(start, weights))       # pruned entries still exactly zero
        assert all(torch.equal(maps.owner(i), o) for i, o in enumerate(owners))
        second.run()
        end = actor_params(second)
        assert second.agent.updates >= 15
        for a, b, o in zip(start, end, owners):
            assert torch.equal(a[o == 1], b[o == 1])                       # task 0's weights did not move at all
        assert any((b[o == 0] != 0).any() for b, o in zip(end, owners) if b.dim() >= 2)  # freed ones trained
        maps.prune(1, 0.5)  # task 1 keeps half of what it trained, the rest zero and free again
        for i, (b, o) in enumerate(zip(second.agent.ac.actor.parameters(), owners)):
            now = maps.owner(i)
            assert torch.equal(now == 1, o == 1) and (b[now == 0] == 0).all()
            if b.dim() >= 2:
                assert (now == 2).sum() == (o == 0).sum() - round(int((o == 0).sum()) / 2)
        maps.keep_tasks(0)   # evaluating task 0: only task 0's weights, as they were
        for a, b, o in zip(start, second.agent.ac.actor.parameters(), owners):
            assert torch.equal(b[o == 1], a[o == 1]) and (b[o != 1] == 0).all()
        with pytest.raises(ValueError, match="task 2 has no mask"):
            maps.keep_tasks(2)
        # the control: without the restore after each step, weight decay moves owned weights (gradients zeroed)
        owned = [p.detach().clone() for p in second.agent.ac.actor.parameters()]
        maps.after = lambda: None
        second.agent.train_step({k: torch.as_tensor(v) for k, v in second.replay.sample(2, 8).items()})
        assert any(not torch.equal(a[o == 1], b[o == 1])
                   for a, b, o in zip(owned, second.agent.ac.actor.parameters(), owners))
    finally:
        second.close()


def test_init_loads_the_listed_parts_and_adopts_the_replay(tmp_path):
    source = train(tmp_path / "a", f"task={TASKS[0]}", "trainer.steps=80")
    state = checkpoint.load(tmp_path / "a" / "checkpoint.pt")
    init = [f"init.checkpoint={tmp_path / 'a' / 'checkpoint.pt'}", "init.keep=[wm,actor]", "init.replay=true"]
    cfg = compose(*FAST, *init, f"task={TASKS[1]}", "trainer.steps=120", f"run_dir={tmp_path / 'b'}")
    trainer = build_trainer(cfg, tmp_path / "b")
    try:
        own, saved = trainer.agent.state_dict(), state["agent"]["model"]
        loaded = [k for k in own if k.startswith(("wm.", "ac.actor."))]
        assert loaded and all(torch.equal(own[k], saved[k]) for k in loaded)
        critic = [k for k in own if k.startswith(("ac.critic.", "ac.slow_critic.", "ac.retnorm."))]
        assert any(not torch.equal(own[k], saved[k]) for k in critic)  # fresh, not the trained critic
        assert not trainer.agent.wm_opt.opt.state and not trainer.agent.actor_opt.opt.state  # fresh optimisers
        assert len(trainer.replay) == len(source.replay) > 0 and trainer.step == 0
        assert all(name.startswith("p") for name in trainer.replay.files)
        first = trainer.replay.files[0]
        assert os.path.samefile(tmp_path / "b" / "replay" / first, tmp_path / "a" / "replay" / state["replay_files"][0])
        assert (trainer.replay.sample(16, 8)["reward_mask"] == 0).all()  # another task's rewards
        trainer.run()
        mask = trainer.replay.sample(256, 8)["reward_mask"]
        assert 0 < mask.mean() < 1
    finally:
        trainer.close()
    files = checkpoint.load(tmp_path / "b" / "checkpoint.pt")["replay_files"]
    adopted = len(state["replay_files"])
    assert all(f.startswith("p") for f in files[:adopted]) and all(f.startswith("s") for f in files[adopted:])
    # a resume loads the run's own checkpoint (the adopted steps included) and ignores init
    again = build_trainer(compose(*FAST, *init, f"task={TASKS[1]}", "trainer.steps=140", f"run_dir={tmp_path / 'b'}"),
                          tmp_path / "b")
    try:
        assert again.step == 120 and again.replay.files == files and len(again.replay) == len(trainer.replay)
        mine = checkpoint.load(tmp_path / "b" / "checkpoint.pt")["agent"]["model"]
        assert all(torch.equal(v, mine[k]) for k, v in again.agent.state_dict().items())
    finally:
        again.close()
    with pytest.raises(FileNotFoundError, match="init.checkpoint=.*no such file"):
        build_trainer(compose(*FAST, "init.checkpoint=nowhere/checkpoint.pt"), tmp_path / "c")
    with pytest.raises(ValueError, match="init.keep: unknown part 'policy'"):
        build_trainer(compose(*FAST, f"init.checkpoint={tmp_path / 'a' / 'checkpoint.pt'}", "init.keep=[policy]"),
                      tmp_path / "c")


def test_replay_adoption_masks_rewards_and_reads_only_what_memory_keeps(tmp_path, monkeypatch):
    from core.replay import Replay
    from student.rehearsal import mix

    def steps(replay, start, count, stream=0):
        for i in range(start, start + count):
            replay.add(stream, dict(image=np.full((4, 4, 3), i % 256, np.uint8), action=np.full(2, i, np.float32),
                                    reward=np.float32(i), is_first=i == start, is_last=i == start + count - 1,
                                    is_terminal=False))

    old = Replay(tmp_path / "old", 100, 2, (4, 4, 3), 2)
    steps(old, 0, 10), steps(old, 100, 10, stream=1)
    new = Replay(tmp_path / "new", 12, 1, (4, 4, 3), 2)   # one stream: both old streams go into it
    new.adopt(tmp_path / "old", old.files)
    steps(new, 1000, 6)
    assert new.files[:2] == ["p00-0000000-10.npz", "p00-0000001-10.npz"] and new.total == 26
    batch = new.sample(64, 4)  # (B, T): memory holds the newest 12 steps, 6 adopted then 6 own
    np.testing.assert_array_equal(batch["reward_mask"], (batch["reward"] >= 1000).astype(np.float32))
    # rehearsal keeps the replay's mask for its online rows and masks the offline rows
    offline = dict(image=batch["image"][:2], action=batch["action"][:2], is_first=batch["is_first"][:2],
                   is_terminal=batch["is_terminal"][:2])
    mixed = mix({k: v[:3] for k, v in batch.items()}, offline)
    np.testing.assert_array_equal(mixed["reward_mask"], np.concatenate([batch["reward_mask"][:3], np.zeros((2, 4))]))
    # a resume reads only the files memory keeps (the first adopted file is wholly overwritten) and samples alike
    read = []
    again = Replay(tmp_path / "new", 12, 1, (4, 4, 3), 2, seed=5)
    monkeypatch.setattr(again, "_read", lambda path: read.append(path.name) or Replay._read(again, path))
    new.flush()
    again.load(new.files)
    assert read == new.files[1:] and again.total == new.total and again.files == new.files
    new.rng = np.random.default_rng(5)
    assert all(np.array_equal(a, b) for a, b in zip(new.sample(8, 4).values(), again.sample(8, 4).values()))


def sequence_file(tmp_path, teacher="none.pt"):
    spec = dict(name="seq", tasks=TASKS, eval_episodes=1, common=[*FAST, "trainer.steps=${frames}",
                                                                   "trainer.checkpoint_every=40"],
                variants={"finetune": {"overrides": ["method=dreamer"], "keep": ["wm", "actor", "critic"]},
                          "packnet": {"overrides": ["method=dreamer", *PACKNET], "keep": ["wm", "actor"]},
                          "gsa": {"overrides": ["method=gsa", "teacher=${teacher}", "method.retrieval.k=3",
                                                "method.retrieval.queries=2", "method.bc.steps=4", "method.bc.batch=8",
                                                "method.schedule.duration=200", "method.shift.every=0"],
                                  "keep": ["wm", "actor", "critic"], "replay": True}},
                vars={"frames": 120, "teacher": str(teacher)})
    path = tmp_path / "seq.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


def rows(path):
    return [(r["trained_through"], r["task_index"]) for r in map(json.loads, path.read_text().splitlines())]


def test_a_sequence_killed_inside_its_second_task_resumes(tmp_path, capsys):
    seq, root = sequence_file(tmp_path), tmp_path / "root"
    args = [str(seq), "--root", str(root), "--variants", "finetune", "packnet"]
    chains = {v: root / "seq" / v / "seed0" for v in ("finetune", "packnet")}
    interrupted = chains["packnet"] / f"1-{TASKS[1]}"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "transfer.continual", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 400
    while not (interrupted / "checkpoint.pt").exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "the last task wrote no checkpoint within 400 s"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver, its transfer.run and everything they started
    proc.wait()
    assert all(finished(chains["finetune"] / f"{i}-{t}", 120) for i, t in enumerate(TASKS))
    assert finished(chains["packnet"] / f"0-{TASKS[0]}", 120) and not finished(interrupted)
    assert rows(chains["finetune"] / "forgetting.jsonl") == [(0, 0), (1, 0), (1, 1)]
    assert rows(chains["packnet"] / "forgetting.jsonl") == [(0, 0)]

    assert continual.main(args) == 0
    out = capsys.readouterr().out
    assert out.count("already done, skipped") == 3
    assert f"[4/4] packnet {TASKS[1]} seed0: started (resuming)" in out and "seed0: done in" in out
    assert "resumed from" in (interrupted.parent / f"{interrupted.name}.log").read_text()
    first_log = (chains["packnet"] / f"0-{TASKS[0]}.log").read_text()
    assert first_log.count("$ ") == 1                                  # task 0 was not run again
    metrics = (chains["packnet"] / f"0-{TASKS[0]}" / "metrics.jsonl").read_text()
    assert metrics.count("packnet/kept") == 1                          # nor pruned again
    assert rows(chains["packnet"] / "forgetting.jsonl") == [(0, 0), (1, 0), (1, 1)]
    # task 1 started from task 0's pruned actor: task 0's weights are in task 1's final checkpoint unchanged
    before = checkpoint.load(chains["packnet"] / f"0-{TASKS[0]}" / "checkpoint.pt")["agent"]["model"]
    after = checkpoint.load(interrupted / "checkpoint.pt")["agent"]["model"]
    assert int(after["ac.actor.packnet.pruned"]) == 2
    params = [k for k in before if k.startswith("ac.actor.net.")]  # in named_parameters order: owner0, owner1, ...
    for i, name in enumerate(params):
        owned = before[f"ac.actor.packnet.owner{i}"] == 1
        assert owned.any() and torch.equal(before[name][owned], after[name][owned])
    report = (root / "seq" / "report" / "report.md").read_text()
    assert "Forgetting" in report and "| packnet |" in report and "| finetune |" in report
    assert (root / "seq" / "report" / "curves.png").stat().st_size > 0
    forgetting = (root / "seq" / "report" / "forgetting.csv").read_text().splitlines()
    assert len(forgetting) == 1 + 2 * 3
    # once more: nothing runs, nothing is evaluated again
    saved = {v: (c / "forgetting.jsonl").read_bytes() for v, c in chains.items()}
    assert continual.main(args) == 0
    out = capsys.readouterr().out
    assert out.count("already done, skipped") == 4 and "started" not in out
    assert {v: (c / "forgetting.jsonl").read_bytes() for v, c in chains.items()} == saved
    from transfer.report.runs import read_run
    assert read_run(interrupted).method == "dreamer packnet init=wm+actor"
    assert read_run(chains["finetune"] / f"0-{TASKS[0]}").method == "dreamer"


def test_the_shipped_sequence_composes_and_dry_runs(tmp_path, capsys):
    path = ROOT / "configs" / "continual" / "quadruped.yaml"
    seq = continual.load_sequence(path)
    assert seq["tasks"][:2] == ["quadruped_stand", "quadruped_walk"]
    assert set(seq["variants"]) == {"gsa", "finetune", "packnet"}
    jobs = continual.plan(seq, tmp_path)
    assert len(jobs) == 18
    from transfer.build import INIT_PARTS
    assert set(continual.PARTS) == set(INIT_PARTS)  # the driver's check of keep: is the builder's
    for job in jobs[:6]:  # each variant's first and second task
        cfg = compose(*[o for o in job.overrides if not o.startswith("run_dir=")])
        assert cfg.task == job.task and cfg.env.action_repeat == 2 and cfg.trainer.steps == 10000
        if job.task == "quadruped_walk":
            assert cfg.init.checkpoint.endswith("0-quadruped_stand/checkpoint.pt")
            assert list(cfg.init.keep) == {"gsa": ["wm", "actor", "critic"], "finetune": ["wm", "actor", "critic"],
                                           "packnet": ["wm", "actor"]}[job.label]
            assert cfg.init.replay == (job.label == "gsa")
        assert cfg.method.get("packnet", {}).get("enabled", False) == (job.label == "packnet")
    assert continual.main([str(path), "--root", str(tmp_path), "--dry-run", "--set", "frames=300000"]) == 0
    out = capsys.readouterr().out
    assert "18 runs (0 done, 18 missing)" in out and "trainer.steps=300000" in out and not any(tmp_path.iterdir())


@pytest.mark.parametrize("argv, message", [
    (["--variants", "nope"], "--variants ['nope']: not in"),
    (["--", "init.replay=true"], "sets init.replay, which transfer.continual sets"),
    (["--", "task=walker_walk"], "sets task"),
    (["--", "trainer.stepz=5"], "do not compose"),
])
def test_bad_input_fails_with_one_line(tmp_path, capsys, argv, message):
    assert continual.main([str(sequence_file(tmp_path)), "--root", str(tmp_path), "--dry-run", *argv]) == 2
    assert message in capsys.readouterr().err


def test_an_unknown_task_fails_before_anything_runs(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(dict(tasks=["cartpole_balance", "cartpole_balanse"], common=FAST,
                                    variants={"finetune": {"overrides": ["method=dreamer"]}})))
    assert continual.main([str(path), "--root", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "cartpole_balanse" in err and not (tmp_path / "r").exists()
