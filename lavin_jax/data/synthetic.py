"""The built-in data set: rendered scenes with exact annotations, no download.

Two TFDS builders share the renderer (render.py) and the sizes (`SyntheticConfig`):
  lavin_synthetic_images/<config>: stills with 'image', 'depth', 'normals',
    'instances', 'semantic', 'boxes';
  lavin_synthetic_clips/<config>: clips with 'video', 'depth', 'normals', 'instances',
    'semantic', 'flow'.
Both have 'train' and 'validation' splits, are stored as array_record and build without
TensorFlow: images are PNG-encoded with OpenCV and handed to `tfds.features.Image` as
bytes; arrays are `tfds.features.Tensor`s (zlib-encoded, but for the flow). Example i
of a split is rendered from the seed (config.seed, split index, i), so a build is
deterministic.

  build_synthetic(data_dir, 'small')              # both builders, once
  load_synthetic(data_dir, 'small', 'clips')      # a source (see sources.py)
"""

import contextlib
import dataclasses
import functools
import multiprocessing
import multiprocessing.pool
import os

import cv2
import numpy as np
import tensorflow_datasets as tfds

from lavin_jax.data import render
from lavin_jax.data import sources

CONTENTS = ("images", "clips")
SPLITS = ("train", "validation")


@dataclasses.dataclass(eq=False)
class SyntheticConfig(tfds.core.BuilderConfig):
  """Sizes of the synthetic data set.

  Attributes:
    image_size: side of the square stills, pixels.
    clip_size: side of the square clips, pixels.
    clip_frames: frames per clip (1 + 4k, as video tasks need).
    images: number of stills per split.
    clips: number of clips per split.
    seed: base seed of the scenes.
    scene: the ranges scenes are drawn from.
  """

  image_size: int = 128
  clip_size: int = 64
  clip_frames: int = 9
  images: dict[str, int] = dataclasses.field(default_factory=dict)
  clips: dict[str, int] = dataclasses.field(default_factory=dict)
  seed: int = 0
  scene: render.SceneSpec = render.SceneSpec()


CONFIGS = (
  SyntheticConfig(
    name="tiny",
    description="A handful of small examples, for tests.",
    image_size=32,
    clip_size=32,
    clip_frames=5,
    images={"train": 8, "validation": 4},
    clips={"train": 4, "validation": 2},
  ),
  SyntheticConfig(
    name="small",
    description="A few hundred examples; builds in well under a minute.",
    image_size=128,
    clip_size=64,
    clip_frames=9,
    images={"train": 256, "validation": 32},
    clips={"train": 64, "validation": 16},
  ),
  SyntheticConfig(
    name="demo",
    description="A thousand stills at 64 px with fewer, larger and "
    "nearer objects, for the end-to-end demo.",
    image_size=64,
    clip_size=32,
    clip_frames=5,
    images={"train": 1024, "validation": 64},
    clips={"train": 8, "validation": 2},
    scene=render.SceneSpec(
      min_objects=1,
      max_objects=3,
      sphere_radius=(0.6, 1.1),
      box_half_extent=(0.5, 1.0),
      field_of_view_degrees=(40.0, 55.0),
      object_distance=(2.5, 5.5),
    ),
  ),
  SyntheticConfig(
    name="medium",
    description="Enough stills and clips at 256 / 128 px to train small models.",
    image_size=256,
    clip_size=128,
    clip_frames=9,
    images={"train": 8192, "validation": 256},
    clips={"train": 1024, "validation": 64},
  ),
)


def _png(image: np.ndarray) -> bytes:
  """PNG bytes of an RGB uint8 image."""
  ok, encoded = cv2.imencode(".png", image[..., ::-1])
  if not ok:
    raise RuntimeError("OpenCV failed to encode a PNG.")
  return encoded.tobytes()


def _array(shape, dtype, encoding="zlib"):
  return tfds.features.Tensor(shape=shape, dtype=dtype, encoding=encoding)


class _SyntheticBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared parts of the two builders.

  Args:
    pool: optional multiprocessing pool that renders the examples (the writing stays
      in this process); None renders here.
    **kwargs: as for any TFDS builder (config, data_dir, file_format...).
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version."}
  BUILDER_CONFIGS = list(CONFIGS)
  DEFAULT_BUILDER_CONFIG_NAME = "small"
  CONTENT = ""  # 'images' or 'clips'.
  # Nothing is downloaded, so there is no checksums file to find next to the code;
  # TFDS's search for it needs importlib_resources, which tfds does not install.
  code_path = None

  def __init__(self, *, pool: multiprocessing.pool.Pool | None = None, **kwargs):
    super().__init__(**kwargs)
    self._pool = pool

  def _split_generators(self, dl_manager):
    del dl_manager
    counts = getattr(self.builder_config, self.CONTENT)
    return {split: self._generate_examples(split, counts[split]) for split in SPLITS}

  def _generate_examples(self, split, count):
    seeds = [(self.builder_config.seed, SPLITS.index(split), i) for i in range(count)]
    render_fn = self._render_fn()
    examples = (
      self._pool.imap(render_fn, seeds, chunksize=4) if self._pool else map(render_fn, seeds)
    )
    for i, example in enumerate(examples):
      yield i, self._encode(example)


