"""The synthetic TFDS data set: builds without TensorFlow, reads back exactly."""

import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from lavin_jax.data import render
from lavin_jax.data import specs
from lavin_jax.data import synthetic

TINY = synthetic.CONFIGS[0]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("synthetic")
  synthetic.build_synthetic(path, "tiny")
  return str(path)


def _by_first_pixels(examples, key):
  return {examples[i][key].tobytes()[:4096]: examples[i] for i in range(len(examples))}


def test_builds_without_tensorflow(data_dir):
  del data_dir
  assert "tensorflow" not in sys.modules


def test_reads_back_through_tfds_data_source(data_dir):
  for name, counts in (
    ("lavin_synthetic_images/tiny", TINY.images),
    ("lavin_synthetic_clips/tiny", TINY.clips),
  ):
    splits = tfds.data_source(name, data_dir=data_dir)
    assert {split: len(ds) for split, ds in splits.items()} == counts
  builder = synthetic.LavinSyntheticImages(config="tiny", data_dir=data_dir)
  assert builder.info.file_format.value == "array_record"


def test_stored_images_equal_the_renders(data_dir):
  source = synthetic.load_synthetic(data_dir, "tiny", "images", "validation")
  assert source.keys == ("image", "depth", "normals", "instances", "semantic", "boxes")
  assert source.class_names == render.CLASS_NAMES
  stored = _by_first_pixels(source, "image")
  size = TINY.image_size
  for i in range(TINY.images["validation"]):
    expected = render.render_image((TINY.seed, 1, i), size, size)
    example = stored[expected["image"].tobytes()[:4096]]
    assert set(example) == set(expected)
    for key, value in expected.items():
      assert example[key].dtype == value.dtype, key
      np.testing.assert_array_equal(example[key], value, err_msg=key)


def test_stored_clips_equal_the_renders(data_dir):
  source = specs.get_source(f"synthetic:tiny,content=clips,split=train,data_dir={data_dir}")
  assert len(source) == TINY.clips["train"]
  stored = _by_first_pixels(source, "video")
  t, s = TINY.clip_frames, TINY.clip_size
  expected = render.render_clip((TINY.seed, 0, 2), t, s, s)
  example = stored[expected["video"].tobytes()[:4096]]
  assert example["video"].shape == (t, s, s, 3)
  assert example["flow"].shape == (t - 1, s, s, 2)
  for key, value in expected.items():
    np.testing.assert_array_equal(example[key], value, err_msg=key)
  short = specs.get_source(f"synthetic:tiny,split=clips,data_dir={data_dir}")
  assert short.keys == source.keys and len(short) == len(source)


def test_worker_processes_write_the_same_data(data_dir, tmp_path):
  synthetic.build_synthetic(tmp_path, "tiny", num_workers=2, contents=("images",))
  one = synthetic.load_synthetic(data_dir, "tiny", "images", "train")
  two = synthetic.load_synthetic(str(tmp_path), "tiny", "images", "train")
  assert len(one) == len(two)
  for i in range(len(one)):
    for key in one.keys:
      np.testing.assert_array_equal(one[i][key], two[i][key])


def test_configs_are_multiples_of_16_and_clip_lengths_1_plus_4k():
  for config in synthetic.CONFIGS:
    assert config.image_size % 16 == 0 and config.clip_size % 16 == 0
    assert (config.clip_frames - 1) % 4 == 0
  assert synthetic.LavinSyntheticImages.DEFAULT_BUILDER_CONFIG_NAME == "small"


def test_bad_inputs(data_dir):
  with pytest.raises(ValueError, match=r"Unknown synthetic config 'huge'.*'tiny'"):
    synthetic.load_synthetic(data_dir, "huge")
  with pytest.raises(ValueError, match=r"Unknown synthetic content 'audio'"):
    synthetic.load_synthetic(data_dir, "tiny", "audio")
  with pytest.raises(
    ValueError,
    match=r"Synthetic images of config 'tiny' is 32x32 "
    r"pixels, smaller than the requested resolution 64x64",
  ):
    synthetic.load_synthetic(data_dir, "tiny", "images", min_size=64)
  with pytest.raises(ValueError, match="Unknown split"):
    synthetic.load_synthetic(data_dir, "tiny", "images", "test")
