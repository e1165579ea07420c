"""Pascal VOC 2012 from its own files: a 2-image VOCdevkit."""

import pickle

import dataset_files
import numpy as np
from PIL import Image
import pytest

from lavin_jax.data import specs
from lavin_jax.data import voc


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return dataset_files.write_voc(tmp_path_factory.mktemp("voc"))


def test_split_lists_and_labels(root):
  train = specs.get_source(f"voc:{root}")
  assert len(train) == 1 and train.ids == ["2007_000032"]
  assert train.keys == ("image", "semantic", "instances", "boxes", "valid")
  assert train.class_names[8] == "cat" and train.class_names[15] == "person"
  example = train[0]
  assert example["image"].shape == (24, 32, 3)
  assert np.abs(example["image"].astype(int) - dataset_files.photo(10)).mean() < 3
  cat = np.zeros((24, 32), bool)
  cat[4:12, 6:16] = True
  person = np.zeros((24, 32), bool)
  person[14:22, 18:28] = True
  np.testing.assert_array_equal(example["semantic"], np.where(cat, 8, np.where(person, 15, 0)))
  np.testing.assert_array_equal(example["instances"], np.where(cat, 1, np.where(person, 2, 0)))
  np.testing.assert_array_equal(example["boxes"], [[4, 6, 12, 16], [14, 18, 22, 28]])
  void = np.zeros((24, 32), bool)
  void[3:13, 5:17] = void[13:23, 17:29] = True
  np.testing.assert_array_equal(example["valid"], ~(void & ~cat & ~person))
  assert example["valid"].dtype == bool and example["semantic"].dtype == np.int32
  for root_form in (root / "VOCdevkit", root / "VOCdevkit" / "VOC2012"):
    val = specs.get_source(f"voc:{root_form},split=val")
    assert val.ids == ["2007_000039"] and val.labels(0)["semantic"].max() == 12
  assert len(voc.VocSegmentation(root, "trainval")) == 2
  restored = pickle.loads(pickle.dumps(train))  # Grain workers pickle sources.
  np.testing.assert_array_equal(restored[0]["instances"], example["instances"])


def test_missing_files_and_bad_options(root, tmp_path):
  with pytest.raises(FileNotFoundError, match="No VOC2012 segmentation files under .*Unpack "
                     "VOCtrainval_11-May-2012.tar"):  # fmt: skip
    specs.get_source(f"voc:{tmp_path}")
  with pytest.raises(ValueError, match="Unknown VOC split 'test'"):
    specs.get_source(f"voc:{root},split=test")
  dataset_files.write_voc(tmp_path, {"a": ("train", [(1, slice(2, 4), slice(2, 4))])})
  folder = tmp_path / "VOCdevkit" / "VOC2012"
  (folder / "SegmentationObject" / "a.png").unlink()
  source = voc.VocSegmentation(tmp_path)
  with pytest.raises(FileNotFoundError, match=r"No label file at .*SegmentationObject/a.png"):
    source[0]
  Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(folder / "SegmentationObject" / "a.png")
  with pytest.raises(ValueError, match="a.png is a RGB image, not a palette PNG"):
    source.labels(0)
  with pytest.raises(ValueError, match=r"a.jpg is 24x32 pixels, smaller than the requested"):
    voc.VocSegmentation(tmp_path, min_size=30)
  (folder / "JPEGImages" / "a.jpg").unlink()
  with pytest.raises(FileNotFoundError, match=r"No VOC image at .*a.jpg"):
    voc.VocSegmentation(tmp_path)
