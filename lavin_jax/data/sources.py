"""Random-access sources of examples: the schema, TFDS data sets, image and template folders.

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
  'keypoints'  float32 (N, 17, 3), stills only: one row per person, COCO's 17 joints as
               (x, y, v): x, y in the pixel frame of boxes (pixel (row i, column j) spans
               [j, j + 1) x [i, i + 1)), v COCO's visibility (0 not labelled, x = y = 0;
               1 labelled, hidden; 2 visible); `lavin_jax.data.keypoints`.
  'valid'      bool (..., H, W): the pixels whose annotations count in an evaluation
               (False on void labels, outside a benchmark's crop); all where absent.
  'flow'       float32 (T - 1, H, W, 2), clips only: forward flow (dx, dy) in pixels
               from frame k to k + 1; pixel (row i, column j) of frame k goes to
               (x, y) = (j + 0.5 + dx, i + 0.5 + dy) in frame k + 1.
Pair sources (template folders of the released code) give instead
  'input', 'target' uint8 (H, W, 3) RGB and 'name' str (the shared file name prefix).

Every source has `keys` (the example keys, so a task can check its annotation before
any example is read) and `class_names` (None where there is no 'semantic'). Sources of
panoptic labels also have `thing_classes`: the class ids whose objects are instances
(in those classes an id-0 pixel is a crowd); the other classes are stuff.

Sources are named by spec strings: `lavin_jax.data.specs.get_source`.
"""

import os
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image
import skimage
import tensorflow_datasets as tfds

from lavin_jax.data import class_names
from lavin_jax.data import keypoints as keypoints_lib

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
SCHEMA_KEYS = (
  "image",
  "video",
  "depth",
  "normals",
  "instances",
  "semantic",
  "boxes",
  "keypoints",
  "flow",
  "valid",
)
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


def image_size(path: pathlib.Path) -> tuple[int, int]:
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


