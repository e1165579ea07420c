"""Guided sampling latency: the whole 20-point Euler loop with guidance in one jit.

  python bench/sample.py [--sizes=tiny,0.1b] [--pairs=4,8] [--resolution=256]
      [--num_steps=20] [--dtype=bfloat16] [--repeats=2]

Per figure: one example (batch 1) of K context pairs at `resolution` px (256 px ->
32 x 32 latents), J-DiT only (random weights, random latents: the ST-VAE's cost is in
bench/stvae.py). Compile time is reported apart from the median run time. The released
PyTorch code's numbers for the same shapes are in the project's PERF notes (e.g. 0.1B,
4 pairs, float32: 53.4 s). One JSON line per figure.
"""

from absl import app
from absl import flags
import common
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lavin_jax import configs
from lavin_jax import flow
from lavin_jax.configs import sampling
from lavin_jax.models import jdit

_RELEASED = sampling.released()
_SIZES = common.define_choices("sizes", "tiny,0.1b", configs.JDIT_SIZES, "J-DiT sizes")
_PAIRS = common.define_integers("pairs", "4,8", "Context pairs per example.")
_RESOLUTION = flags.DEFINE_integer("resolution", 256, "Image side in pixels.")
_NUM_STEPS = flags.DEFINE_integer("num_steps", _RELEASED.num_steps, "Sampler time points.")
_DTYPE = flags.DEFINE_string("dtype", "bfloat16", "J-DiT compute dtype.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed runs per figure after compilation.")


def bench(size, pairs):
  config = configs.jdit(size)
  config.dtype = _DTYPE.value
  model = jdit.JDiT(config)
  latent = _RESOLUTION.value // 8
  x_shape = (1, 1, latent, latent, config.in_channels)
  cond_frames = 2 * pairs + 1
  rng = np.random.default_rng(0)
  noise = jnp.asarray(rng.standard_normal(x_shape), jnp.float32)
  cond = jnp.asarray(rng.standard_normal((1, cond_frames) + x_shape[2:]), jnp.float32)
  cond_null = jdit.null_condition(cond[:, -1:])
  shapes = jax.eval_shape(model.init, jax.random.key(0), noise, jnp.zeros((1,)), cond)
  params = jax.tree.map(
    lambda s: jnp.asarray(0.02 * rng.standard_normal(s.shape), s.dtype), nn.unbox(shapes["params"])
  )
  grid = jnp.asarray(flow.time_grid(_NUM_STEPS.value))
  sampler = flow.make_guided_sampler(model)
  args = (params, noise, cond, cond_null, grid, _RELEASED.cfg_scale)

  compiled, compile_s = common.timed(lambda: sampler.lower(*args).compile())
  times = common.repeat_seconds(lambda: compiled(*args), _REPEATS.value)
  tokens_per_frame = (latent // config.patch_size) ** 2
  return {
    "figure": "guided_sampling_latency",
    "size": size,
    "pairs": pairs,
    "resolution": _RESOLUTION.value,
    "dtype": _DTYPE.value,
    "grid_points": _NUM_STEPS.value,
    "tokens_cond_pass": (cond_frames + 1) * tokens_per_frame,
    "tokens_null_pass": 3 * tokens_per_frame,
    "seconds_per_example": float(np.median(times)),
    "compile_seconds": compile_s,
    "backend": jax.default_backend(),
  }


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  for size in _SIZES.value:
    for pairs in _PAIRS.value:
      common.print_figure(bench(size, pairs))


if __name__ == "__main__":
  app.run(main)
