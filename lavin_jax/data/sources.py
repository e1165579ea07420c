"""Random-access sources of examples: TFDS data sets, image folders, template folders.

Schema (this docstring is the authority; tasks and the pipeline rely on it). A source is
a sequence (`len(source)`, `source[i]`; a grain data source) whose examples are dicts
of numpy arrays holding one of
  'image'      uint8 (H, W, 3) RGB: a still; or
  'video'      uint8 (T, H, W, 3) RGB: a clip;
and any of these annotations (the leading T only for clips):
  'depth'      float32 (..., H, W): depth in metres, i.e. the z of the visible point in
               the camera frame (not the distance along the ray); 0 where unknown.
  'normals'    float32 (..., H, W, 3): unit surface normals in the camera frame with
               OpenCV axes (x right, y down, z forward), facing the camera (negative
               dot product with the pixel's viewing ray); 0 where unknown.
  'instances'  int32 (..., H, W): 0 for background and stuff, 1..N for objects. In a
               clip an id names the same object in every frame (it may be out of view
               in some frames).
  'semantic'   int32 (..., H, W): class ids, 0 background; `source.class_names[id]`.
  'boxes'      float32 (N, 4), stills only: row i is the box [y0, x0, y1, x1] in pixels
               of instance i + 1 (y1 and x1 exclusive: one past the last row / column).
  'flow'       float32 (T - 1, H, W, 2), clips only: forward flow (dx, dy) in pixels
               from frame k to k + 1; pixel (row i, column j) of frame k goes to
               (x, y) = (j + 0.5 + dx, i + 0.5 + dy) in frame k + 1.
Pair sources (template folders of the released code) give instead
  'input', 'target' uint8 (H, W, 3) RGB and 'name' str (the shared file name prefix).

Every source has `keys` (the example keys, so a task can check its annotation before
any example is read) and `class_names` (None where there is no 'semantic').

Sources are named by spec strings: `lavin_jax.data.specs.get_source`.
"""

import os
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image
import skimage
import tensorflow_datasets as tfds

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
SCHEMA_KEYS = ("image", "video", "depth", "normals", "instances", "semantic", "boxes", "flow")
# RGB photographs that ship inside scikit-image's data module (never downloaded).
SKIMAGE_PHOTOGRAPHS = (
  "astronaut.png",
  "chelsea.png",
  "coffee.png",
  "rocket.jpg",
  "motorcycle_left.png",
  "motorcycle_right.png",
  "hubble_deep_field.jpg",
  "retina.jpg",
  "ihc.png",
)


# ----------------------------------------------------------------------------------
# Images on disk.
# ----------------------------------------------------------------------------------
def _min_side(min_size) -> tuple[int, int]:
  """(height, width) lower bounds from an int, a pair or None."""
  if min_size is None:
    return 0, 0
  if isinstance(min_size, (int, np.integer)):
    return int(min_size), int(min_size)
  h, w = min_size
  return int(h), int(w)


def check_size(height: int, width: int, min_size, what: str) -> None:
  """Raises ValueError if a (height, width) image is below `min_size`."""
  min_h, min_w = _min_side(min_size)
  if height < min_h or width < min_w:
    raise ValueError(
      f"{what} is {height}x{width} pixels, smaller than the requested resolution "
      f"{min_h}x{min_w}. Use a smaller resolution, or remove or upscale that image."
    )


def _image_size(path: pathlib.Path) -> tuple[int, int]:
  """(height, width) from the file header; ValueError naming the file if unreadable."""
  try:
    with Image.open(path) as image:
      width, height = image.size
  except (OSError, SyntaxError, ValueError) as e:
    raise _unreadable(path, e) from e
  return height, width


def _unreadable(path, error) -> ValueError:
  return ValueError(f"Cannot read image {path}: {error}. Replace or delete the file.")