class LavinSyntheticImages(_SyntheticBuilder):
  """Rendered stills with depth, normals, instances, semantics and boxes."""

  CONTENT = "images"

  def _info(self):
    s = self.builder_config.image_size
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(s, s, 3)),
          "depth": _array((s, s), np.float32),
          "normals": _array((s, s, 3), np.float32),
          "instances": _array((s, s), np.int32),
          "semantic": _array((s, s), np.int32),
          "boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
        }
      )
    )

  def _render_fn(self):
    c = self.builder_config
    return functools.partial(
      render.render_image, height=c.image_size, width=c.image_size, spec=c.scene
    )

  def _encode(self, example):
    return example | {"image": _png(example["image"])}


class LavinSyntheticClips(_SyntheticBuilder):
  """Rendered clips with depth, normals, instances, semantics and forward flow."""

  CONTENT = "clips"

  def _info(self):
    s, t = self.builder_config.clip_size, self.builder_config.clip_frames
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict(
        {
          "video": tfds.features.Sequence(tfds.features.Image(shape=(s, s, 3)), length=t),
          "depth": _array((t, s, s), np.float32),
          "normals": _array((t, s, s, 3), np.float32),
          "instances": _array((t, s, s), np.int32),
          "semantic": _array((t, s, s), np.int32),
          # Flow barely compresses and zlib is slow on it: stored raw.
          "flow": _array((t - 1, s, s, 2), np.float32, encoding="bytes"),
        }
      )
    )

  def _render_fn(self):
    c = self.builder_config
    return functools.partial(
      render.render_clip,
      num_frames=c.clip_frames,
      height=c.clip_size,
      width=c.clip_size,
      spec=c.scene,
    )

  def _encode(self, example):
    return example | {"video": [_png(frame) for frame in example["video"]]}


BUILDERS = {"images": LavinSyntheticImages, "clips": LavinSyntheticClips}


def _config(config_name: str) -> SyntheticConfig:
  for config in CONFIGS:
    if config.name == config_name:
      return config
  raise ValueError(
    f"Unknown synthetic config {config_name!r}; expected one of {[c.name for c in CONFIGS]}."
  )


def build_synthetic(
  data_dir: str | os.PathLike | None = None,
  config_name: str = "small",
  num_workers: int = 1,
  contents: tuple[str, ...] = CONTENTS,
) -> None:
  """Renders and writes the builders of `config_name` unless already built.

  Build once before starting several readers (hosts, workers) on the same data_dir.

  Args:
    data_dir: TFDS data directory (None: TFDS's default).
    config_name: a `CONFIGS` name.
    num_workers: rendering processes; 1 renders in this process. Workers are spawned,
      so a script that asks for more must call this under `if __name__ == '__main__'`.
    contents: which builders, 'images' and / or 'clips'.
  """
  _config(config_name)
  todo = [c for c in contents if not _builder(data_dir, config_name, c).is_prepared()]
  if not todo:
    return
  # 'spawn' keeps the workers clear of any threads (JAX's) of this process.
  with (
    multiprocessing.get_context("spawn").Pool(num_workers)
    if num_workers > 1
    else contextlib.nullcontext()
  ) as pool:
    for content in todo:
      _builder(data_dir, config_name, content, pool).download_and_prepare()


def _builder(data_dir, config_name, content, pool=None):
  if content not in BUILDERS:
    raise ValueError(f"Unknown synthetic content {content!r}; expected one of {list(BUILDERS)}.")
  return BUILDERS[content](
    config=config_name, data_dir=data_dir, file_format="array_record", pool=pool
  )


def load_synthetic(
  data_dir: str | os.PathLike | None = None,
  config_name: str = "small",
  content: str = "images",
  split: str = "train",
  min_size=None,
) -> sources.TfdsSource:
  """A random-access source of the synthetic stills or clips, built if needed.

  Args:
    data_dir: TFDS data directory (None: TFDS's default).
    config_name: a `CONFIGS` name ('tiny', 'small', 'demo', 'medium').
    content: 'images' or 'clips'.
    split: 'train' or 'validation' (TFDS slicing such as 'train[:50%]' works).
    min_size: requested resolution; an error if the config renders smaller.
  """
  config = _config(config_name)
  builder = _builder(data_dir, config_name, content)
  size = config.image_size if content == "images" else config.clip_size
  sources.check_size(size, size, min_size, f"Synthetic {content} of config {config_name!r}")
  if not builder.is_prepared():
    build_synthetic(data_dir, config_name, contents=(content,))
  return sources.TfdsSource(
    f"{builder.name}/{config_name}",
    split,
    data_dir=os.fspath(builder.data_dir_root),
    min_size=min_size,
    class_names=render.CLASS_NAMES,
    thing_classes=(render.SPHERE, render.BOX),
  )
