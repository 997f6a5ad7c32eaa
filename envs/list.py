"""Print the task registry: every task with suite, embodiment, native action dim, episode length
(agent steps) and action repeat, using each suite's default config in configs/env/<suite>.yaml.

    python -m envs.list [--suite dmc|metaworld|driving|carla]
"""
from __future__ import annotations

import argparse
import pathlib

from omegaconf import OmegaConf

from envs import SUITES, TaskInfo, suite_module

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs" / "env"


def suite_config(suite: str) -> dict:
    """The default env config of a suite (configs/env/<suite>.yaml) as a plain dict."""
    return OmegaConf.to_container(OmegaConf.load(CONFIGS / f"{suite}.yaml"), resolve=True)


def registry(suites=None) -> list[TaskInfo]:
    rows = []
    for suite in suites or SUITES:
        rows += suite_module(suite).tasks(suite_config(suite))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=list(SUITES), action="append", help="only these suites")
    rows = registry(parser.parse_args(argv).suite)
    head = ("suite", "task", "embodiment", "action dim", "episode steps", "action repeat", "note")
    table = [head] + [(r.suite, r.task, r.embodiment, str(r.native_action_dim), str(r.episode_length),
                       str(r.action_repeat), r.note) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for i, row in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(f"\n{len(rows)} tasks. Run one with: python -m transfer.run env=<suite> task=<task>")


if __name__ == "__main__":
    main()
