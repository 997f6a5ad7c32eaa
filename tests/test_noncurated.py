"""`python -m teacher.data.noncurated`: GSA's non-curated dataset (noisy Meta-World experts at several sigmas
+ random DMC episodes), built by one resumable command with its build record."""
import json

from teacher.data.dataset import OfflineDataset
from teacher.data.noncurated import main


def test_builds_records_and_resumes(tmp_path, capsys):
    argv = ["--dataset", str(tmp_path), "--mw-tasks", "reach", "drawer-open", "--noise", "0.1", "2.0",
            "--mw-episodes", "1", "--dmc-tasks", "cartpole_balance", "--dmc-episodes", "1", "--workers", "0"]
    info = main(argv)
    assert info["trajectories"] == 2 * 2 + 1 and info["per_suite"] == {"metaworld": 4, "dmc": 1}
    assert info["embodiments"] == ["cartpole", "sawyer"] and info["bytes"] > 0 and info["seconds"] > 0
    success = info["expert_success"]
    assert set(success) == {"reach", "drawer-open"} and set(success["reach"]) == {"0.1", "2"}
    assert all(0.0 <= v[1] <= v[0] <= 1.0 for t in success.values() for v in t.values())  # final implies any
    assert success["reach"]["0.1"][0] == 1.0      # the scripted reach expert with little noise succeeds
    data = OfflineDataset(tmp_path)
    mw = [r for r in data.meta if r["suite"] == "metaworld"]
    assert all(r["length"] == 101 and "success_final" in r for r in mw)   # 200 frames, action repeat 2
    recorded = json.loads((tmp_path / "build.json").read_text())
    assert recorded["commands"]["metaworld"][0] == "python -m teacher.data.collect"
    again = main([*argv, "--teacher", str(tmp_path / "teacher"), "--pretrain-steps", "2"])  # nothing new collected
    assert again["trajectories"] == 5 and again["seconds"] >= info["seconds"]
    from teacher.model import read_teacher
    teacher = read_teacher(again["teacher"])             # pretrained once on the whole dataset
    assert teacher["step"] == 2 and teacher["kind"] == "generalist"
    capsys.readouterr()
    main(["--dataset", str(tmp_path), "--report"])
    out = capsys.readouterr().out
    assert "5 trajectories" in out and "| drawer-open |" in out and "sigma 0.1" in out


def test_per_sigma_episode_counts_split_into_collect_runs(tmp_path):
    """--mw-episodes with one count per sigma: one collect run per distinct count, the same episode seeds."""
    from teacher.data.noncurated import commands, parse_args
    args = parse_args(["--dataset", str(tmp_path), "--mw-episodes", "10", "10", "10", "2", "2", "--dmc-tasks"])
    stages = commands(args)
    assert list(stages) == ["metaworld-x10", "metaworld-x2"]
    assert stages["metaworld-x10"][-5:] == ["0.1", "0.3", "0.5", "--episodes", "10"]
    assert stages["metaworld-x2"][-4:] == ["1", "2", "--episodes", "2"]
    assert list(commands(parse_args(["--dataset", str(tmp_path), "--dmc-tasks"]))) == ["metaworld"]
    import pytest
    with pytest.raises(SystemExit):
        parse_args(["--dataset", str(tmp_path), "--mw-episodes", "1", "2"])
