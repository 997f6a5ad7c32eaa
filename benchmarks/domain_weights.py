"""Which source does Vid2Act's learned domain weighting prefer in a real (tiny) run? A measurement, not a test.

    python -m benchmarks.domain_weights [--seeds 0 1] [--teacher-steps 200] [--frames 4000] [--dir /tmp/wmt-weights]
                                        [--out NAME] [student overrides, e.g. method.distill.fit=uniform]

Sources: the target's own task (cartpole_balance) and an unrelated one (walker_walk), random-policy DMC
episodes. A tiny mixture teacher is pretrained on both (task labels), then method=vid2act trains a tiny
student on cartpole_balance (preset=quick_dmc). Prints the logged mean weight of each source over env steps
and writes benchmarks/results/domain_weights.json.

Measured (2 CPU cores, 4000 student frames; weight of the target's own source at the end):
- --teacher-steps 200: seed 0 0.85, seed 1 0.14 (domain_weights.json); with method.distill.fit=uniform
  0.65 and 0.22 (domain_weights_fit_uniform.json): with so few updates the label hardly changes the
  teacher's features, and which source wins is close to a coin flip;
- --teacher-steps 1000 (~11 min per teacher): seed 0 0.87, seed 1 0.87 (domain_weights_t1000.json).
"""
from __future__ import annotations

import argparse
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def compose(name: str, overrides: list[str]):
    from hydra import compose as hydra_compose, initialize_config_dir
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        return hydra_compose(name, overrides=overrides)


def one_seed(root: pathlib.Path, seed: int, teacher_steps: int, frames: int, overrides: list[str],
             name: str) -> list[dict]:
    from teacher.data.collect import main as collect
    from teacher.pretrain import Pretrainer
    from transfer.build import build_trainer
    data, run, out = root / f"data{seed}", root / f"mixture{seed}", root / f"{name}{seed}"
    if not (data / "manifest.jsonl").exists():
        collect(["--dataset", str(data), "--suite", "dmc", "--tasks", "cartpole_balance", "walker_walk", "--policy",
                 "random", "--episodes", "4", "--workers", "0", "--seed", str(seed), "--env-config", "episode_frames=200"])
    if not (run / "teacher.pt").exists():
        Pretrainer(compose("pretrain", [f"dataset={data}", f"run_dir={run}", "kind=mixture", "model=tiny", f"seed={seed}",
                                        f"steps={teacher_steps}", f"eval_every={teacher_steps}", "batch_size=8",
                                        "batch_length=32", "workers=0", "logger.wandb=disabled", "logger.progress=false",
                                        "device=cpu"]), run).run()
    trainer = build_trainer(compose("config", ["preset=quick_dmc", "method=vid2act", f"teacher={run / 'teacher.pt'}",
                                         f"run_dir={out}", f"seed={seed}", f"trainer.steps={frames}", "trainer.warmup=1000",
                                         "trainer.log_every=500", "trainer.eval_every=1000000",
                                         "trainer.final_eval_episodes=1", "logger.wandb=disabled",
                                         "logger.progress=false", *overrides]), out)
    try:
        trainer.run()
    finally:
        trainer.close()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{"seed": seed, "step": r["step"], "cartpole_balance": r["distill/weight_cartpole_balance"],
             "walker_walk": r["distill/weight_walker_walk"]} for r in rows if "distill/weight_cartpole_balance" in r]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--teacher-steps", type=int, default=200)
    p.add_argument("--frames", type=int, default=4000)
    p.add_argument("--dir", default="/tmp/wmt-weights")
    p.add_argument("--out", default="domain_weights", help="results name: benchmarks/results/NAME.json")
    p.add_argument("overrides", nargs="*", help="transfer.run overrides for the student run")
    args = p.parse_args(argv)
    rows = []
    for seed in args.seeds:
        rows += one_seed(pathlib.Path(args.dir), seed, args.teacher_steps, args.frames, args.overrides, args.out)
    print(f"{'seed':>4} {'env step':>8} {'w cartpole_balance (target)':>28} {'w walker_walk':>14}")
    for r in rows:
        print(f"{r['seed']:>4} {r['step']:>8} {r['cartpole_balance']:>28.3f} {r['walker_walk']:>14.3f}")
    out = ROOT / "benchmarks" / "results" / f"{args.out}.json"
    out.write_text(json.dumps(dict(args=vars(args), rows=rows), indent=1))
    print("wrote", out)


if __name__ == "__main__":
    main()
