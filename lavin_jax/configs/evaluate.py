r"""One evaluation run (lavin_jax.eval.runner.evaluate; launch/evaluate.py).

  python launch/evaluate.py --bundle=/path/to/bundle --output=eval/ \
      --config=lavin_jax/configs/evaluate.py:depth_estimation \
      --config.source=synthetic:small,split=validation --config.resolution=128

The argument names the task (lavin_jax.configs.tasks.TASK_NAMES).
"""

import ml_collections

from lavin_jax.configs import sampling
from lavin_jax.configs import tasks


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Settings of one evaluation run; `arg` may name the task."""
  c = ml_collections.ConfigDict()
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
  return c
