"""benchmarks.vae_prior on a tiny real hybrid run: its own VAE and a retrained one act alone with a sampled latent
and with z = 0, on a copy of the run (the run directory is left as it was)."""
import json

from benchmarks.vae_prior import main
from conftest import collect_random, pretrain_cfg, train_run
from teacher.pretrain import Pretrainer
from student_helpers import FAST, GSA_FAST


def test_the_vae_prior_acts_alone_sampled_and_at_its_mean(tmp_path):
    data = collect_random(tmp_path / "data", tasks=("cartpole_balance",), episodes=3, frames=40)
    Pretrainer(pretrain_cfg(data, tmp_path / "teacher", "steps=2", "eval_every=2"), tmp_path / "teacher").run()
    run = tmp_path / "run"
    train_run(run, *FAST, "method=hybrid", f"teacher={tmp_path / 'teacher' / 'teacher.pt'}", "task=cartpole_balance",
              "trainer.steps=60", *GSA_FAST)
    metrics = (run / "metrics.jsonl").read_text()
    out = tmp_path / "vae.json"
    rows = main([str(run), "--episodes", "1", "--kl", "0.5", "--windows", "cold", "warm", "--updates", "3",
                 "--out", str(out)])
    assert [(r["vae"], r["windows"], r["prior_z"]) for r in rows] == [
        ("the run's", "cold", "sample"), ("the run's", "cold", "zero"), ("retrained", "cold", "sample"),
        ("retrained", "cold", "zero"), ("retrained", "warm", "sample"), ("retrained", "warm", "zero")]
    for r in rows:
        assert r["task"] == "cartpole_balance" and r["episodes"] == 1 and r["return"] > 0 and r["action_mse"] >= 0
        assert 0.0 <= r["success_final"] <= r["success_any"] <= 1.0
    assert json.loads(out.read_text()) == rows
    assert (run / "metrics.jsonl").read_text() == metrics  # the run itself is not touched
