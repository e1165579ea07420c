"""A tiny ST-VAE training config, random weights without a compile, small sources, and
LPIPS params built in memory from the metric fixtures' deterministic rule."""

import json
import pathlib

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import splitmix_weights

from lavin_jax.configs import train_vae as train_vae_configs
from lavin_jax.eval import lpips as lpips_lib

_VGG_KEYS = pathlib.Path(__file__).parent / "fixtures" / "metrics" / "vgg16_features_keys.json"


def config(**fields) -> ml_collections.ConfigDict:
  """The `tiny` setting with a 3-level, 8-channel ST-VAE (spatial factor 4) at 16 px,
  an 8-channel 2-layer PatchGAN, no report; `fields` override."""
  c = train_vae_configs.get_config("tiny")
  c.model.block_out_channels = (8, 8, 8)
  c.model.norm_num_groups = 4
  c.source = c.clip_source = ""  # the tests pass their sources
  c.resolution = 16
  c.batch_size = 2
  c.clip_batch_size = 2
  c.clip_frames = 5
  c.optimizer.lr = 2e-3
  c.kl_weight = 1e-3
  c.disc_channels = 8
  c.disc_layers = 2
  c.report_sources = ml_collections.ConfigDict()
  c.update(fields)
  return c


def random_params(module, *inputs, seed=0):
  """Host params of `module`: kernels N(0, 1 / fan_in), other leaves around their init
  (scales near 1, biases near 0); shapes by eval_shape, no compile."""
  rng = np.random.default_rng(seed)
  shapes = nn.unbox(jax.eval_shape(module.init, jax.random.key(0), *inputs)["params"])

  def draw(path, s):
    name = jax.tree_util.keystr(path)
    if len(s.shape) >= 2:
      return rng.normal(0, 1 / np.sqrt(np.prod(s.shape[:-1])), s.shape).astype(s.dtype)
    return ((1.0 if "scale" in name else 0.0) + rng.normal(0, 0.1, s.shape)).astype(s.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def _smooth(rng, frames, size):
  """uint8 (frames, size, size, 3): drifting sinusoids, different per channel."""
  yy, xx = np.mgrid[:size, :size] / size
  f, p, v = rng.uniform(1, 6, 3), rng.uniform(0, 6, 3), rng.uniform(-0.2, 0.2, 2)
  pixels = [
    np.stack(
      [np.sin(f[c] * ((yy + v[0] * t) + (xx + v[1] * t) * (c + 1)) + p[c]) for c in range(3)],
      axis=-1,
    )
    for t in range(frames)
  ]
  return np.round((np.stack(pixels) + 1) * 127.5).astype(np.uint8)


def stills(count, size=20, seed=0) -> list[dict]:
  """A source of `count` stills {'image': uint8 (size, size, 3)}."""
  rng = np.random.default_rng(seed)
  return [{"image": _smooth(rng, 1, size)[0]} for _ in range(count)]


def clips(count, frames=7, size=20, seed=1) -> list[dict]:
  """A source of `count` clips {'video': uint8 (frames, size, size, 3)}."""
  rng = np.random.default_rng(seed)
  return [{"video": _smooth(rng, frames, size)} for _ in range(count)]


def lpips_params():
  """LPIPS params: the deterministic VGG16 of tests/fixtures/metrics and non-negative
  deterministic linear heads (no weight file, no torch)."""
  with open(_VGG_KEYS) as f:
    keys = json.load(f)
  vgg = {
    name: splitmix_weights.deterministic_tensor(k, name, tuple(shape))
    for k, (name, shape) in enumerate(keys)
  }
  lin = {
    f"lin{i}.model.1.weight": np.abs(
      splitmix_weights.deterministic_tensor(len(keys) + i, "weight", (1, width, 1, 1))
    )
    for i, width in enumerate((64, 128, 256, 512, 512))
  }
  return lpips_lib.params_from_state_dicts(vgg, lin)
