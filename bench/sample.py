"""Guided sampling latency: the whole 20-point Euler loop with guidance in one jit.

  python bench/sample.py [--sizes=tiny,0.1b] [--pairs=4,8] [--resolution=256]
      [--num_steps=20] [--dtype=bfloat16] [--repeats=2]
      [--compare_cache [--kv_refresh=2,4]] [--bundle=DIR]

Per figure: one example (batch 1) of K context pairs at `resolution` px (256 px ->
32 x 32 latents), J-DiT only (random weights, random latents: the ST-VAE's cost is in
bench/stvae.py); bench/workloads.py builds the sampler. Compile time is reported apart
from the run time, the best of `repeats` runs interleaved over the variants. The
released PyTorch code's numbers for the same shapes are in the project's PERF notes
(e.g. 0.1B, 4 pairs, float32: 53.4 s). One JSON line per figure.

--compare_cache: one line per variant of each size and pair count, all on the same
weights (lavin_jax.inference.cached_sampling):
  released      the joint sequence at every step (independent_condition false)
  exact_cache   independent_condition true: the condition's keys and values once
  kv_refresh_k  the released layout, keys and values recomputed every k-th step; its
                `rel_error` is |x - x_released| / |x_released| of the samples
--bundle: a bundle's J-DiT weights and config instead of random ones (--sizes unused).
"""

from absl import app
from absl import flags
import common
import jax
import numpy as np
import workloads

from lavin_jax import configs
from lavin_jax import flow
from lavin_jax.configs import sampling
from lavin_jax.inference import cached_sampling
from lavin_jax.inference import pipeline
from lavin_jax.io import bundle as bundle_lib

_RELEASED = sampling.released()
_SIZES = common.define_choices("sizes", "tiny,0.1b", configs.JDIT_SIZES, "J-DiT sizes")
_PAIRS = common.define_integers("pairs", "4,8", "Context pairs per example.")
_RESOLUTION = flags.DEFINE_integer("resolution", 256, "Image side in pixels.")
_NUM_STEPS = flags.DEFINE_integer("num_steps", _RELEASED.num_steps, "Sampler time points.")
_DTYPE = flags.DEFINE_string("dtype", "bfloat16", "J-DiT compute dtype.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed runs per figure (best) after compiling.")
_COMPARE_CACHE = flags.DEFINE_bool("compare_cache", False, "Time the condition caches too.")
_KV_REFRESH = common.define_integers("kv_refresh", "2,4", "Approximate cache refresh periods.")
_BUNDLE = flags.DEFINE_string("bundle", None, "A bundle's J-DiT instead of random weights.")


def model_and_params(size):
  """(J-DiT config, params): a bundle's, or `size` with random weights (None)."""
  if not _BUNDLE.value:
    return workloads.model_config(size, _DTYPE.value), None
  config, params = bundle_lib.load_bundle(_BUNDLE.value)
  config = pipeline.with_defaults(config)
  config.jdit.dtype = _DTYPE.value
  return config.jdit, params["jdit"]


def variants(config):
  """(name, J-DiT config, kv_refresh, make_sampler) of each figure."""
  yield "released", config, 1, flow.make_guided_sampler
  if not _COMPARE_CACHE.value:
    return
  independent = config.copy_and_resolve_references()
  independent.independent_condition = True
  yield "exact_cache", independent, 1, cached_sampling.make_exact_sampler
  for k in _KV_REFRESH.value:
    make = lambda model, k=k: cached_sampling.make_approximate_sampler(model, k)
    yield f"kv_refresh_{k}", config, k, make


def bench(size, pairs):
  base, params = model_and_params(size)
  tokens_per_frame = (_RESOLUTION.value // workloads.VAE_FACTOR // base.patch_size) ** 2
  figures = list(variants(base))
  works = [
    workloads.sampling(config, pairs, _RESOLUTION.value, _NUM_STEPS.value, make, params)
    for _, config, _, make in figures
  ]
  # Interleaved, best of `repeats`: the ratios hold on a loaded machine.
  seconds, samples = workloads.interleaved([w.run for w in works], _REPEATS.value)
  reference = np.asarray(samples[0], np.float64)
  for (name, config, kv_refresh, _), work, s, x in zip(figures, works, seconds, samples):
    figure = {
      "figure": "guided_sampling_latency",
      "variant": name,
      "size": _BUNDLE.value or size,
      "pairs": pairs,
      "independent_condition": config.get("independent_condition", False),
      "kv_refresh": kv_refresh,
      "resolution": _RESOLUTION.value,
      "dtype": _DTYPE.value,
      "grid_points": _NUM_STEPS.value,
      "attention_impl": config.attention_impl,
      "tokens_cond_pass": (2 * pairs + 2) * tokens_per_frame,
      "tokens_null_pass": 3 * tokens_per_frame,
      "seconds_per_example": s,
      "compile_seconds": work.compile_seconds,
      "backend": jax.default_backend(),
    }
    if name != "released":
      figure["speedup"] = seconds[0] / s
    if kv_refresh > 1:
      error = np.linalg.norm(np.asarray(x, np.float64) - reference) / np.linalg.norm(reference)
      figure["rel_error"] = float(error)
    common.print_figure(figure)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  for size in [_BUNDLE.value] if _BUNDLE.value else _SIZES.value:
    for pairs in _PAIRS.value:
      bench(size, pairs)


if __name__ == "__main__":
  app.run(main)
