"""lavin_jax.io: atomic writes, the pixel coding, the tree-fit report."""

import os

import numpy as np
import pytest

from lavin_jax.io import files
from lavin_jax.io import pixels
from lavin_jax.io import tree_fit


def test_atomic_write_replaces_the_file_whole(tmp_path):
  path = tmp_path / "sub" / "a.txt"
  files.atomic_write_text(path, "old")
  files.atomic_write_text(path, "new")
  assert path.read_text() == "new"
  assert sorted(os.listdir(path.parent)) == ["a.txt"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
  path = tmp_path / "a.txt"
  files.atomic_write_text(path, "old")

  def broken(tmp):
    with open(tmp, "w") as f:
      f.write("half")
    raise OSError(28, "No space left on device")

  with pytest.raises(OSError, match="No space left"):
    files.atomic_write(path, broken)
  assert path.read_text() == "old"
  assert os.listdir(tmp_path) == ["a.txt"]


def test_replace_dir_swaps_a_complete_directory(tmp_path):
  target, new = tmp_path / "bundle", tmp_path / "bundle.partial"
  target.mkdir()
  (target / "x").write_text("old")
  new.mkdir()
  (new / "x").write_text("new")
  files.replace_dir(new, target)
  assert (target / "x").read_text() == "new"
  assert sorted(os.listdir(tmp_path)) == ["bundle"]


def test_pixel_coding_round_trips_every_byte():
  everything = np.arange(256, dtype=np.uint8)
  as_float = pixels.to_float(everything)
  assert as_float.dtype == np.float32
  np.testing.assert_allclose(as_float, everything / 127.5 - 1, atol=1e-7)
  np.testing.assert_array_equal(pixels.to_uint8(as_float), everything)
  np.testing.assert_array_equal(
    pixels.to_uint8(np.array([-3.0, 3.0, np.float32(1 / 255)])), [0, 255, 128]
  )


def test_tree_fit_names_every_kind_of_misfit():
  tree_fit.check_fits({"a": (1,), "b": (2, 3)}, {"a": [1], "b": (2, 3)}, "f", "hint")
  with pytest.raises(ValueError) as error:
    tree_fit.check_fits(
      {"a": (1,), "b": (2, 3), "c": ()},
      {"a": (1,), "b": (3, 2), "d": (4,)},
      "model.safetensors",
      "check the size",
    )
  message = str(error.value)
  assert message.startswith("model.safetensors does not fit the model (check the size)")
  assert "missing (1): ['d']" in message and "unexpected (1): ['c']" in message
  assert "mismatched shapes (1): ['b: stored (2, 3), model (3, 2)']" in message


def test_tree_fit_lists_a_bounded_number_of_names():
  wanted = {f"k{i:03d}": (1,) for i in range(100)}
  with pytest.raises(ValueError, match=r"missing \(100\): .* and 80 more"):
    tree_fit.check_fits({}, wanted, "f", "hint")
