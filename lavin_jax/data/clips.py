"""Sequences of frames cut into examples: fixed-length windows, or whole sequences."""

from typing import Sequence


def windows(lengths: Sequence[int], clip_frames: int) -> list[tuple[int, int, int]]:
  """(sequence, first frame, frame count) of every example of sequences of `lengths`.

  clip_frames > 0: back-to-back windows of that many frames from frame 0 (frames past
  the last whole window, and sequences shorter than one window, are left out);
  clip_frames = 0: each sequence whole.
  """
  if clip_frames < 0:
    raise ValueError(f"clip_frames must be >= 0 (0: whole sequences), got {clip_frames}.")
  if not clip_frames:
    return [(i, 0, n) for i, n in enumerate(lengths) if n > 0]
  return [
    (i, start, clip_frames)
    for i, n in enumerate(lengths)
    for start in range(0, n - clip_frames + 1, clip_frames)
  ]
