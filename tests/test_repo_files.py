"""The repository stays small: no tracked file over MAX_KB (run dumps, checkpoints and big images belong in run
directories, not in git; docs/results keep notes, tables, curves and compressed per-run metrics)."""
import subprocess

import pytest

from conftest import ROOT

MAX_KB = 500
ALLOWED: set[str] = set()   # paths (relative to the root) allowed to be larger, each with a reason in a comment


def test_no_tracked_file_is_large():
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (FileNotFoundError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    paths = [p for p in out.decode().split("\0") if p]
    large = {p: (ROOT / p).stat().st_size // 1024 for p in paths if (ROOT / p).is_file()}
    large = {p: kb for p, kb in large.items() if kb > MAX_KB and p not in ALLOWED}
    assert not large, f"tracked files over {MAX_KB} KB (shrink them or keep them out of git): {large}"
