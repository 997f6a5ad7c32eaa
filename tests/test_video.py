"""Videos (logger.video): the mp4 / GIF helpers round-trip, a real training run writes one evaluation
episode per evaluation (file, TensorBoard, wandb) and nothing when off, and teacher pretraining writes
open-loop (truth | prediction | error) videos next to its grids."""
import imageio.v2 as imageio
import imageio.v3 as iio
import numpy as np
import pytest

from conftest import collect_random, pretrain_cfg, train_run
from core import video
from teacher import openloop
from teacher.pretrain import Pretrainer

# tiny DMC runs as in test_training.py: episodes of 60 frames at action repeat 2 (30 agent steps, 31 frames)
FAST = ["preset=quick_dmc", "env.action_repeat=2", "env.episode_frames=60", "trainer.warmup=40", "model.ac.horizon=4", "trainer.batch_size=2",
        "trainer.batch_length=8", "trainer.train_ratio=16", "trainer.steps=60", "trainer.eval_every=60",
        "trainer.eval_episodes=1", "trainer.final_eval_episodes=1", "trainer.log_every=20", "logger.progress=false",
        "trainer.parallel=false"]


def read(path) -> tuple[int, tuple[int, int]]:
    """(frames, (width, height)) of a video file, as imageio's ffmpeg reader sees it."""
    with imageio.get_reader(path, format="FFMPEG") as reader:
        return reader.count_frames(), reader.get_meta_data()["size"]


def test_mp4_and_gif_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (7, 64, 64, 3), dtype=np.uint8)  # (L, h, w, 3)
    path = video.write_mp4(tmp_path / "sub" / "a.mp4", frames)
    assert read(path) == (7, (64, 64))
    assert 0 < path.stat().st_size < 200_000
    assert read(video.write_mp4(tmp_path / "odd.mp4", frames[:3, :63, :61])) == (3, (62, 64))  # padded to even
    smooth = np.repeat(np.linspace(0, 255, 64, dtype=np.uint8)[None, None, :, None], 64, 1).repeat(3, 3)
    smooth = np.stack([np.roll(smooth[0], i, 1) for i in range(10)])  # (10, 64, 64, 3) moving gradient
    back = iio.imread(video.gif_bytes(smooth), index=None)  # (10, 64, 64, 3)
    assert back.shape == smooth.shape and np.abs(back.astype(int) - smooth).mean() < 4
    assert iio.imread(video.gif_bytes(smooth, max_frames=4), index=None).shape[0] == 4  # every 3rd frame
    with pytest.raises(ValueError, match="uint8"):
        video.write_mp4(tmp_path / "b.mp4", frames.astype(np.float32))


def test_without_ffmpeg_a_video_becomes_a_gif_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    def no_ffmpeg(*args, **kwargs):
        raise ImportError("The `FFMPEG` plugin is not installed. Use `pip install imageio[ffmpeg]` to install it.")
    monkeypatch.setattr(imageio, "get_writer", no_ffmpeg)
    monkeypatch.setattr(video, "_warned", [])
    frames = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)  # (L, h, w, 3)
    paths = [video.save(tmp_path / f"e{i}.mp4", frames) for i in range(2)]
    assert [p.name for p in paths] == ["e0.gif", "e1.gif"] and not list(tmp_path.glob("*.mp4"))
    assert iio.imread(paths[0], index=None).shape == frames.shape
    assert capsys.readouterr().err.count("writing GIFs instead") == 1  # one line per process, not per video


def test_recorder_keeps_the_first_episode_of_one_env():
    def obs(i, first=False, last=False):
        return {"image": np.full((4, 4, 3), i, np.uint8), "is_first": first, "is_last": last}
    rec = video.EpisodeRecorder(index=1)
    assert rec.frames() is None
    rec([obs(0), obs(9)])  # env 1 mid-episode: not recorded
    rec([obs(0), obs(1, first=True)])
    rec([obs(0), obs(2)])
    rec([obs(0), obs(3, last=True)])
    rec([obs(0), obs(4, first=True)])  # the next episode: ignored
    assert rec.frames().shape == (3, 4, 4, 3) and list(rec.frames()[:, 0, 0, 0]) == [1, 2, 3]


def run(tmp_path, *overrides):
    return train_run(tmp_path, *FAST, *overrides)


def test_training_run_writes_an_eval_video_per_evaluation(tmp_path):
    run(tmp_path, "logger.wandb=offline")
    # the evaluation at step 60 and the final one: 31 frames (reset + 30 agent steps) of 64 x 64
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == ["eval_0000060.mp4", "final_0000060.mp4"]
    for path in (tmp_path / "videos").iterdir():
        assert read(path) == (31, (64, 64))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert {"eval/video", "final/video"} <= set(events.Tags()["images"])
    gif = events.Images("eval/video")[0]
    shown = iio.imread(gif.encoded_image_string, index=None)  # Pillow merges identical consecutive frames
    assert gif.step == 60 and 20 < len(shown) <= 31 and shown.shape[1:] == (64, 64, 3)
    assert len(list((tmp_path / "wandb").glob("offline-run-*/files/media/videos/**/*.mp4"))) == 2


def test_training_run_without_videos_keeps_no_frames(tmp_path, monkeypatch):
    import transfer.loop
    monkeypatch.setattr(transfer.loop, "EpisodeRecorder", None)  # would fail if the loop made one
    run(tmp_path, "logger.video=false", "logger.wandb=disabled")
    assert (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "videos").exists()


def test_pretraining_writes_openloop_videos(tmp_path):
    data = collect_random(tmp_path / "data", tasks=("cartpole_balance",), episodes=4, frames=40)
    run_dir = tmp_path / "run"
    Pretrainer(pretrain_cfg(data, run_dir, "steps=2", "eval_every=2", "log_every=1"), run_dir).run()
    names = sorted(p.name for p in (run_dir / "openloop").iterdir())
    assert names == ["step0000000.mp4", "step0000000.png", "step0000002.mp4", "step0000002.png"]
    # batch_length 12 frames of 2 samples (rows) x (truth | prediction | error) of 64 x 64
    assert read(run_dir / "openloop" / "step0000002.mp4") == (12, (3 * 64, 2 * 64))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert [e.step for e in events.Images("heldout/openloop")] == [0, 2]
    off = tmp_path / "off"
    Pretrainer(pretrain_cfg(data, off, "steps=1", "eval_every=1", "logger.video=false"), off).run()
    assert sorted(p.name for p in (off / "openloop").iterdir()) == ["step0000000.png", "step0000001.png"]


def test_openloop_frames_put_truth_prediction_and_error_side_by_side():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 256, (3, 5, 8, 8, 3), dtype=np.uint8)  # (B, T, R, R, 3)
    pred = rng.integers(0, 256, (3, 5, 8, 8, 3), dtype=np.uint8)
    frames = openloop.video_frames(truth, pred, context=2, samples=2)  # (T, 2R, 3R, 3)
    assert frames.shape == (5, 16, 24, 3)
    np.testing.assert_array_equal(frames[4, 8:, :8], truth[1, 4])
    np.testing.assert_array_equal(frames[1, :8, 8:16], pred[0, 1])  # observed: no marker
    np.testing.assert_array_equal(frames[3, :8, 10:16], pred[0, 3, :, 2:])
    assert (frames[3, :8, 8:10] == (255, 0, 0)).all()  # imagined: red bar
    np.testing.assert_array_equal(frames[4, 8:, 16:], np.abs(truth[1, 4].astype(int) - pred[1, 4]))
