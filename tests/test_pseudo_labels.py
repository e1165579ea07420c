"""Images with depth and normal files beside them: .npy and PNG conventions."""

import pickle

import cv2
import numpy as np
from PIL import Image
import pytest

from lavin_jax.data import pseudo_labels
from lavin_jax.data import specs


def _png(path, array):
  path.parent.mkdir(parents=True, exist_ok=True)
  cv2.imwrite(str(path), array[..., ::-1] if array.ndim == 3 else array)  # RGB -> BGR.


@pytest.fixture
def folders(tmp_path):
  """Two images; depth as .npy and 16-bit PNG, normals as .npy and 8-bit PNG."""
  for name in ("a.png", "sub/b.jpg"):
    path = tmp_path / "images" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 8, 3), 90, np.uint8)).save(path)
  depth = np.full((6, 8), 2.5, np.float32)
  depth[0, 0] = np.nan
  (tmp_path / "depth").mkdir()
  np.save(tmp_path / "depth" / "a.npy", depth)
  millimetres = np.full((6, 8), 1234, np.uint16)
  millimetres[1, 1] = 0
  _png(tmp_path / "depth" / "sub" / "b.png", millimetres)
  normals = np.zeros((6, 8, 3), np.float32)
  normals[..., 2] = -2.0  # Facing the camera, not unit length.
  (tmp_path / "normals").mkdir()
  np.save(tmp_path / "normals" / "a.npy", normals)
  rgb = np.full((6, 8, 3), (128, 64, 255), np.uint8)
  rgb[2, 3] = 0  # Unknown.
  _png(tmp_path / "normals" / "sub" / "b.png", rgb)
  return tmp_path


def test_depth_and_normals_in_their_conventions(folders):
  source = specs.get_source(
    f"pseudo:{folders / 'images'},depth={folders / 'depth'},normals={folders / 'normals'}"
  )
  assert len(source) == 2 and source.keys == ("image", "depth", "normals")
  a, b = source[0], source[1]
  assert a["depth"][0, 0] == 0 and np.all(a["depth"].ravel()[1:] == 2.5)  # NaN: unknown.
  np.testing.assert_allclose(a["normals"], np.broadcast_to([0, 0, -1], (6, 8, 3)))
  assert b["depth"].dtype == np.float32 and b["depth"][1, 1] == 0
  np.testing.assert_allclose(b["depth"][0, 0], 1.234)  # Millimetres by default.
  n = np.array([2 * 128 / 255 - 1, 2 * 64 / 255 - 1, 1.0])
  np.testing.assert_allclose(b["normals"][0, 0], n / np.linalg.norm(n), atol=1e-6)
  assert not b["normals"][2, 3].any()
  opengl = pseudo_labels.PseudoLabels(
    folders / "images", normals=folders / "normals", normals_axes="opengl"
  )
  np.testing.assert_allclose(opengl[0]["normals"][0, 0], [0, 0, 1])
  assert opengl.keys == ("image", "normals")
  kitti = specs.get_source(f"pseudo:{folders / 'images'},depth={folders / 'depth'},depth_scale=256")
  np.testing.assert_allclose(kitti[1]["depth"][0, 0], 1234 / 256)
  np.testing.assert_array_equal(pickle.loads(pickle.dumps(kitti))[1]["depth"], kitti[1]["depth"])


def test_missing_and_bad_label_files(folders):
  images, depth = folders / "images", folders / "depth"
  with pytest.raises(ValueError, match="needs a label folder"):
    specs.get_source(f"pseudo:{images}")
  with pytest.raises(ValueError, match="normals_axes must be one of opencv, opengl"):
    specs.get_source(f"pseudo:{images},normals={depth},normals_axes=blender")
  with pytest.raises(ValueError, match="depth_scale must be a number"):
    specs.get_source(f"pseudo:{images},depth={depth},depth_scale=mm")
  with pytest.raises(FileNotFoundError, match="depth folder .* does not exist"):
    specs.get_source(f"pseudo:{images},depth={folders / 'none'}")
  (depth / "sub" / "b.png").unlink()
  with pytest.raises(FileNotFoundError, match=r"1 image\(s\) .* have no depth file .* sub/b"):
    specs.get_source(f"pseudo:{images},depth={depth}")
  _png(depth / "sub" / "b.png", np.full((6, 8), 9, np.uint8))
  with pytest.raises(ValueError, match=r"b.png is uint8 .* not 16-bit gray"):
    specs.get_source(f"pseudo:{images},depth={depth}")[1]
  np.save(depth / "a.npy", np.ones((5, 8), np.float32))
  with pytest.raises(ValueError, match=r"Depth file .*a.npy is 5x8, its image .* 6x8"):
    specs.get_source(f"pseudo:{images},depth={depth}")[0]
