"""Clips on disk for video tasks: a folder of frames, a GIF or a video file in; GIF or MP4 out.

A clip is read as its first `num_frames` frames, uint8 (T, H, W, 3) RGB; a folder of
frames is read in the sorted order of its image files' names. GIFs are read and written
with Pillow, video files with OpenCV (MP4: the 'mp4v' codec). Writes are atomic.
"""

import os
import pathlib

import cv2
import numpy as np
from PIL import Image
from PIL import ImageSequence

from lavin_jax.data import sources
from lavin_jax.data import videos
from lavin_jax.io import files

CLIP_FILE_EXTENSIONS = (".gif",) + videos.EXTENSIONS


def is_clip(path: pathlib.Path) -> bool:
  """A folder (of frames) or a GIF / video file."""
  return path.is_dir() or path.suffix.lower() in CLIP_FILE_EXTENSIONS


def frame_files(folder: pathlib.Path) -> list[pathlib.Path]:
  """The image files of a folder of frames, sorted by name."""
  return sorted(p for p in folder.iterdir() if p.suffix.lower() in sources.IMAGE_EXTENSIONS)


def clip_length(path: pathlib.Path) -> int:
  """Frames of a clip, read from its headers (nothing decoded but a folder's listing)."""
  if path.is_dir():
    return len(frame_files(path))
  if not path.is_file():
    raise FileNotFoundError(f"No clip (frame folder, GIF or video file) at {path}.")
  if path.suffix.lower() == ".gif":
    try:
      with Image.open(path) as image:
        return int(getattr(image, "n_frames", 1))
    except (OSError, SyntaxError, ValueError) as e:
      raise ValueError(f"Cannot read GIF {path}: {e}. Replace or delete the file.") from e
  capture = cv2.VideoCapture(os.fspath(path))
  try:
    return max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0) if capture.isOpened() else 0
  finally:
    capture.release()


def check_clip(path: pathlib.Path, num_frames: int) -> None:
  """Raises unless the clip at `path` has at least `num_frames` frames."""
  length = clip_length(path)
  if length < num_frames:
    raise ValueError(
      f"Clip {path} has {length} frames; {num_frames} are needed (--num_frames). Use a "
      "longer clip or lower --num_frames (1 + 4k frames)."
    )


def read_clip(path: pathlib.Path, num_frames: int) -> np.ndarray:
  """The first `num_frames` frames of a clip, uint8 (T, H, W, 3)."""
  check_clip(path, num_frames)
  if path.is_dir():
    frames = [sources.read_image(p) for p in frame_files(path)[:num_frames]]
  elif path.suffix.lower() == ".gif":
    with Image.open(path) as image:
      frames = [
        np.asarray(frame.convert("RGB"))
        for _, frame in zip(range(num_frames), ImageSequence.Iterator(image))
      ]
  else:
    return videos.read_frames(path, 0, num_frames)
  if len({f.shape for f in frames}) > 1:
    raise ValueError(f"The frames of {path} differ in size; make them all one size.")
  return np.stack(frames)


def write_clip(path: pathlib.Path, frames: np.ndarray, fps: int) -> None:
  """Writes uint8 (T, H, W, 3) frames as a GIF or an MP4, by the suffix of `path`."""
  suffix = path.suffix.lower()
  if suffix == ".gif":
    images = [Image.fromarray(f) for f in frames]
    files.atomic_write(
      path,
      lambda tmp: images[0].save(
        tmp,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=round(1000 / fps),
        loop=0,
      ),
    )
  elif suffix == ".mp4":
    files.atomic_write(path, lambda tmp: _write_mp4(tmp, frames, fps))
  else:
    raise ValueError(f"Cannot write a clip as {path}: use a .gif or .mp4 file name.")


def _write_mp4(tmp: str, frames: np.ndarray, fps: int) -> None:
  named = tmp + ".mp4"  # OpenCV picks the container by the file name
  height, width = frames.shape[1:3]
  writer = cv2.VideoWriter(named, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
  try:
    if not writer.isOpened():
      raise OSError(f"OpenCV cannot write MP4 files here ({named}); write a GIF instead.")
    for frame in frames:
      writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    os.replace(named, tmp)
  finally:
    writer.release()
    if os.path.exists(named):
      os.unlink(named)
