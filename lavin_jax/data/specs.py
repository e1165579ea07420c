"""Sources by name: spec strings and configs -> `lavin_jax.data.sources` objects.

`get_source(spec)` makes a source (`lavin_jax.data.sources`) from a string or a config:
  'tfds:NAME[/CONFIG][,split=train][,data_dir=DIR][,KEY=FEATURE...]'
                                                       any prepared TFDS data set
                                                       stored as array_record; KEY=FEATURE
                                                       reads schema key KEY from FEATURE
                                                       ('a/b' nested), e.g.
                                                       tfds:div2k,image=hr (same-name
                                                       features and sources.TFDS_PRESETS
                                                       are read unasked)
  'folder:PATH'                                        every image under PATH
  'templates:PATH'                                     <name>_input.png /
                                                       <name>_target.png pairs
  'photos'                                             photographs shipped inside
                                                       scikit-image (no download)
  'synthetic[:CONFIG][,content=images|clips][,split=train|validation][,data_dir=DIR]'
                                                       the built-in rendered data set,
                                                       built on first use (synthetic.py);
                                                       split=images|clips is short for
                                                       content=...,split=train
  'coco:ROOT[,split=train2017|val2017][,annotations=instances|keypoints|panoptic]'
                                                       COCO 2017's own files (coco.py)
  'voc:ROOT[,split=train|val|trainval]'                Pascal VOC 2012 segmentation,
                                                       the VOCdevkit files (voc.py)
  'davis:ROOT[,split=train|val][,clip_frames=N]'       DAVIS 2017 clips with their
                                                       object ids (davis.py)
  'videos:DIR[,clip_frames=N]'                         clips of the video files under
                                                       DIR (videos.py)
  'pseudo:IMAGES[,depth=DIR][,normals=DIR][,depth_scale=1000][,normals_axes=opencv|opengl]'
                                                       images with depth / normal files
                                                       beside them (pseudo_labels.py)
  'packed:DIR'                                         a source packed into ArrayRecord
                                                       shards (packed.py,
                                                       launch/pack_source.py)
Each also takes `min_size=N`: an image smaller than N pixels on a side is an error.
The same fields go in a dict or ConfigDict: {'kind': 'folder', 'path': ..., ...}.
"""

import inspect
import re
from typing import Any, Callable, Mapping

from lavin_jax.data import coco
from lavin_jax.data import davis
from lavin_jax.data import packed
from lavin_jax.data import pseudo_labels
from lavin_jax.data import sources
from lavin_jax.data import synthetic
from lavin_jax.data import videos
from lavin_jax.data import voc


def _tfds(name, split="train", data_dir=None, min_size=None, **features):
  return sources.TfdsSource(name, split, data_dir, features, min_size)


def _synthetic(name="small", content="images", split="train", data_dir=None, min_size=None):
  if split in synthetic.CONTENTS:  # 'split=clips' reads the train split of clips.
    content, split = split, "train"
  return synthetic.load_synthetic(data_dir, name, content, split, min_size)


def _photos(min_size=None):
  return sources.skimage_photographs(min_size)


# kind -> (factory, name of the argument after the colon or None).
_KINDS: dict[str, tuple[Callable[..., Any], str | None]] = {
  "tfds": (_tfds, "name"),
  "folder": (sources.image_folder, "folder"),
  "templates": (sources.TemplateFolderSource, "folder"),
  "photos": (_photos, None),
  "synthetic": (_synthetic, "name"),
  "coco": (coco.load, "root"),
  "voc": (voc.VocSegmentation, "root"),
  "davis": (davis.Davis, "root"),
  "videos": (videos.VideoFiles, "folder"),
  "pseudo": (pseudo_labels.PseudoLabels, "images"),
  "packed": (packed.PackedSource, "folder"),
}


_INTEGER_OPTIONS = ("min_size", "clip_frames")


def parse_spec(spec: str) -> dict[str, Any]:
  """'kind:arg,key=value,...' -> {'kind': ..., <arg name>: arg, key: value}."""
  kind, sep, rest = re.match(r"([^:,]*)([:,]?)(.*)", spec).groups()
  if sep == ",":  # Options, no argument.
    rest = "," + rest
  if kind not in _KINDS:
    raise ValueError(
      f"Unknown source kind {kind!r} in {spec!r}; expected one of "
      f'{sorted(_KINDS)} (e.g. "folder:/path/to/images").'
    )
  fields = {"kind": kind}
  parts = rest.split(",")
  arg_name = _KINDS[kind][1]
  if parts[0]:
    if arg_name is None:
      raise ValueError(f"Source {kind!r} takes no argument, got {parts[0]!r} in {spec!r}.")
    fields[arg_name] = parts[0]
  for part in parts[1:]:
    key, eq, value = part.partition("=")
    if not eq:
      raise ValueError(f"Source option {part!r} in {spec!r} is not key=value.")
    key = key.strip()
    if key in _INTEGER_OPTIONS:
      if not value.strip().isdigit():
        raise ValueError(f"Source option {part!r} in {spec!r} needs a whole number.")
      value = int(value)
    fields[key] = value
  return fields


def get_source(spec: str | Mapping[str, Any]):
  """A source from a spec string or a dict / ConfigDict (see the module docstring)."""
  fields = (
    parse_spec(spec)
    if isinstance(spec, str)
    else dict(spec.to_dict() if hasattr(spec, "to_dict") else spec)
  )
  kind = fields.pop("kind", None)
  if kind not in _KINDS:
    raise ValueError(f"Unknown source kind {kind!r}; expected one of {sorted(_KINDS)}.")
  factory, arg_name = _KINDS[kind]
  if "path" in fields and arg_name == "folder":
    fields["folder"] = fields.pop("path")
  try:
    inspect.signature(factory).bind(**fields)
  except TypeError as e:
    raise ValueError(f"Bad options {sorted(fields)} for source {kind!r}: {e}.") from e
  return factory(**fields)
