"""Published numbers to print beside ours (`python -m transfer.report ... --published gsa`).

Transcribed by hand from the GSA paper's appendix: Zhao et al., "Efficient Reinforcement Learning by
Guiding Generalist World Models with Non-Curated Data" (arXiv 2502.19544), Appendix I "Full Results"
(/work/shared/papers/gsa-guiding-generalist-world-models.txt, lines 594-685). Rows keep the paper's row
names; `lookup` maps our task names (walker_walk, cheetah_run_backwards, drawer-open, ...) onto them.
A missing entry ("-" in the paper: Door Close has no baseline numbers) is None. The paper averages
three seeds per task (Sec. 5). Its aggregate rows ("Mean", and "Medium", i.e. the median) are in
AGGREGATES; tests/test_report.py checks the transcribed columns against them.
"""
from __future__ import annotations

import re

# ---- Table 4 (Appendix I.2, "Episodic return of DMControl benchmark with pixel inputs") -------------
DMC_COLUMNS = ("DreamerV3@500k", "DrQv2@500k", "DreamerV3@150k", "DrQv2@150k", "GSA@150k")
DMC_TABLE4 = {
    "CartPole Balance": (994.3, 992.3, 955.8, 983.3, 995.0),
    "Acrobot Swingup": (222.1, 30.3, 85.2, 20.8, 50.3),
    "Acrobot Swingup Sparse": (2.5, 1.17, 1.7, 1.5, 26.9),
    "Acrobot Swingup Hard": (-0.2, 0.3, 2.0, 0.4, 10.7),
    "Walker Stand": (965.7, 947.6, 946.2, 742.9, 969.4),
    "Walker Walk": (949.2, 797.8, 808.9, 280.1, 959.1),
    "Walker Run": (616.6, 299.3, 224.4, 143.0, 728.0),
    "Walker Backflip": (293.6, 96.7, 128.2, 91.7, 306.0),
    "Walker Walk Backward": (942.9, 744.3, 625.9, 470.9, 863.6),
    "Walker Walk Hard": (-2.1, -9.5, -4.7, -17.1, 878.3),
    "Walker Run Backward": (363.8, 246.0, 229.4, 167.4, 349.3),
    "Cheetah Run": (843.7, 338.1, 621.4, 251.2, 526.1),
    "Cheetah Run Front": (473.8, 202.4, 143.1, 108.4, 360.5),
    "Cheetah Run Back": (657.4, 294.4, 407.6, 171.2, 446.0),
    "Cheetah Run Backwards": (693.8, 384.3, 626.6, 335.6, 542.2),
    "Cheetah Jump": (597.0, 535.6, 200.8, 251.8, 634.1),
    "Quadruped Walk": (369.3, 258.1, 145.2, 76.5, 933.6),
    "Quadruped Stand": (746.0, 442.2, 227.2, 318.9, 936.4),
    "Quadruped Run": (328.1, 296.5, 183.0, 102.8, 802.5),
    "Quadruped Jump": (689.6, 478.3, 168.3, 190.5, 813.5),
    "Quadruped Roll": (663.9, 446.0, 207.9, 126.2, 970.8),
    "Quadruped Roll Fast": (508.8, 366.9, 124.8, 164.7, 782.0),
}

