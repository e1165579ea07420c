"""A folder of video files (UCF101, Kinetics, one's own clips) read with OpenCV.

Examples (spec 'videos:DIR[,clip_frames=N]'): 'video' uint8 (T, H, W, 3) RGB clips of
every video file under DIR (recursively, sorted by path; `EXTENSIONS`): back-to-back
windows of clip_frames frames from each file's first frame (`clips.windows`), or with
clip_frames=0 each file whole. Frame counts and sizes come from the files' headers,
read when the source is made; a file that cannot be opened is named then, a file
shorter than its header says when its clip is read. Enough for frame prediction and
video restoration; there are no annotations.
"""

import os
import pathlib

import cv2
import numpy as np

from lavin_jax.data import clips
from lavin_jax.data import sources

EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".m4v", ".wmv")


def _header(path: pathlib.Path) -> tuple[int, int, int]:
  """(frames, height, width) from a video file's header."""
  capture = cv2.VideoCapture(os.fspath(path))
  try:
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    if not capture.isOpened() or frames <= 0 or height <= 0 or width <= 0:
      raise ValueError(
        f"Cannot read video {path}: OpenCV finds no frames. Re-encode it (e.g. ffmpeg -i "
        "IN -c:v libx264 OUT.mp4) or remove it."
      )
  finally:
    capture.release()
  return frames, height, width


def read_frames(path: pathlib.Path, start: int, count: int) -> np.ndarray:
  """uint8 (count, H, W, 3) RGB frames [start, start + count) of a video file."""
  capture = cv2.VideoCapture(os.fspath(path))
  frames = []
  try:
    skipped = 0
    while skipped < start and capture.grab():  # Decoded in order: exact, unlike seeking.
      skipped += 1
    while skipped == start and len(frames) < count:
      ok, frame = capture.read()
      if not ok:
        break
      frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
  finally:
    capture.release()
  if len(frames) < count:
    raise ValueError(
      f"Video {path} ended before frame {start + count}, which its header promised; "
      "re-encode it (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4) or remove it."
    )
  return np.stack(frames)


class VideoFiles:
  """Clips of the video files under a folder (see the module docstring)."""

  keys = ("video",)
  class_names = None

  def __init__(self, folder: str | os.PathLike, clip_frames: int = 0, min_size=None):
    self.folder = pathlib.Path(folder)
    self.min_size = min_size
    if not self.folder.is_dir():
      raise FileNotFoundError(f"Video folder {self.folder} does not exist.")
    self.paths = sorted(
      p for p in self.folder.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS
    )
    if not self.paths:
      raise ValueError(
        f"Video folder {self.folder} holds no videos (looked for {', '.join(EXTENSIONS)})."
      )
    lengths = []
    for path in self.paths:
      frames, height, width = _header(path)
      sources.check_size(height, width, min_size, f"Video {path}")
      lengths.append(frames)
    self.windows = clips.windows(lengths, clip_frames)
    if not self.windows:
      raise ValueError(
        f"No video under {self.folder} has {clip_frames} frames; lower clip_frames "
        "(0 takes videos whole)."
      )

  def __len__(self) -> int:
    return len(self.windows)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    video, start, count = self.windows[index]
    return {"video": read_frames(self.paths[video], start, count)}

  def __repr__(self) -> str:
    return f"VideoFiles({self.folder}, {len(self.paths)} files, {len(self)} clips)"
