"""Images with depth and / or normal maps in folders beside them (pseudo-labels, exports).

Spec 'pseudo:IMAGES[,depth=DIR][,normals=DIR][,depth_scale=1000][,normals_axes=opencv]'.
Every image under IMAGES (as 'folder:') pairs with the file of the same relative path
and stem in each label folder, IMAGES/a/b.jpg with DIR/a/b.npy or DIR/a/b.png (.npy
first). Every label file is found, or the source is not made.

Depth ('depth', metres; 0 where unknown):
  .npy  float (H, W) or (H, W, 1) metres; non-finite or non-positive values are unknown.
  .png  16-bit gray: metres = value / depth_scale (1000: millimetres, as NYUv2 and
        ScanNet store; KITTI uses 256); 0 is unknown. 8-bit PNGs hold no metric depth
        and are refused.
Normals ('normals', unit vectors in the camera frame; 0 where unknown):
  .npy  float (H, W, 3).
  .png  8- or 16-bit RGB: n = 2 v / (2^bits - 1) - 1 per channel, then normalised;
        black (0, 0, 0) is unknown.
  normals_axes: 'opencv' (the schema's: x right, y down, z away from the camera) or
  'opengl' (x right, y up, z towards the viewer), whose y and z are negated.
Depth from a relative model (inverse depth, affine-invariant) must be converted to
metres first; the depth tasks render log depth over [depth_min, depth_max].
"""

import os
import pathlib

import cv2
import numpy as np

from lavin_jax.data import sources

AXES = ("opencv", "opengl")
_LABEL_SUFFIXES = (".npy", ".png")


def _label_path(folder: pathlib.Path, relative: pathlib.Path) -> pathlib.Path | None:
  for suffix in _LABEL_SUFFIXES:
    path = folder / relative.with_suffix(suffix)
    if path.is_file():
      return path
  return None


def _read_png(path: pathlib.Path) -> np.ndarray:
  array = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
  if array is None:
    raise ValueError(f"Cannot read label file {path}; replace or delete it.")
  return array[..., ::-1] if array.ndim == 3 else array  # OpenCV's BGR -> RGB.


def read_depth(path: pathlib.Path, depth_scale: float) -> np.ndarray:
  """float32 (H, W) metres, 0 where unknown (see the module docstring)."""
  if path.suffix == ".npy":
    depth = np.load(path, allow_pickle=False).astype(np.float32)
    depth = depth[..., 0] if depth.ndim == 3 and depth.shape[-1] == 1 else depth
  else:
    raw = _read_png(path)
    if raw.dtype != np.uint16 or raw.ndim != 2:
      raise ValueError(
        f"Depth PNG {path} is {raw.dtype} with shape {raw.shape}, not 16-bit gray; store "
        "depth as 16-bit PNG (value = metres * depth_scale) or as .npy in metres."
      )
    depth = raw.astype(np.float32) / depth_scale
  if depth.ndim != 2:
    raise ValueError(f"Depth file {path} has shape {depth.shape}; expected (H, W).")
  return np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)


def read_normals(path: pathlib.Path, axes: str) -> np.ndarray:
  """float32 (H, W, 3) unit normals with OpenCV axes, 0 where unknown."""
  if path.suffix == ".npy":
    normals = np.load(path, allow_pickle=False).astype(np.float32)
    known = np.ones(normals.shape[:-1], bool)
  else:
    raw = _read_png(path)
    if raw.dtype not in (np.uint8, np.uint16) or raw.ndim != 3 or raw.shape[-1] != 3:
      raise ValueError(
        f"Normal PNG {path} is {raw.dtype} with shape {raw.shape}; expected 8- or 16-bit RGB."
      )
    known = raw.any(-1)
    normals = 2.0 * raw.astype(np.float32) / np.iinfo(raw.dtype).max - 1.0
  if normals.ndim != 3 or normals.shape[-1] != 3:
    raise ValueError(f"Normal file {path} has shape {normals.shape}; expected (H, W, 3).")
  if axes == "opengl":
    normals = normals * np.array([1.0, -1.0, -1.0], np.float32)
  length = np.linalg.norm(normals, axis=-1, keepdims=True)
  known = known[..., None] & np.isfinite(length) & (length > 1e-6)
  return np.where(known, normals / np.where(known, length, 1.0), 0.0).astype(np.float32)


class PseudoLabels:
  """Images under a folder with depth and / or normals beside them (module docstring)."""

  class_names = None

  def __init__(
    self,
    images: str | os.PathLike,
    depth: str | os.PathLike | None = None,
    normals: str | os.PathLike | None = None,
    depth_scale: float | str = 1000.0,
    normals_axes: str = "opencv",
    min_size=None,
  ):
    if depth is None and normals is None:
      raise ValueError(
        "A pseudo-label source needs a label folder: pseudo:IMAGES,depth=DIR and / or normals=DIR."
      )
    if normals_axes not in AXES:
      raise ValueError(f"normals_axes must be one of {', '.join(AXES)}, got {normals_axes!r}.")
    try:
      self.depth_scale = float(depth_scale)
    except ValueError as e:
      raise ValueError(f"depth_scale must be a number, got {depth_scale!r}.") from e
    if not self.depth_scale > 0:
      raise ValueError(f"depth_scale must be positive, got {depth_scale!r}.")
    self.normals_axes = normals_axes
    self.root = pathlib.Path(images)
    self.images = sources.image_folder(self.root, min_size)
    self.folders = {
      key: pathlib.Path(folder)
      for key, folder in (("depth", depth), ("normals", normals))
      if folder is not None
    }
    self.keys = ("image",) + tuple(self.folders)
    self.labels = {key: self._pair(key, folder) for key, folder in self.folders.items()}

  def _pair(self, key: str, folder: pathlib.Path) -> list[pathlib.Path]:
    """The label file of every image; FileNotFoundError naming the first missing."""
    if not folder.is_dir():
      raise FileNotFoundError(f"The {key} folder {folder} does not exist.")
    relative = [p.relative_to(self.root) for p in self.images.paths]
    found = [_label_path(folder, r) for r in relative]
    missing = [r for r, f in zip(relative, found) if f is None]
    if missing:
      raise FileNotFoundError(
        f"{len(missing)} image(s) under {self.root} have no {key} file in {folder}; the first, "
        f"{missing[0]}, needs {folder / missing[0].with_suffix('.npy')} or .png."
      )
    return found

  def __len__(self) -> int:
    return len(self.images)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    example = self.images[index]
    for key, paths in self.labels.items():
      path = paths[index]
      if key == "depth":
        value = read_depth(path, self.depth_scale)
      else:
        value = read_normals(path, self.normals_axes)
      if value.shape[:2] != example["image"].shape[:2]:
        raise ValueError(
          f"{key.capitalize()} file {path} is {value.shape[0]}x{value.shape[1]}, its image "
          f"{self.images.paths[index]} {example['image'].shape[0]}x"
          f"{example['image'].shape[1]}; resize the label to the image."
        )
      example[key] = value
    return example

  def __repr__(self) -> str:
    return f"PseudoLabels({len(self)} images, {', '.join(self.folders)})"
