r"""One evaluation run (lavin_jax.eval.runner.evaluate; launch/evaluate.py).

  # A task on any source:
  python launch/evaluate.py --bundle=/path/to/bundle --output=eval/ \
      --config=lavin_jax/configs/evaluate.py:depth_estimation \
      --config.source=synthetic:small,split=validation --config.resolution=128
  # One of the paper's protocols (PROTOCOLS; lavin_jax.eval.protocols):
  python launch/evaluate.py --bundle=/path/to/bundle --output=eval/ \
      --config=lavin_jax/configs/evaluate.py:pascal5i_segmentation \
      --config.source=voc:/data/VOCdevkit,split=val

The argument names a task (lavin_jax.configs.tasks.TASK_NAMES) or a protocol.
"""

import ml_collections

from lavin_jax.configs import sampling
from lavin_jax.configs import tasks

NYU_SIZE = (480, 640)
# The standard NYUv2 evaluation crop (Eigen et al.) of 480x640 images: rows 45-470,
# columns 41-600, as (top, bottom, left, right), bottom and right exclusive.
EIGEN_CROP = (45, 471, 41, 601)
NYU_DEPTH_RANGE = (1e-3, 10.0)  # Metres of the depths scored: min < d <= max.

# The paper's evaluation protocols (its appendix B): the task, the source (empty: the
# user gives it), the number of queries, and the settings that differ from the defaults.
PROTOCOLS = {
  "nyuv2_depth": dict(
    task="depth_estimation",
    source="tfds:nyu_depth_v2,split=validation",  # The 654 test images.
    num_examples=654,
    eval_crop=EIGEN_CROP,
    eval_crop_size=NYU_SIZE,
    depth_range=NYU_DEPTH_RANGE,
  ),
  "nyuv2_normals": dict(task="normal_estimation", num_examples=654),  # pseudo:IMAGES,...
  "pascal5i_segmentation": dict(
    task="foreground_segmentation", num_examples=1000, folds=(0, 1, 2, 3)
  ),
  "pascal5i_detection": dict(
    task="detection", num_examples=1000, folds=(0, 1, 2, 3), max_box_fraction=0.5
  ),
  "colorization": dict(task="colorization", num_examples=1000, random_queries=True),
  "inpainting": dict(task="inpainting", num_examples=2500, random_queries=True),
  "de_raining": dict(task="de_raining", num_examples=1000, random_queries=True),
  "de_motion_blur": dict(task="de_motion_blur", num_examples=1000, random_queries=True),
  "coco_panoptic": dict(task="panoptic_segmentation", num_examples=5000),
}
PASCAL_CLASSES_PER_FOLD = 5


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Settings of one evaluation; `arg` may name the task or a protocol."""
  if arg and arg not in tasks.TASKS and arg not in PROTOCOLS:
    raise ValueError(
      f"Unknown task or protocol {arg!r}; tasks: {', '.join(tasks.TASK_NAMES)}; "
      f"protocols: {', '.join(PROTOCOLS)}."
    )
  c = ml_collections.ConfigDict()
  c.protocol = ""  # A name in PROTOCOLS, or "" for config.task on config.source.
  c.task = arg or ""  # A name in lavin_jax.configs.tasks.TASK_NAMES.
  c.num_examples = 100  # N query examples: the first N of the source.
  c.num_pairs = 4  # K context pairs per query.
  c.seed = 0
  c.resolution = 256  # Square side in pixels.
  c.batch_size = 4  # Queries per predict_fn call.
  c.allow_upscale = False  # False: an example smaller than the resolution is an error.
  c.grid_examples = 4  # Rows of the PNG grid.
  c.grid_pairs = 2  # Context pairs shown per row.
  c.task_options = tasks.options()
  # Data and metric weights, for launch/evaluate.py (lavin_jax.eval.model_eval).
  c.source = ""  # query source spec (lavin_jax.data.specs.get_source)
  c.context_source = ""  # context pairs' source spec; "" draws them from `source`
  c.lpips_vgg = ""  # torchvision vgg16-397923af.pth (LPIPS needs both files)
  c.lpips_lin = ""  # LPIPS VGG v0.1 linear heads (.pth)
  c.fid_weights = ""  # pytorch-fid pt_inception-2015-12-05-6726825d.pth
  c.sampling = sampling.released()  # how a model predicts (launch/evaluate.py)
  # Protocol settings (lavin_jax.eval.protocols); the defaults change nothing.
  c.random_queries = False  # True: N queries drawn at random (seed) from the source.
  c.eval_crop = ()  # (top, bottom, left, right) source pixels scored; (): all.
  c.eval_crop_size = ()  # (height, width) the source's images must have for eval_crop.
  c.depth_range = ()  # (min, max) metres of the true depths scored; (): all known.
  c.folds = ()  # Pascal-5i folds (of 5 VOC classes each) to score.
  c.max_box_fraction = 1.0  # Pascal-5i detection: largest box area / image area.
  if arg in PROTOCOLS:
    c.protocol = arg
    c.update(PROTOCOLS[arg])
  return c
