"""DAVIS 2017 video object segmentation read from its own files.

Layout, as DAVIS-2017-trainval-480p.zip unpacks (ROOT may be DAVIS/ or the folder
holding it):
  DAVIS/JPEGImages/480p/<sequence>/00000.jpg ...
  DAVIS/Annotations/480p/<sequence>/00000.png ...   palette PNG: object 1..N, 0 none
  DAVIS/ImageSets/2017/{train,val}.txt              sequence names

Examples (spec 'davis:ROOT[,split=train|val][,clip_frames=N]'): clips of the split's
sequences (`clips.windows`: back-to-back windows of clip_frames frames, or with 0 each
sequence whole): 'video' uint8 (T, H, W, 3); 'instances' int32 (T, H, W), DAVIS's object
ids, the same object in every frame (so 'instances' > 0 is the foreground); 'valid'
False where a label is 255 (void), where 'instances' holds 0.
"""

import os
import pathlib

import numpy as np

from lavin_jax.data import clips
from lavin_jax.data import sources

SPLITS = ("train", "val")
VOID = 255


def find_davis(root: pathlib.Path) -> pathlib.Path:
  """The DAVIS folder: ROOT or ROOT/DAVIS, the one holding ImageSets/2017."""
  for folder in (root, root / "DAVIS"):
    if (folder / "ImageSets" / "2017").is_dir():
      return folder
  raise FileNotFoundError(
    f"No DAVIS 2017 files under {root}: expected ImageSets/2017 in it or in {root / 'DAVIS'}. "
    "Unpack DAVIS-2017-trainval-480p.zip there."
  )


class Davis:
  """Clips of DAVIS 2017's train or val sequences (see the module docstring)."""

  keys = ("video", "instances", "valid")
  class_names = None

  def __init__(
    self, root: str | os.PathLike, split: str = "train", clip_frames: int = 0, min_size=None
  ):
    if split not in SPLITS:
      raise ValueError(f"Unknown DAVIS split {split!r}; expected one of {', '.join(SPLITS)}.")
    self.folder = find_davis(pathlib.Path(root))
    self.split, self.min_size = split, min_size
    listing = self.folder / "ImageSets" / "2017" / f"{split}.txt"
    if not listing.is_file():
      raise FileNotFoundError(f"DAVIS split file {listing} not found; restore it from the zip.")
    self.sequences = [s.strip() for s in listing.read_text().splitlines() if s.strip()]
    self.frames = [self._frames(name) for name in self.sequences]
    self.windows = clips.windows([len(f) for f in self.frames], clip_frames)
    if not self.windows:
      raise ValueError(
        f"DAVIS {split}: no sequence has {clip_frames} frames; lower clip_frames "
        "(0 takes sequences whole)."
      )

  def _frames(self, name: str) -> list[str]:
    """The frame names of a sequence, each with its image and its annotation checked."""
    images = self.folder / "JPEGImages" / "480p" / name
    labels = self.folder / "Annotations" / "480p" / name
    frames = sorted(p.stem for p in images.glob("*.jpg"))
    if not frames:
      raise FileNotFoundError(f"DAVIS sequence {name}: no frames in {images}.")
    missing = [f for f in frames if not (labels / f"{f}.png").is_file()]
    if missing:
      raise FileNotFoundError(
        f"DAVIS sequence {name}: no annotation for {len(missing)} frame(s) in {labels} "
        f"(first {missing[0]}.png); restore Annotations/480p from the zip."
      )
    first = images / f"{frames[0]}.jpg"
    sources.check_size(*sources.image_size(first), self.min_size, f"DAVIS frame {first}")
    return frames

  def __len__(self) -> int:
    return len(self.windows)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    sequence, start, count = self.windows[index]
    name = self.sequences[sequence]
    frames = self.frames[sequence][start : start + count]
    images = self.folder / "JPEGImages" / "480p" / name
    labels = self.folder / "Annotations" / "480p" / name
    video = np.stack([sources.read_image(images / f"{f}.jpg", self.min_size) for f in frames])
    ids = np.stack([sources.read_label_png(labels / f"{f}.png") for f in frames])
    if ids.shape != video.shape[:3]:
      raise ValueError(
        f"DAVIS sequence {name}: frames {video.shape[1:3]} and annotations "
        f"{ids.shape[1:]} differ in size; restore them from the zip."
      )
    valid = ids != VOID
    return {"video": video, "instances": np.where(valid, ids, 0).astype(np.int32), "valid": valid}

  def __repr__(self) -> str:
    return f"Davis({self.folder}, {self.split}, {len(self)} clips)"
