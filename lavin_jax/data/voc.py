"""Pascal VOC 2012 segmentation read from its own files (the VOCdevkit layout).

Layout, as VOCtrainval_11-May-2012.tar unpacks (ROOT may be the folder holding
VOCdevkit/, VOCdevkit/ itself or VOCdevkit/VOC2012/):
  VOC2012/JPEGImages/<id>.jpg
  VOC2012/SegmentationClass/<id>.png     palette PNG: class 0..20, 255 void
  VOC2012/SegmentationObject/<id>.png    palette PNG: object 1..N, 0 none, 255 void
  VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt

Examples (spec 'voc:ROOT[,split=train|val|trainval]', the images the split lists):
'image'; 'semantic' the class ids (`class_names`, 1..20 in VOC's order, 0 background);
'instances' the object ids; 'boxes' row i the box of object i + 1's pixels (VOC's
object ids are 1..N); 'valid' False on void (255: object outlines, ambiguous regions),
where 'semantic' and 'instances' hold 0. Every image header is read when the source is
made.
"""

import os
import pathlib

import numpy as np

from lavin_jax.data import class_names as class_names_lib
from lavin_jax.data import sources

SPLITS = ("train", "val", "trainval")
VOID = 255


def find_voc2012(root: pathlib.Path) -> pathlib.Path:
  """The VOC2012 folder under ROOT, ROOT/VOCdevkit or ROOT itself."""
  for folder in (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root):
    if (folder / "ImageSets" / "Segmentation").is_dir():
      return folder
  raise FileNotFoundError(
    f"No VOC2012 segmentation files under {root}: expected "
    "VOCdevkit/VOC2012/ImageSets/Segmentation there. Unpack VOCtrainval_11-May-2012.tar "
    "in it, or point voc: at the folder holding VOCdevkit/."
  )


def object_boxes(objects: np.ndarray, count: int) -> np.ndarray:
  """float32 (count, 4) [y0, x0, y1, x1) of the pixels of ids 1..count (0 if absent)."""
  boxes = np.zeros((count, 4), np.float32)
  for i in range(count):
    rows = np.flatnonzero((objects == i + 1).any(1))
    cols = np.flatnonzero((objects == i + 1).any(0))
    if rows.size:
      boxes[i] = rows[0], cols[0], rows[-1] + 1, cols[-1] + 1
  return boxes


class VocSegmentation:
  """A split of VOC 2012's segmentation images (see the module docstring)."""

  keys = ("image", "semantic", "instances", "boxes", "valid")
  class_names = class_names_lib.VOC

  def __init__(self, root: str | os.PathLike, split: str = "train", min_size=None):
    if split not in SPLITS:
      raise ValueError(f"Unknown VOC split {split!r}; expected one of {', '.join(SPLITS)}.")
    self.folder = find_voc2012(pathlib.Path(root))
    self.split, self.min_size = split, min_size
    listing = self.folder / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not listing.is_file():
      raise FileNotFoundError(f"VOC split file {listing} not found; restore it from the tar.")
    self.ids = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    if not self.ids:
      raise ValueError(f"VOC split file {listing} lists no image.")
    for name in self.ids:
      path = self._image_path(name)
      if not path.is_file():
        raise FileNotFoundError(f"No VOC image at {path}; restore it from the tar.")
      sources.check_size(*sources.image_size(path), min_size, f"VOC image {path}")

  def _image_path(self, name: str) -> pathlib.Path:
    return self.folder / "JPEGImages" / f"{name}.jpg"

  def __len__(self) -> int:
    return len(self.ids)

  def labels(self, index: int) -> dict[str, np.ndarray]:
    """The example's annotations ('semantic', 'instances', 'boxes', 'valid'), no image."""
    name = self.ids[index]
    classes = sources.read_label_png(self.folder / "SegmentationClass" / f"{name}.png")
    objects = sources.read_label_png(self.folder / "SegmentationObject" / f"{name}.png")
    if classes.shape != objects.shape:
      raise ValueError(
        f"VOC labels of {name} differ in size: class {classes.shape}, object "
        f"{objects.shape}; restore them from the tar."
      )
    valid = classes != VOID
    instances = np.where(objects == VOID, 0, objects).astype(np.int32)
    return {
      "semantic": np.where(valid, classes, 0).astype(np.int32),
      "instances": instances,
      "boxes": object_boxes(instances, int(instances.max(initial=0))),
      "valid": valid,
    }

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    example = self.labels(index)
    path = self._image_path(self.ids[index])
    example["image"] = sources.read_image(path, self.min_size)
    if example["image"].shape[:2] != example["valid"].shape:
      raise ValueError(
        f"VOC image {path} is {example['image'].shape[:2]}, its labels "
        f"{example['valid'].shape}; restore them from the tar."
      )
    return example

  def __repr__(self) -> str:
    return f"VocSegmentation({self.folder}, {self.split}, {len(self)} images)"
