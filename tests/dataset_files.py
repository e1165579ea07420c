"""Tiny data sets written in the on-disk layouts of the real ones, with known contents."""

import json
import pathlib

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

H, W = 24, 32  # COCO and VOC fixture images.


def photo(seed: int, height: int = H, width: int = W) -> np.ndarray:
  """A smooth RGB image (survives JPEG well): gradients and a seed-dependent tint."""
  rows, cols = np.mgrid[:height, :width]
  rng = np.random.default_rng(seed)
  base = np.stack([rows * 255 / height, cols * 255 / width, np.full((height, width), 128)], -1)
  return np.clip(base * 0.6 + rng.uniform(0, 100, 3), 0, 255).astype(np.uint8)


def save(path: pathlib.Path, array: np.ndarray, **kwargs) -> np.ndarray:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(path, **kwargs)
  return array


def _write_json(path: pathlib.Path, data) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(data))


# ----------------------------------------------------------------------------------
# COCO.
# ----------------------------------------------------------------------------------
COCO_CATEGORIES = [
  {"id": 1, "name": "person", "supercategory": "person"},
  {"id": 3, "name": "car", "supercategory": "vehicle"},
  {"id": 18, "name": "dog", "supercategory": "animal"},
]
DOG = [[2, 3, 12, 3, 12, 8, 2, 8]]  # A polygon: rows 3..7, columns 2..11.
PERSON = np.zeros((H, W), np.uint8)
PERSON[5:15, 8:16] = 1  # An RLE: rows 5..14, columns 8..15 (under the dog at rows 5..7).
# Uncompressed RLE, column-major run lengths from a zero run: rows 2..5 of columns 20-21.
CROWD_COUNTS = [H * 20 + 2, 4, H - 4, 4, H * W - H * 21 - 6]
CAR = [[0, 0, 6, 0, 6, 4, 0, 4]]  # Rows 0..3, columns 0..5.


def _coco_images(split_dir: pathlib.Path) -> list[dict]:
  images = []
  for image_id in (1, 2, 3):
    name = f"{image_id:012d}.jpg"
    save(split_dir / name, photo(image_id), quality=95)
    images.append({"id": image_id, "file_name": name, "height": H, "width": W})
  return images


def write_coco(root: pathlib.Path, split: str = "val2017") -> pathlib.Path:
  """COCO with instances, keypoints and panoptic files of three images (3 unannotated)."""
  images = _coco_images(root / split)
  rle = mask_utils.encode(np.asfortranarray(PERSON))
  rle["counts"] = rle["counts"].decode("ascii")
  instances = [
    {"id": 10, "image_id": 1, "category_id": 18, "segmentation": DOG, "area": 50.0,
     "bbox": [2, 3, 10, 5], "iscrowd": 0},
    {"id": 11, "image_id": 1, "category_id": 1, "segmentation": rle, "area": 80.0,
     "bbox": [8, 5, 8, 10], "iscrowd": 0},
    {"id": 12, "image_id": 2, "category_id": 1, "iscrowd": 1, "area": 8.0,
     "segmentation": {"size": [H, W], "counts": CROWD_COUNTS}, "bbox": [20, 2, 2, 4]},
    {"id": 13, "image_id": 2, "category_id": 3, "segmentation": CAR, "area": 24.0,
     "bbox": [0, 0, 6, 4], "iscrowd": 0},
  ]  # fmt: skip
  _write_json(
    root / "annotations" / f"instances_{split}.json",
    {"images": images, "annotations": instances, "categories": COCO_CATEGORIES},
  )
  nose, wrist = [5, 6, 2], [10, 12, 1]  # Pixel indices, as COCO stores them.
  keypoints = [0] * 51
  keypoints[0:3], keypoints[27:30] = nose, wrist
  people = [
    dict(instances[1], keypoints=keypoints, num_keypoints=2),
    dict(instances[0], id=14, category_id=1, keypoints=[0] * 51, num_keypoints=0),
    dict(instances[3], id=15, category_id=1, keypoints=[0] * 51, num_keypoints=0),
  ]
  _write_json(
    root / "annotations" / f"person_keypoints_{split}.json",
    {"images": images, "annotations": people, "categories": COCO_CATEGORIES[:1]},
  )
  write_coco_panoptic(root, split, images)
  return root


# Panoptic: segment ids in the PNG (R + 256 G + 256^2 B) and their rows / columns.
PANOPTIC_SEGMENTS = {
  70000: (slice(0, 8), slice(None)),  # sky-other-merged (stuff)
  4: (slice(8, 16), slice(0, 10)),  # a person
  300: (slice(8, 16), slice(20, 32)),  # a crowd of people
  5: (slice(16, 24), slice(4, 8)),  # another person
}


