"""Executed actions in a run's replay, per block of 10 episodes (Meta-World: dims dx, dy, dz, gripper).

    python docs/results/drawer_close_vid2act/analysis/actions.py RUN_DIR [RUN_DIR ...]

Mean and standard deviation per dim, and the fraction of saturated actions (|a| > 0.95). A guidance prior
that replays near-constant actions shows as a standard deviation near 0 in the first blocks.
"""
import glob
import pathlib
import sys

import numpy as np

for run in sys.argv[1:]:
    episodes = [np.load(f)["action"][1:, :4] for f in sorted(glob.glob(f"{run}/replay/*.npz"))]
    episodes = [e for e in episodes if len(e) >= 99]
    print(pathlib.Path(run).name)
    for i in range(0, len(episodes), 10):
        a = np.concatenate(episodes[i:i + 10])
        print(f"   episodes {i:3d}-{i + 9:3d}  mean {np.round(a.mean(0), 2)}  std {np.round(a.std(0), 2)}  "
              f"saturated {(np.abs(a) > 0.95).mean():.2f}")
