"""COCO from its own files: instances, keypoints and panoptic labels of a 3-image fixture."""

import json
import pickle
import shutil

import dataset_files
from dataset_files import H
from dataset_files import W
import numpy as np
import pytest

from lavin_jax.data import coco
from lavin_jax.data import specs


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return dataset_files.write_coco(tmp_path_factory.mktemp("coco"))


def _mask(rows, cols):
  mask = np.zeros((H, W), bool)
  mask[rows, cols] = True
  return mask


def _assert_photo(image, seed):
  assert image.shape == (H, W, 3) and image.dtype == np.uint8
  assert np.abs(image.astype(int) - dataset_files.photo(seed)).mean() < 3  # JPEG.


def test_instances_masks_boxes_and_classes(root):
  source = specs.get_source(f"coco:{root},split=val2017")
  assert len(source) == 2  # Image 3 has no annotation.
  assert source.keys == ("image", "semantic", "instances", "boxes")
  assert source.class_names == ("background", "person", "car", "dog")
  first, second = source[0], source[1]
  _assert_photo(first["image"], 1)
  dog = _mask(slice(3, 8), slice(2, 12))  # The polygon's pixels.
  person = dataset_files.PERSON.astype(bool)  # The RLE's.
  # The person (area 80) is instance 1; the smaller dog, painted over it, instance 2.
  np.testing.assert_array_equal(first["instances"], np.where(dog, 2, np.where(person, 1, 0)))
  np.testing.assert_array_equal(first["semantic"], np.where(dog, 3, np.where(person, 1, 0)))
  # COCO [x, y, w, h] -> [y0, x0, y1, x1]; row i is instance i + 1.
  np.testing.assert_array_equal(first["boxes"], [[5, 8, 15, 16], [3, 2, 8, 12]])
  assert first["boxes"].dtype == np.float32 and first["instances"].dtype == np.int32
  # Image 2: a crowd (uncompressed RLE) is a class in 'semantic', not an instance.
  crowd = _mask(slice(2, 6), slice(20, 22))
  car = _mask(slice(0, 4), slice(0, 6))
  np.testing.assert_array_equal(second["semantic"], np.where(car, 2, np.where(crowd, 1, 0)))
  np.testing.assert_array_equal(second["instances"], car.astype(np.int32))
  np.testing.assert_array_equal(second["boxes"], [[0, 0, 4, 6]])
  restored = pickle.loads(pickle.dumps(source))  # Grain workers pickle sources.
  np.testing.assert_array_equal(restored[1]["semantic"], second["semantic"])


def test_keypoints_of_the_people_with_labelled_joints(root):
  source = coco.load(root, "val2017", "keypoints")
  assert len(source) == 1  # Image 2's person has no labelled joint.
  assert source.keys[-1] == "keypoints" and source.class_names == ("background", "person")
  example = source[0]
  want = np.zeros((1, 17, 3), np.float32)
  want[0, 0] = 5.5, 6.5, 2  # Nose: pixel indices (5, 6) -> the pixel's centre.
  want[0, 9] = 10.5, 12.5, 1  # Left wrist, hidden.
  np.testing.assert_array_equal(example["keypoints"], want)
  assert example["instances"].max() == 2  # Both people are instances.


def test_panoptic_segments(root):
  source = specs.get_source({"kind": "coco", "root": str(root), "split": "val2017",
                             "annotations": "panoptic"})  # fmt: skip
  assert len(source) == 1 and source.thing_classes == (1,)
  assert source.class_names == ("background", "person", "sky-other-merged")
  example = source[0]
  _assert_photo(example["image"], 1)
  segments = dataset_files.PANOPTIC_SEGMENTS
  sky, person, crowd, other = (_mask(*segments[i]) for i in (70000, 4, 300, 5))
  semantic = np.where(sky, 2, np.where(person | crowd | other, 1, 0))
  np.testing.assert_array_equal(example["semantic"], semantic)
  np.testing.assert_array_equal(example["instances"], np.where(person, 1, np.where(other, 2, 0)))
  np.testing.assert_array_equal(example["boxes"], [[8, 0, 16, 10], [16, 4, 24, 8]])


def test_missing_files_and_bad_options(root, tmp_path):
  with pytest.raises(FileNotFoundError, match="instances_train2017.json not found. Unpack "
                     "annotations_trainval2017.zip"):  # fmt: skip
    specs.get_source(f"coco:{root}")  # The default split is train2017.
  with pytest.raises(ValueError, match="Unknown COCO annotations 'captions'"):
    specs.get_source(f"coco:{root},split=val2017,annotations=captions")
  with pytest.raises(FileNotFoundError, match="COCO folder .* does not exist"):
    specs.get_source(f"coco:{tmp_path / 'none'}")
  copy = tmp_path / "copy"
  shutil.copytree(root / "annotations", copy / "annotations")
  with pytest.raises(FileNotFoundError, match=r"val2017 not found. Unpack val2017.zip"):
    coco.load(copy, "val2017")
  shutil.copytree(root / "val2017", copy / "val2017")
  shutil.rmtree(copy / "annotations" / "panoptic_val2017")
  with pytest.raises(FileNotFoundError, match="panoptic PNGs not found"):
    coco.load(copy, "val2017", "panoptic")
  with pytest.raises(ValueError, match=r"000000000001.jpg is 24x32 pixels, smaller than"):
    coco.load(copy, "val2017", min_size=28)
  path = copy / "annotations" / "instances_val2017.json"
  data = json.loads(path.read_text())
  data["images"][0]["height"] = 30
  path.write_text(json.dumps(data))
  with pytest.raises(ValueError, match="is 24x32, but the annotations say 30x32"):
    coco.load(copy, "val2017")[0]
  path.write_text("{")
  with pytest.raises(ValueError, match="not valid JSON"):
    coco.load(copy, "val2017")