def write_coco_panoptic(root: pathlib.Path, split: str, images: list[dict]) -> None:
  ids = np.zeros((H, W), np.int64)
  for segment, where in PANOPTIC_SEGMENTS.items():
    ids[where] = segment
  png = np.stack([ids % 256, ids // 256 % 256, ids // 256**2], -1).astype(np.uint8)
  save(root / "annotations" / f"panoptic_{split}" / "000000000001.png", png)
  segments = [
    {"id": 70000, "category_id": 187, "iscrowd": 0, "bbox": [0, 0, W, 8], "area": 8 * W},
    {"id": 4, "category_id": 1, "iscrowd": 0, "bbox": [0, 8, 10, 8], "area": 80},
    {"id": 300, "category_id": 1, "iscrowd": 1, "bbox": [20, 8, 12, 8], "area": 96},
    {"id": 5, "category_id": 1, "iscrowd": 0, "bbox": [4, 16, 4, 8], "area": 32},
  ]
  categories = [
    {"id": 1, "name": "person", "supercategory": "person", "isthing": 1, "color": [220, 20, 60]},
    {"id": 187, "name": "sky-other-merged", "supercategory": "sky", "isthing": 0,
     "color": [70, 130, 180]},
  ]  # fmt: skip
  record = {"image_id": 1, "file_name": "000000000001.png", "segments_info": segments}
  _write_json(
    root / "annotations" / f"panoptic_{split}.json",
    {"images": images[:1], "annotations": [record], "categories": categories},
  )


# ----------------------------------------------------------------------------------
# Pascal VOC 2012.
# ----------------------------------------------------------------------------------
# Image id -> (split, objects as (class, rows, columns)); object k is the k-th listed.
VOC_IMAGES = {
  "2007_000032": ("train", [(8, slice(4, 12), slice(6, 16)), (15, slice(14, 22), slice(18, 28))]),
  "2007_000039": ("val", [(12, slice(2, 20), slice(2, 26))]),
}


def _palette_png(path: pathlib.Path, indices: np.ndarray) -> None:
  image = Image.fromarray(indices.astype(np.uint8), mode="P")
  image.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
  path.parent.mkdir(parents=True, exist_ok=True)
  image.save(path)


def voc_labels(objects, height: int = H, width: int = W) -> tuple[np.ndarray, np.ndarray]:
  """(class, object) label maps of `objects`, each outlined by one void (255) pixel."""
  classes = np.zeros((height, width), np.uint8)
  instances = np.zeros((height, width), np.uint8)
  for k, (class_id, rows, cols) in enumerate(objects):
    outline = (
      slice(max(rows.start - 1, 0), rows.stop + 1),
      slice(max(cols.start - 1, 0), cols.stop + 1),
    )
    classes[outline] = instances[outline] = 255
    classes[rows, cols] = class_id
    instances[rows, cols] = k + 1
  return classes, instances


def write_voc(root: pathlib.Path, images=None) -> pathlib.Path:
  """VOCdevkit/VOC2012 with the JPEGs, label PNGs and split lists of `images`."""
  images = VOC_IMAGES if images is None else images
  folder = root / "VOCdevkit" / "VOC2012"
  splits: dict[str, list[str]] = {"train": [], "val": []}
  for seed, (name, (split, objects)) in enumerate(images.items()):
    save(folder / "JPEGImages" / f"{name}.jpg", photo(seed + 10), quality=95)
    classes, instances = voc_labels(objects)
    _palette_png(folder / "SegmentationClass" / f"{name}.png", classes)
    _palette_png(folder / "SegmentationObject" / f"{name}.png", instances)
    splits[split].append(name)
  splits["trainval"] = splits["train"] + splits["val"]
  for split, names in splits.items():
    listing = folder / "ImageSets" / "Segmentation" / f"{split}.txt"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text("".join(f"{n}\n" for n in names))
  return root


# ----------------------------------------------------------------------------------
# DAVIS 2017 and video files.
# ----------------------------------------------------------------------------------
DAVIS_SEQUENCES = {"bear": ("train", 6), "camel": ("val", 4)}  # name -> (split, frames)


def davis_frame(sequence: int, frame: int) -> tuple[np.ndarray, np.ndarray]:
  """(image, object ids) of a DAVIS fixture frame: object 1 moves right, object 2 stays;
  frame 0 has a void (255) patch."""
  ids = np.zeros((H, W), np.uint8)
  ids[4:12, 2 + 2 * frame : 10 + 2 * frame] = 1
  ids[16:22, 20:30] = 2
  if frame == 0:
    ids[0:2, 0:4] = 255
  return photo(100 * sequence + frame), ids


def write_davis(root: pathlib.Path) -> pathlib.Path:
  """DAVIS/ with JPEGImages/480p, Annotations/480p and ImageSets/2017 of two sequences."""
  folder = root / "DAVIS"
  splits: dict[str, list[str]] = {"train": [], "val": []}
  for s, (name, (split, frames)) in enumerate(DAVIS_SEQUENCES.items()):
    for f in range(frames):
      image, ids = davis_frame(s, f)
      save(folder / "JPEGImages" / "480p" / name / f"{f:05d}.jpg", image, quality=95)
      _palette_png(folder / "Annotations" / "480p" / name / f"{f:05d}.png", ids)
    splits[split].append(name)
  for split, names in splits.items():
    listing = folder / "ImageSets" / "2017" / f"{split}.txt"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text("".join(f"{n}\n" for n in names))
  return root


def video_frames(seed: int, count: int) -> np.ndarray:
  """(count, H, W, 3) frames that differ from one another."""
  return np.stack([photo(seed * 50 + k) for k in range(count)])


def write_videos(folder: pathlib.Path) -> dict[str, np.ndarray]:
  """Two video files (a lossless .avi of 7 frames, an .mp4 of 5) and their frames."""
  import cv2  # pylint: disable=g-import-not-at-top

  written = {}
  for name, fourcc, count in (("a/first.avi", "FFV1", 7), ("second.mp4", "mp4v", 5)):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (W, H))
    frames = video_frames(len(written), count)
    for frame in frames:
      writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    written[name] = frames
  (folder / "notes.txt").write_text("not a video")
  return written