# ---- Tables 2 and 3 (Appendix I.1, "Success rate of Meta-World benchmark with pixel inputs") -------
METAWORLD_COLUMNS = ("DreamerV3@1M", "DrQv2@1M", "DreamerV3@150k", "DrQv2@150k", "GSA@150k")
METAWORLD_TABLES_2_3 = {
    # Table 2
    "Assembly": (0.0, 0.0, 0.0, 0.0, 0.2),
    "Basketball": (0.0, 0.97, 0.0, 0.0, 0.4),
    "Bin Picking": (0.0, 0.93, 0.0, 0.33, 0.8),
    "Box Close": (0.13, 0.9, 0.0, 0.0, 0.9),
    "Button Press": (1.0, 0.7, 0.47, 0.13, 0.9),
    "Button Press Topdown": (1.0, 1.0, 0.33, 0.17, 1.0),
    "Button Press Topdown Wall": (1.0, 1.0, 0.73, 0.63, 1.0),
    "Button Press Wall": (1.0, 1.0, 0.93, 0.77, 1.0),
    "Coffee Button": (1.0, 1.0, 1.0, 1.0, 1.0),
    "Coffee Pull": (0.6, 0.8, 0.0, 0.6, 0.6),
    "Coffee Push": (0.67, 0.77, 0.13, 0.2, 0.7),
    "Dial Turn": (0.67, 0.43, 0.13, 0.17, 0.67),
    "Disassemble": (0.0, 0.0, 0.0, 0.0, 0.0),
    "Door Close": (None, None, None, None, 1.0),
    "Door Lock": (1.0, 0.93, 0.6, 0.97, 0.9),
    "Door Open": (1.0, 0.97, 0.0, 0.0, 0.8),
    "Door Unlock": (1.0, 1.0, 1.0, 0.63, 0.8),
    "Drawer Close": (0.93, 1.0, 0.93, 1.0, 0.9),
    "Drawer Open": (0.67, 0.33, 0.13, 0.33, 1.0),
    "Faucet Open": (1.0, 1.0, 0.47, 0.33, 1.0),
    "Faucet Close": (0.87, 1.0, 1.0, 1.0, 0.8),
    "Hammer": (1.0, 1.0, 0.07, 0.4, 1.0),
    "Hand Insert": (0.07, 0.57, 0.0, 0.1, 0.4),
    "Handle Press Side": (1.0, 1.0, 1.0, 1.0, 1.0),
    "Handle Press": (1.0, 1.0, 0.93, 0.97, 1.0),
    "Handle Pull Side": (0.67, 1.0, 0.67, 0.6, 1.0),
    "Handle Pull": (0.67, 0.6, 0.33, 0.6, 1.0),
    "Lever Pull": (0.73, 0.83, 0.0, 0.33, 0.8),
    # Table 3 (cont.)
    "Peg Insert Side": (1.0, 1.0, 0.0, 0.27, 1.0),
    "Peg Unplug Side": (0.93, 0.9, 0.53, 0.5, 0.8),
    "Pick Out of Hole": (0.0, 0.27, 0.0, 0.0, 0.3),
    "Pick Place Wall": (0.2, 0.17, 0.0, 0.0, 0.5),
    "Pick Place": (0.67, 0.67, 0.0, 0.0, 0.2),
    "Plate Slide Back Side": (1.0, 1.0, 0.93, 1.0, 1.0),
    "Plate Slide Back": (1.0, 1.0, 0.8, 0.97, 1.0),
    "Plate Slide Side": (1.0, 0.9, 0.73, 0.5, 0.5),
    "Plate Slide": (1.0, 1.0, 0.93, 1.0, 1.0),
    "Push Back": (0.33, 0.33, 0.0, 0.0, 0.2),
    "Push Wall": (0.33, 0.57, 0.0, 0.0, 0.9),
    "Push": (0.26, 0.93, 0.0, 0.13, 0.7),
    "Reach": (0.87, 0.73, 0.67, 0.43, 0.3),
    "Reach Wall": (1.0, 0.87, 0.53, 0.7, 0.9),
    "Shelf Place": (0.4, 0.43, 0.0, 0.0, 0.87),
    "Soccer": (0.6, 0.3, 0.13, 0.13, 0.67),
    "Stick Push": (0.0, 0.07, 0.0, 0.0, 0.4),
    "Stick Pull": (0.0, 0.33, 0.0, 0.0, 0.67),
    "Sweep Into": (0.87, 1.0, 0.0, 0.87, 0.9),
    "Sweep": (0.0, 0.73, 0.0, 0.3, 0.6),
    "Window Close": (1.0, 1.0, 0.93, 1.0, 0.8),
    "Window Open": (1.0, 0.97, 0.6, 1.0, 0.9),
}

# The paper's own "Mean" and "Medium" (median) rows, in the column order above.
AGGREGATES = {
    "dmc": {"mean": (541.81, 372.23, 320.86, 226.49, 631.10),
            "median": (606.8, 318.70, 204.35, 166.05, 755.0)},
    "metaworld": {"mean": (0.900, 0.753, 0.360, 0.442, 0.750),
                  "median": (0.870, 0.900, 0.130, 0.330, 0.800)},
}

# source name -> suite -> (metric the numbers are, columns, rows)
PUBLISHED = {
    "gsa": {
        "dmc": ("return", DMC_COLUMNS, DMC_TABLE4),
        "metaworld": ("success", METAWORLD_COLUMNS, METAWORLD_TABLES_2_3),
    },
}


def normalize(name: str) -> str:
    """'Walker Walk Backward', 'walker_walk_backward', 'pick-out-of-hole-v3' -> one spelling."""
    name = re.sub(r"-v\d+$", "", name.strip().lower())
    return re.sub(r"[\s_\-]+", "_", name)


def columns(source: str, suite: str) -> tuple[str, ...]:
    """The published columns for a suite (empty when the source has none for it)."""
    entry = PUBLISHED[source].get(suite)
    return entry[1] if entry else ()


def all_columns(source: str) -> list[str]:
    """Every column name the source uses, in first-seen order (DMC's first)."""
    out: list[str] = []
    for _, cols, _ in PUBLISHED[source].values():
        out += [c for c in cols if c not in out]
    return out


def lookup(source: str, suite: str, task: str) -> tuple[str | None, str | None, dict[str, float | None]]:
    """(paper row name or None, metric of the numbers, {column: value or None}) for one of our tasks.
    Raises KeyError for an unknown source; an unknown suite or task gives (None, None, {})."""
    if source not in PUBLISHED:
        raise KeyError(f"no published numbers for {source!r}; known: {', '.join(PUBLISHED)}")
    entry = PUBLISHED[source].get(suite)
    if entry is None:
        return None, None, {}
    metric, cols, rows = entry
    by_key = {normalize(row): row for row in rows}
    row = by_key.get(normalize(task))
    if row is None:
        return None, metric, {}
    return row, metric, dict(zip(cols, rows[row]))
