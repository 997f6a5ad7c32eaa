"""Training-episode success rate / mean return per 4k-frame block, from metrics.jsonl.

    python docs/results/drawer_close_vid2act/analysis/training_success.py RUN_DIR [RUN_DIR ...]
"""
import json
import pathlib
import sys

import numpy as np

print(f"{'run':28s}" + "".join(f"{f'{a // 1000}-{(a + 4000) // 1000}k':>14s}" for a in range(0, 20000, 4000)))
for run in sys.argv[1:]:
    rows = [json.loads(line) for line in open(f"{run}/metrics.jsonl") if line.strip()]
    episodes = [(r["step"], r["train/success"], r["train/return"]) for r in rows if "train/success" in r]
    cells = []
    for a in range(0, 20000, 4000):
        block = [(s, ret) for step, s, ret in episodes if a < step <= a + 4000]
        cells.append(f"{np.mean([s for s, _ in block]):.2f} / {np.mean([r for _, r in block]):5.0f}" if block else "-")
    print(f"{pathlib.Path(run).name:28s}" + "".join(f"{c:>14s}" for c in cells))