def read_label_png(path: str | os.PathLike) -> np.ndarray:
  """uint8 (H, W) indices of a palette (or gray) PNG of labels, as VOC and DAVIS store.

  Raises:
    FileNotFoundError: no such file.
    ValueError: not a palette or gray image.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"No label file at {path}.")
  try:
    with Image.open(path) as image:
      if image.mode not in ("P", "L"):
        raise ValueError(
          f"Label file {path} is a {image.mode} image, not a palette PNG of label "
          "indices; use the data set's own PNGs."
        )
      return np.asarray(image)
  except (OSError, SyntaxError) as e:
    raise _unreadable(path, e) from e


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
      check_size(*image_size(path), min_size, f"Image {path}")

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


def match_pairs(folder, inputs: dict, targets: dict, kind: str):
  """(names, [(input, target)]) of template entries matched by name, sorted by name.

  `inputs` and `targets` map a name to its entry; `kind` names the files in errors
  ('.png', ' clip'). Raises ValueError naming every entry without its partner.
  """
  unmatched = sorted(
    [f"{p.name} (no {n}_target{kind})" for n, p in inputs.items() if n not in targets]
    + [f"{p.name} (no {n}_input{kind})" for n, p in targets.items() if n not in inputs]
  )
  if unmatched:
    raise ValueError(
      f"Template folder {folder} has unmatched files: {'; '.join(unmatched)}. Each "
      f"<name>_input{kind} needs a <name>_target{kind}: add or rename the partner, or "
      "remove the file."
    )
  names = sorted(inputs)
  return names, [(inputs[n], targets[n]) for n in names]


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
    self.names, self.pairs = match_pairs(self.folder, inputs, targets, ".png")
    if not self.pairs:
      raise ValueError(
        f"Template folder {self.folder} has no pairs. Name each pair "
        "<name>_input.png and <name>_target.png."
      )
    for pair in self.pairs:
      for path in pair:
        check_size(*image_size(path), min_size, f"Image {path}")

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
# Values in the schema's types.
# ----------------------------------------------------------------------------------
def _as_rgb(array: np.ndarray) -> np.ndarray:
  """uint8 (..., H, W, 3) from gray (..., H, W) / (..., H, W, 1) or RGBA."""
  array = np.asarray(array)
  if array.shape[-1] not in (1, 3, 4):
    array = array[..., None]
  if array.shape[-1] == 1:
    array = np.repeat(array, 3, -1)
  return array[..., :3]


def _plane(array: np.ndarray) -> np.ndarray:
  """(..., H, W) of a label map stored as an image: (..., H, W, 1) or gray RGB."""
  return array[..., 0] if array.ndim >= 3 and array.shape[-1] in (1, 3) else array


def to_schema(key: str, value) -> np.ndarray:
  """`value` with the dtype and layout the schema gives `key`.

  Images become RGB uint8; label maps ('instances', 'semantic', 'valid') stored as
  images (a trailing axis of 1 or 3 equal channels) lose that axis; 'depth' loses a
  trailing axis of 1.
  """
  value = np.asarray(value)
  if key in ("image", "video"):
    return _as_rgb(value).astype(np.uint8, copy=False)
  if key in ("instances", "semantic"):
    return _plane(value).astype(np.int32, copy=False)
  if key == "valid":
    return _plane(value).astype(bool, copy=False)
  if key == "depth":
    value = value[..., 0] if value.shape[-1:] == (1,) else value
  elif key == "boxes":
    value = value.reshape(-1, 4)
  elif key == "keypoints":
    return keypoints_lib.as_keypoints(value)
  return value.astype(np.float32, copy=False)


# ----------------------------------------------------------------------------------
# TFDS.
# ----------------------------------------------------------------------------------
# TFDS data sets whose features are not named as the schema's keys: 'tfds:NAME' maps
# them as below (a spec's KEY=FEATURE options override), and names their classes.
TFDS_PRESETS: dict[str, dict[str, Any]] = {
  "scene_parse150": {
    "features": {"semantic": "annotation"},
    "class_names": class_names.ADE20K,
  },
  "div2k": {"features": {"image": "hr"}},
}


class TfdsSource:
  """A split of a prepared TFDS data set read through `tfds.data_source`.

  Args:
    name: TFDS name, with the config if any ('name/config').
    split: split name (TFDS slicing such as 'train[:90%]' works).
    data_dir: TFDS data directory (None: TFDS's default).
    features: schema key -> feature name ('a/b' for nested features), added to (and
      overriding) the defaults: the schema keys the data set has under the same names,
      and the `TFDS_PRESETS` of the data set.
    min_size: stills or clips below it are an error (checked as examples are read).
    class_names: names of the 'semantic' ids (default: the preset's, if any).
    thing_classes: the class ids with instances, for panoptic labels.
  """

  def __init__(
    self,
    name: str,
    split: str = "train",
    data_dir: str | None = None,
    features: Mapping[str, str] | None = None,
    min_size=None,
    class_names: Sequence[str] | None = None,
    thing_classes: Sequence[int] | None = None,
  ):
    self.name, self.split, self.min_size = name, split, min_size
    unknown = sorted(set(features or ()) - set(SCHEMA_KEYS))
    if unknown:
      raise ValueError(
        f"TFDS data set {name!r}: {unknown} are not schema keys; map some of "
        f"{', '.join(SCHEMA_KEYS)} to features, e.g. semantic=annotation."
      )
    try:
      builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
      raise FileNotFoundError(
        f"TFDS data set {name!r} is neither registered nor prepared under data_dir="
        f"{data_dir}. Check the name, or pass the data_dir it was prepared in."
      ) from e
    try:
      self._source = builder.as_data_source(split=split)
    except NotImplementedError as e:
      if not builder.is_prepared():
        raise FileNotFoundError(
          f"TFDS data set {name!r} is not prepared in {builder.data_dir}. Prepare "
          f"it with `tfds build {name} --file_format=array_record --data_dir=DIR` "
          "and pass that data_dir."
        ) from e
      raise ValueError(
        f"TFDS data set {name!r} in {builder.data_dir} is not stored as "
        "array_record, so it has no random access. Prepare it again with "
        f"`tfds build {name} --file_format=array_record`."
      ) from e
    available = _feature_names(builder.info.features)
    preset = TFDS_PRESETS.get(name.split("/")[0], {})
    mapped = {k: k for k in SCHEMA_KEYS if k in available}
    mapped.update(preset.get("features", {}))
    mapped.update(features or {})
    missing = {k: f for k, f in mapped.items() if f not in available}
    if missing:
      raise ValueError(
        f"TFDS data set {name!r} has no feature(s) {missing}; it has "
        f"{sorted(available)}. Map the schema keys to existing features."
      )
    if not any(k in mapped for k in ("image", "video")):
      raise ValueError(
        f'TFDS data set {name!r}: no feature is mapped to "image" or "video" '
        f"(features: {sorted(available)}). Give one, e.g. tfds:{name},image=<feature>."
      )
    self.features = mapped
    self.keys = tuple(mapped)
    names = preset.get("class_names") if class_names is None else class_names
    self.class_names = None if names is None else tuple(names)
    if thing_classes is not None:
      self.thing_classes = tuple(int(c) for c in thing_classes)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    raw = self._source[index]
    example = {}
    for key, feature in self.features.items():
      value = _lookup(raw, feature)
      if isinstance(value, list):  # Sequence features decode to lists.
        value = np.stack(value)
      example[key] = to_schema(key, value)
    for key in ("image", "video"):
      if key in example:
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
