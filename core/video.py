"""Videos of a run (logger.video): frames -> an mp4 file (imageio, libx264 through imageio-ffmpeg's own
ffmpeg binary), the same clip as an animated GIF in TensorBoard's image tab (the summary that
SummaryWriter.add_video writes, encoded here with Pillow because add_video needs moviepy) and the mp4 as a
wandb.Video. `EpisodeRecorder` keeps one env's first episode from a stream of observations (evaluation).

Frames are uint8 (L, h, w, 3): L frames, h x w pixels (e.g. 64 x 64 env images, R x R in the legend of
docs/tensor_shapes.md; composite frames such as the open-loop side-by-side are larger).
"""
from __future__ import annotations

import pathlib
import sys

import numpy as np

FPS = 20  # frames per second of every video (a DMC episode at action repeat 2, 501 frames, plays in 25 s)
TB_MAX_FRAMES = 200  # TensorBoard's GIF keeps at most this many frames (every k-th): ~0.3 MB per evaluation


def _check(frames) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
        raise ValueError(f"video frames must be uint8 (L, h, w, 3) with L > 0, got {frames.dtype} {frames.shape}")
    return frames


def write_mp4(path, frames, fps: int = FPS) -> pathlib.Path:
    """frames uint8 (L, h, w, 3) -> an H.264 mp4 at path (yuv420p, what browsers and wandb play). Odd sides
    are zero-padded by one pixel (H.264 4:2:0 needs even sides) instead of ffmpeg's resize."""
    import imageio.v2 as imageio
    frames = _check(frames)
    pad = ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0))
    if any(p[1] for p in pad):
        frames = np.pad(frames, pad)  # (L, h', w', 3), h' and w' even
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with imageio.get_writer(path, format="FFMPEG", fps=fps, codec="libx264", macro_block_size=2,
                            ffmpeg_log_level="error") as writer:
        for frame in frames:  # (h', w', 3)
            writer.append_data(frame)
    return path


def gif_bytes(frames, fps: int = FPS, max_frames: int = TB_MAX_FRAMES) -> bytes:
    """frames uint8 (L, h, w, 3) -> an animated, looping GIF in memory: every k-th frame (k = ceil(L /
    max_frames), each shown k times as long, so it plays at the same speed) on one 256-colour palette fitted
    to 16 of them (per-frame palettes take ~10x longer: ~1.8 s instead of 0.16 s for a 500-frame episode)."""
    import io

    from PIL import Image
    frames = _check(frames)
    k = -(-len(frames) // max_frames)
    frames = frames[::k]  # (l, h, w, 3), l <= max_frames
    sample = frames[:: max(1, len(frames) // 16)][:16]  # (<=16, h, w, 3)
    palette = Image.fromarray(np.concatenate(sample, 0)).quantize(256, method=Image.Quantize.MEDIANCUT)
    images = [Image.fromarray(f).quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=1000 * k / fps, loop=0)
    return buf.getvalue()


def tensorboard_video(writer, tag: str, frames, step: int, fps: int = FPS) -> None:
    """What SummaryWriter.add_video(tag, (1, L, 3, h, w)) writes when moviepy is installed: an image
    summary holding an animated GIF (TensorBoard's images tab plays it)."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    frames = _check(frames)
    image = Summary.Image(height=frames.shape[1], width=frames.shape[2], colorspace=3,
                          encoded_image_string=gif_bytes(frames, fps))
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


_warned = []


def write_video(path, frames, fps: int = FPS) -> pathlib.Path:
    """write_mp4, or where imageio has no ffmpeg (imageio-ffmpeg missing) the same clip as an animated GIF
    next to it (path with .gif, every frame), after one warning line: a run never stops over a video."""
    try:
        return write_mp4(path, frames, fps)
    except ImportError as err:
        path = pathlib.Path(path).with_suffix(".gif")
        if not _warned:
            _warned.append(True)
            print(f"warning: no mp4 videos ({str(err).splitlines()[0]}); writing GIFs instead "
                  f"(`pip install imageio-ffmpeg` for mp4)", file=sys.stderr)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gif_bytes(frames, fps, max_frames=len(frames)))
        return path


def save(path, frames, step: int = 0, tag: str | None = None, tb=None, wandb_run=None,
         fps: int = FPS) -> pathlib.Path:
    """Write frames uint8 (L, h, w, 3) to path (.mp4; .gif without ffmpeg, see write_video); with a tag also
    log them to a TensorBoard SummaryWriter (`tb`, as a GIF) and a wandb run (`wandb_run`, the file) when given."""
    path = write_video(path, frames, fps)
    if tag and tb is not None:
        tensorboard_video(tb, tag, frames, step, fps)
    if tag and wandb_run is not None:
        import wandb
        wandb_run.log({tag: wandb.Video(str(path), format=path.suffix[1:])}, step=step)
    return path


class EpisodeRecorder:
    """Called with each list of observations an env pool returns; keeps the images of env `index`'s
    first episode (from its reset observation to its is_last one; cut short if the caller stops stepping
    first) as copies. `frames()` -> uint8 (L, h, w, 3), or None before any frame."""

    def __init__(self, index: int = 0):
        self.index, self.images, self.done = index, [], False

    def __call__(self, obs: list[dict]) -> None:
        if self.done:
            return
        o = obs[self.index]
        if not self.images and not o["is_first"]:
            return  # wait for the episode's start
        self.images.append(np.array(o["image"], np.uint8))  # (h, w, 3), a copy: workers may reuse buffers
        self.done = bool(o["is_last"])

    def frames(self) -> np.ndarray | None:
        return np.stack(self.images) if self.images else None  # (L, h, w, 3)
