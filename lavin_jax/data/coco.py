"""COCO 2017 read from its own files: object instances, person keypoints, panoptic labels.

Layout, as the downloads from cocodataset.org unpack into ROOT:
  ROOT/{split}/*.jpg                           train2017.zip, val2017.zip
  ROOT/annotations/instances_{split}.json      annotations_trainval2017.zip
  ROOT/annotations/person_keypoints_{split}.json
  ROOT/annotations/panoptic_{split}.json       panoptic_annotations_trainval2017.zip, with
  ROOT/annotations/panoptic_{split}/*.png      its panoptic_{split}.zip unpacked beside
                                               (ROOT/panoptic_{split}/ works too)

`load(root, split, annotations)` (spec 'coco:ROOT[,split=...][,annotations=...]'):
- 'instances': every image with an annotation (117,266 of train2017, the paper's count):
  'image'; 'semantic', classes 1..80 (`class_names`, in the order of COCO's category
  ids; 0 background); 'instances' 1..N for the non-crowd annotations, largest area
  first, each painted over the larger ones; 'boxes' [y0, x0, y1, x1] = [y, x, y + h,
  x + w] of COCO's [x, y, w, h] bbox for instance i + 1. Crowd regions (iscrowd = 1)
  count in 'semantic' (under the objects) but are no instances. Masks come from the
  polygons and RLE (compressed or not) through pycocotools.
- 'keypoints': the same of the person_keypoints file, for the images with a labelled
  joint, and 'keypoints' (P, 17, 3) of the people with one (num_keypoints > 0), in
  instance order: COCO's (x, y) are pixel indices, so x + 0.5, y + 0.5 in the schema's
  pixel frame; unlabelled joints (v = 0) are (0, 0, 0).
- 'panoptic': every image of the panoptic file: 'semantic', the 133 categories (things
  and stuff) as 1..133 in category-id order, 0 on void (segment id 0); 'instances'
  1..N for the non-crowd thing segments in segments_info order, 0 elsewhere (crowds
  included: thing-class pixels of id 0); 'boxes' of the instances from their bbox;
  `thing_classes` the ids of COCO's isthing categories. Segment ids are RGB PNG values
  R + 256 G + 256^2 B.
Image sizes are checked against the JSON when the source is made (no image is read).
"""

import json
import os
import pathlib
from typing import Any
import warnings

import numpy as np
from pycocotools import mask as mask_utils

from lavin_jax.data import sources

ANNOTATIONS = ("instances", "keypoints", "panoptic")
_FILES = {
  "instances": "instances_{split}.json",
  "keypoints": "person_keypoints_{split}.json",
  "panoptic": "panoptic_{split}.json",
}
_DOWNLOADS = {
  "instances": "annotations_trainval2017.zip",
  "keypoints": "annotations_trainval2017.zip",
  "panoptic": "panoptic_annotations_trainval2017.zip",
}


def _read_json(root: pathlib.Path, split: str, annotations: str) -> dict[str, Any]:
  path = root / "annotations" / _FILES[annotations].format(split=split)
  if not path.is_file():
    raise FileNotFoundError(
      f"COCO annotations {path} not found. Unpack {_DOWNLOADS[annotations]} from "
      f"cocodataset.org in {root} (it holds annotations/), or point coco: at the folder "
      "holding annotations/ and the image folders."
    )
  try:
    return json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(
      f"COCO annotations {path} are not valid JSON ({e}); download them again."
    ) from e


def _images_dir(root: pathlib.Path, split: str) -> pathlib.Path:
  folder = root / split
  if not folder.is_dir():
    raise FileNotFoundError(
      f"COCO image folder {folder} not found. Unpack {split}.zip from cocodataset.org in {root}."
    )
  return folder


def decode_segmentation(segmentation, height: int, width: int) -> np.ndarray:
  """bool (H, W) of a COCO segmentation: polygons, uncompressed or compressed RLE."""
  if isinstance(segmentation, list):
    rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
  elif isinstance(segmentation["counts"], list):
    rle = mask_utils.frPyObjects(segmentation, height, width)
  else:
    rle = dict(segmentation)
    if isinstance(rle["counts"], str):
      rle["counts"] = rle["counts"].encode("ascii")
  with warnings.catch_warnings():  # pycocotools 2.0 and numpy 2: a harmless deprecation.
    warnings.simplefilter("ignore", DeprecationWarning)
    return mask_utils.decode(rle).astype(bool)


def coco_box(bbox) -> list[float]:
  """COCO's [x, y, w, h] -> the schema's [y0, x0, y1, x1]."""
  x, y, w, h = (float(v) for v in bbox)
  return [y, x, y + h, x + w]


def coco_keypoints(values) -> np.ndarray:
  """COCO's 51 numbers (pixel-index x, y and v per joint) -> the schema's (17, 3)."""
  points = sources.to_schema("keypoints", values)[0]
  labelled = points[:, 2:] > 0
  return np.where(labelled, points + [0.5, 0.5, 0.0], 0.0).astype(np.float32)