def read_image(path: str | os.PathLike, min_size=None) -> np.ndarray:
  """Reads an image file as RGB uint8 (H, W, 3).

  Raises:
    FileNotFoundError: no such file.
    ValueError: the file is not a readable image (corrupt, truncated, not an image) or
      is smaller than `min_size` (an int or (height, width)).
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"No image file at {path}.")
  try:
    with Image.open(path) as image:
      array = np.asarray(image.convert("RGB"))
  except (OSError, SyntaxError, ValueError) as e:
    raise _unreadable(path, e) from e
  check_size(array.shape[0], array.shape[1], min_size, f"Image {path}")
  return array


class ImageFilesSource:
  """Stills read from a list of image files: examples {'image'}.

  Every file header is read when the source is made, so a file that is not an image or
  is smaller than `min_size` fails before training, naming the file.
  """

  keys = ("image",)
  class_names = None

  def __init__(self, paths: Sequence[str | os.PathLike], min_size=None):
    self.paths = [pathlib.Path(p) for p in paths]
    self.min_size = min_size
    for path in self.paths:
      if not path.is_file():
        raise FileNotFoundError(f"No image file at {path}.")
      check_size(*_image_size(path), min_size, f"Image {path}")

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {"image": read_image(self.paths[index], self.min_size)}

  def __repr__(self) -> str:
    return f"ImageFilesSource({len(self)} images, min_size={self.min_size})"


def image_folder(folder: str | os.PathLike, min_size=None) -> ImageFilesSource:
  """Every image under `folder` (recursively, sorted by path) as a source of stills."""
  folder = pathlib.Path(folder)
  if not folder.is_dir():
    raise FileNotFoundError(f"Image folder {folder} does not exist.")
  paths = sorted(
    p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
  )
  if not paths:
    raise ValueError(
      f"Image folder {folder} holds no images (looked for "
      f"{', '.join(IMAGE_EXTENSIONS)}). Put images there or point to another folder."
    )
  return ImageFilesSource(paths, min_size)


def skimage_photographs(min_size=None) -> ImageFilesSource:
  """The RGB photographs shipped inside scikit-image, a natural-image source."""
  data_dir = pathlib.Path(skimage.data.__file__).parent
  paths = [data_dir / name for name in SKIMAGE_PHOTOGRAPHS]
  missing = [str(p) for p in paths if not p.is_file()]
  if missing:
    raise FileNotFoundError(
      f"scikit-image {skimage.__version__} does not ship {', '.join(missing)}; "
      "install scikit-image>=0.24,<0.27 (the tested versions)."
    )
  return ImageFilesSource(paths, min_size)


class TemplateFolderSource:
  """Pairs in the released template-folder format: <name>_input.png, <name>_target.png.

  Examples are {'input', 'target', 'name'}, sorted by name.
  """

  keys = ("input", "target", "name")
  class_names = None
  suffixes = ("_input.png", "_target.png")

  def __init__(self, folder: str | os.PathLike, min_size=None):
    self.folder = pathlib.Path(folder)
    self.min_size = min_size
    if not self.folder.is_dir():
      raise FileNotFoundError(f"Template folder {self.folder} does not exist.")
    inputs, targets = (
      {p.name[: -len(suffix)]: p for p in self.folder.glob(f"*{suffix}")}
      for suffix in self.suffixes
    )
    unmatched = sorted(
      [f"{p.name} (no {n}_target.png)" for n, p in inputs.items() if n not in targets]
      + [f"{p.name} (no {n}_input.png)" for n, p in targets.items() if n not in inputs]
    )
    if unmatched:
      raise ValueError(
        f"Template folder {self.folder} has unmatched files: {'; '.join(unmatched)}. "
        "Each <name>_input.png needs a <name>_target.png: add or rename the partner, "
        "or remove the file."
      )
    if not inputs:
      raise ValueError(
        f"Template folder {self.folder} has no pairs. Name each pair "
        "<name>_input.png and <name>_target.png."
      )
    self.names = sorted(inputs)
    self.pairs = [(inputs[n], targets[n]) for n in self.names]
    for pair in self.pairs:
      for path in pair:
        check_size(*_image_size(path), min_size, f"Image {path}")

  def __len__(self) -> int:
    return len(self.pairs)

  def __getitem__(self, index: int) -> dict[str, Any]:
    input_path, target_path = self.pairs[index]
    return {
      "input": read_image(input_path, self.min_size),
      "target": read_image(target_path, self.min_size),
      "name": self.names[index],
    }

  def __repr__(self) -> str:
    return f"TemplateFolderSource({self.folder}, {len(self)} pairs)"


# ----------------------------------------------------------------------------------
# TFDS.
# ----------------------------------------------------------------------------------
def _as_rgb(array: np.ndarray) -> np.ndarray:
  """uint8 (..., H, W, 3) from gray (..., H, W) / (..., H, W, 1) or RGBA."""
  array = np.asarray(array)
  if array.shape[-1] not in (1, 3, 4):
    array = array[..., None]
  if array.shape[-1] == 1:
    array = np.repeat(array, 3, -1)
  return array[..., :3]


class TfdsSource:
  """A split of a prepared TFDS data set read through `tfds.data_source`.

  Args:
    name: TFDS name, with the config if any ('name/config').
    split: split name (TFDS slicing such as 'train[:90%]' works).
    data_dir: TFDS data directory (None: TFDS's default).
    features: schema key -> feature name ('a/b' for nested features). None: the
      schema keys the data set has under the same names.
    min_size: stills or clips below it are an error (checked as examples are read).
    class_names: names of the 'semantic' ids, if the data set has them.
  """

  def __init__(
    self,
    name: str,
    split: str = "train",
    data_dir: str | None = None,
    features: Mapping[str, str] | None = None,
    min_size=None,
    class_names: Sequence[str] | None = None,
  ):
    self.name, self.split, self.min_size = name, split, min_size
    try:
      builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
      raise FileNotFoundError(
        f"TFDS data set {name!r} is neither registered nor prepared under data_dir="
        f"{data_dir}. Check the name, or pass the data_dir it was prepared in."
      ) from e
    if not builder.is_prepared():
      raise FileNotFoundError(
        f"TFDS data set {name!r} is not prepared in {builder.data_dir}. Prepare "
        f"it with `tfds build {name} --file_format=array_record --data_dir=DIR` "
        "and pass that data_dir."
      )
    try:
      self._source = builder.as_data_source(split=split)
    except NotImplementedError as e:
      raise ValueError(
        f"TFDS data set {name!r} in {builder.data_dir} is not stored as "
        "array_record, so it has no random access. Prepare it again with "
        f"`tfds build {name} --file_format=array_record`."
      ) from e
    available = _feature_names(builder.info.features)
    if features is None:
      features = {k: k for k in SCHEMA_KEYS if k in available}
    missing = {k: f for k, f in features.items() if f not in available}
    if missing:
      raise ValueError(
        f"TFDS data set {name!r} has no feature(s) {missing}; it has "
        f"{sorted(available)}. Map the schema keys to existing features."
      )
    if not any(k in features for k in ("image", "video")):
      raise ValueError(
        f'TFDS data set {name!r}: no feature is mapped to "image" or "video" '
        f'(features: {sorted(available)}). Pass features={{"image": "<name>"}}.'
      )
    self.features = dict(features)
    self.keys = tuple(features)
    self.class_names = None if class_names is None else tuple(class_names)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    raw = self._source[index]
    example = {key: _lookup(raw, feature) for key, feature in self.features.items()}
    for key, value in example.items():
      if isinstance(value, list):  # Sequence features decode to lists.
        example[key] = np.stack(value)
    for key in ("image", "video"):
      if key in example:
        example[key] = _as_rgb(example[key])
        h, w = example[key].shape[-3:-1]
        check_size(h, w, self.min_size, f"Example {index} of TFDS {self.name}, split {self.split}")
    return example

  def __repr__(self) -> str:
    return f"TfdsSource({self.name!r}, split={self.split!r}, {len(self)} examples)"


def _feature_names(features, prefix: str = "") -> set[str]:
  """Feature names of a FeaturesDict, nested ones as 'a/b'."""
  names = set()
  for key, feature in features.items():
    names.add(prefix + key)
    if isinstance(feature, tfds.features.FeaturesDict):
      names |= _feature_names(feature, prefix + key + "/")
  return names


def _lookup(example: Mapping[str, Any], feature: str):
  for part in feature.split("/"):
    example = example[part]
  return example


# ----------------------------------------------------------------------------------
# Factory.
# ----------------------------------------------------------------------------------
