"""Time one J-DiT computation under several configs, interleaved: ratios from one run.

  python bench/compare.py --what=forward --size=0.1b \
      --variants="dtype=float32" --variants="dtype=bfloat16" [--repeats=3]

Each --variants is ';'-separated J-DiT config overrides (empty: the size's defaults).
--what is forward, sample (20-point guided Euler) or train (one AdamW step); see
bench/workloads.py. Every variant is compiled and run once, then the variants take turns,
`repeats` rounds, so that each sees the same machine load (shared CPUs); the figure is
the best round. One JSON line per variant, with its speed relative to the first.
"""

from absl import app
from absl import flags
import common
import jax
import workloads

from lavin_jax import configs

_WHAT = flags.DEFINE_enum(
  "what", "forward", ["forward", "train", "sample"], "The computation to time."
)
_SIZE = flags.DEFINE_enum("size", "0.1b", configs.JDIT_SIZES, "J-DiT size.")
_VARIANTS = flags.DEFINE_multi_string(
  "variants", [""], "';'-separated J-DiT config overrides, one flag per variant."
)
_BATCH = flags.DEFINE_integer("batch", 1, "Examples per forward pass or train step.")
_PAIRS = flags.DEFINE_integer("pairs", 4, "Context pairs per example.")
_RESOLUTION = flags.DEFINE_integer("resolution", 256, "Image side in pixels.")
_NUM_STEPS = flags.DEFINE_integer("num_steps", 20, "Sampler time points (--what=sample).")
_DTYPE = flags.DEFINE_string("dtype", "float32", "J-DiT compute dtype unless overridden.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Rounds after the warm-up.")


def build(overrides) -> workloads.Workload:
  config = workloads.model_config(_SIZE.value, _DTYPE.value, overrides)
  if _WHAT.value == "forward":
    return workloads.forward(config, _BATCH.value, _PAIRS.value, _RESOLUTION.value)
  if _WHAT.value == "sample":
    return workloads.sampling(config, _PAIRS.value, _RESOLUTION.value, _NUM_STEPS.value)
  return workloads.train_step(_SIZE.value, config, _BATCH.value, _PAIRS.value, _RESOLUTION.value)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  variants = [[o for o in v.split(";") if o] for v in _VARIANTS.value]
  works = [build(v) for v in variants]
  for work in works:
    jax.block_until_ready(work.run())
  seconds, _ = workloads.interleaved([w.run for w in works], _REPEATS.value)
  for overrides, work, best in zip(variants, works, seconds):
    common.print_figure(
      {
        "figure": "compare",
        "what": _WHAT.value,
        "size": _SIZE.value,
        "overrides": overrides,
        "dtype": work.config.dtype,
        "attention_impl": work.config.attention_impl,
        "remat_policy": work.config.remat_policy,
        "params_m": round(work.params / 1e6, 2),
        "batch": _BATCH.value,
        "pairs": _PAIRS.value,
        "resolution": _RESOLUTION.value,
        "backend": jax.default_backend(),
        "seconds": round(best, 4),
        "speed_vs_first": round(seconds[0] / best, 3),
        "tflops_per_sec": round(work.flops / best / 1e12, 4),
        "compile_seconds": round(work.compile_seconds, 2),
      }
    )


if __name__ == "__main__":
  app.run(main)
