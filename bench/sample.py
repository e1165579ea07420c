"""Guided sampling latency: the whole 20-point Euler loop with guidance in one jit.

  python bench/sample.py [--sizes=tiny,0.1b] [--pairs=4,8] [--resolution=256]
      [--num_steps=20] [--dtype=bfloat16] [--repeats=2]

Per figure: one example (batch 1) of K context pairs at `resolution` px (256 px ->
32 x 32 latents), J-DiT only (random weights, random latents: the ST-VAE's cost is in
bench/stvae.py); bench/workloads.py builds the sampler. Compile time is reported apart
from the median run time. The released PyTorch code's numbers for the same shapes are
in the project's PERF notes (e.g. 0.1B, 4 pairs, float32: 53.4 s). One JSON line per
figure.
"""

from absl import app
from absl import flags
import common
import jax
import numpy as np
import workloads

from lavin_jax import configs
from lavin_jax.configs import sampling

_RELEASED = sampling.released()
_SIZES = common.define_choices("sizes", "tiny,0.1b", configs.JDIT_SIZES, "J-DiT sizes")
_PAIRS = common.define_integers("pairs", "4,8", "Context pairs per example.")
_RESOLUTION = flags.DEFINE_integer("resolution", 256, "Image side in pixels.")
_NUM_STEPS = flags.DEFINE_integer("num_steps", _RELEASED.num_steps, "Sampler time points.")
_DTYPE = flags.DEFINE_string("dtype", "bfloat16", "J-DiT compute dtype.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed runs per figure after compilation.")


def bench(size, pairs):
  config = workloads.model_config(size, _DTYPE.value)
  work = workloads.sampling(config, pairs, _RESOLUTION.value, _NUM_STEPS.value)
  times = common.repeat_seconds(work.run, _REPEATS.value)
  tokens_per_frame = (_RESOLUTION.value // workloads.VAE_FACTOR // config.patch_size) ** 2
  return {
    "figure": "guided_sampling_latency",
    "size": size,
    "pairs": pairs,
    "resolution": _RESOLUTION.value,
    "dtype": _DTYPE.value,
    "grid_points": _NUM_STEPS.value,
    "attention_impl": config.attention_impl,
    "tokens_cond_pass": (2 * pairs + 2) * tokens_per_frame,
    "tokens_null_pass": 3 * tokens_per_frame,
    "seconds_per_example": float(np.median(times)),
    "compile_seconds": work.compile_seconds,
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