class _CocoBase:
  """Images of a COCO split and their annotation records, indexable."""

  def __init__(self, root, split: str, annotations: str, min_size=None):
    self.root = pathlib.Path(root)
    self.split, self.annotations, self.min_size = split, annotations, min_size
    if not self.root.is_dir():
      raise FileNotFoundError(f"COCO folder {self.root} does not exist.")
    data = _read_json(self.root, split, annotations)
    self.images_dir = _images_dir(self.root, split)
    categories = sorted(data["categories"], key=lambda c: c["id"])
    self.class_names = ("background",) + tuple(c["name"] for c in categories)
    self._class_of = {c["id"]: i + 1 for i, c in enumerate(categories)}
    self._categories = categories
    self._images = self._select(data)
    for image in self._images:
      sources.check_size(
        image["height"], image["width"], min_size, f"COCO image {image['file_name']}"
      )

  def _select(self, data) -> list[dict]:
    raise NotImplementedError

  def __len__(self) -> int:
    return len(self._images)

  def _read(self, image: dict) -> np.ndarray:
    pixels = sources.read_image(self.images_dir / image["file_name"], self.min_size)
    if pixels.shape[:2] != (image["height"], image["width"]):
      raise ValueError(
        f"COCO image {self.images_dir / image['file_name']} is {pixels.shape[0]}x"
        f"{pixels.shape[1]}, but the annotations say {image['height']}x{image['width']}; "
        "replace the image or the annotations."
      )
    return pixels

  def __repr__(self) -> str:
    return f"{type(self).__name__}({self.root}, {self.split}, {self.annotations}, {len(self)})"


class CocoObjects(_CocoBase):
  """COCO instances or person keypoints (see the module docstring)."""

  def _select(self, data) -> list[dict]:
    records: dict[int, list] = {}
    for annotation in data["annotations"]:
      records.setdefault(annotation["image_id"], []).append(annotation)
    images = []
    for image in sorted(data["images"], key=lambda i: i["id"]):
      found = records.get(image["id"], [])
      if self.annotations == "keypoints":
        found = found if any(a.get("num_keypoints") for a in found) else []
      if found:
        # Crowds first, then objects by decreasing area: smaller ones are painted last.
        order = sorted(found, key=lambda a: (not a.get("iscrowd"), -a.get("area", 0)))
        images.append(dict(image, records=order))
    return images

  @property
  def keys(self) -> tuple[str, ...]:
    extra = ("keypoints",) if self.annotations == "keypoints" else ()
    return ("image", "semantic", "instances", "boxes") + extra

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    image = self._images[index]
    pixels = self._read(image)
    height, width = image["height"], image["width"]
    semantic = np.zeros((height, width), np.int32)
    instances = np.zeros((height, width), np.int32)
    boxes, people = [], []
    for annotation in image["records"]:
      mask = decode_segmentation(annotation["segmentation"], height, width)
      semantic[mask] = self._class_of[annotation["category_id"]]
      if annotation.get("iscrowd"):
        continue
      instances[mask] = len(boxes) + 1
      boxes.append(coco_box(annotation["bbox"]))
      if annotation.get("num_keypoints"):
        people.append(coco_keypoints(annotation["keypoints"]))
    example = {
      "image": pixels,
      "semantic": semantic,
      "instances": instances,
      "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
    }
    if self.annotations == "keypoints":
      example["keypoints"] = np.asarray(people, np.float32).reshape(-1, 17, 3)
    return example


class CocoPanoptic(_CocoBase):
  """COCO panoptic labels (see the module docstring)."""

  keys = ("image", "semantic", "instances", "boxes")

  def __init__(self, root, split: str, min_size=None):
    super().__init__(root, split, "panoptic", min_size)
    self.thing_classes = tuple(
      i + 1 for i, category in enumerate(self._categories) if category.get("isthing")
    )
    folders = [self.root / "annotations" / f"panoptic_{split}", self.root / f"panoptic_{split}"]
    self.labels_dir = next((f for f in folders if f.is_dir()), None)
    if self.labels_dir is None:
      raise FileNotFoundError(
        f"COCO panoptic PNGs not found in {folders[0]} or {folders[1]}. Unpack "
        f"annotations/panoptic_{split}.zip (inside panoptic_annotations_trainval2017.zip) "
        f"into {self.root / 'annotations'}."
      )

  def _select(self, data) -> list[dict]:
    records = {record["image_id"]: record for record in data["annotations"]}
    images = sorted(data["images"], key=lambda i: i["id"])
    return [dict(image, record=records[image["id"]]) for image in images if image["id"] in records]

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    image = self._images[index]
    record = image["record"]
    rgb = sources.read_image(self.labels_dir / record["file_name"]).astype(np.int64)
    if rgb.shape[:2] != (image["height"], image["width"]):
      raise ValueError(
        f"COCO panoptic PNG {self.labels_dir / record['file_name']} is {rgb.shape[0]}x"
        f"{rgb.shape[1]}, not {image['height']}x{image['width']} as its image; replace it."
      )
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2]
    semantic = np.zeros(ids.shape, np.int32)
    instances = np.zeros(ids.shape, np.int32)
    boxes = []
    for segment in record["segments_info"]:
      mask = ids == segment["id"]
      class_id = self._class_of[segment["category_id"]]
      semantic[mask] = class_id
      if class_id in self.thing_classes and not segment.get("iscrowd"):
        instances[mask] = len(boxes) + 1
        boxes.append(coco_box(segment["bbox"]))
    return {
      "image": self._read(image),
      "semantic": semantic,
      "instances": instances,
      "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
    }


def load(
  root: str | os.PathLike, split: str = "train2017", annotations: str = "instances", min_size=None
):
  """The COCO source of `annotations` ('instances', 'keypoints' or 'panoptic')."""
  if annotations not in ANNOTATIONS:
    raise ValueError(
      f"Unknown COCO annotations {annotations!r}; expected one of {', '.join(ANNOTATIONS)}."
    )
  if annotations == "panoptic":
    return CocoPanoptic(root, split, min_size)
  return CocoObjects(root, split, annotations, min_size)
