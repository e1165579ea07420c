"""Input pipeline: throughput, and the share of J-DiT tokens that are padding.

  python bench/data.py [--workers=0] [--batches=20] [--source=photos] [--padding_batches=50]

Source: by default the photographs shipped inside scikit-image, decoded on every read;
tasks: the photometric image tasks (they need no annotations), equally weighted.
Figures, one JSON line each:
  data_examples_per_second  in-context examples per second at 256 px with 4 pairs
  padding_fraction          padded context tokens over all J-DiT tokens of episodes of
                            K uniform in 1..8: one K per batch (the default), buckets
                            (2, 4, 6, 8), every episode padded to 8; expected, and
                            measured over --padding_batches batches of the pipeline
                            (32 px)
"""

import os
import time

from absl import app
from absl import flags
import common

from lavin_jax.configs import data as data_configs
from lavin_jax.data import buckets
from lavin_jax.data import pipeline
from lavin_jax.data import specs

TASKS = (
  "colorization",
  "inpainting",
  "canny_edges",
  "de_motion_blur",
  "de_glass_blur",
  "de_raining",
)

_WORKERS = flags.DEFINE_integer("workers", 0, "Pipeline worker processes.")
_BATCHES = flags.DEFINE_integer("batches", 20, "Batches timed after the first.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Examples per batch.")
_SOURCE = flags.DEFINE_string("source", "photos", "A `specs.get_source` spec.")
_PADDING_BATCHES = flags.DEFINE_integer(
  "padding_batches", 50, "Batches the padding is measured on."
)


def _config():
  config = data_configs.pipeline("image")
  config.batch_size = _BATCH_SIZE.value
  config.worker_count = _WORKERS.value
  for name in config.task_weights:
    config.task_weights[name] = float(name in TASKS)
  return config


def padding_figures(source):
  """The padding of three bucket settings, expected and measured."""
  settings = (("one_k_per_batch", ()), ("buckets_2_4_6_8", (2, 4, 6)), ("padded_to_k_max", (8,)))
  for name, k_buckets in settings:
    config = _config()
    config.resolution, config.k_min, config.k_max, config.k_buckets = 32, 1, 8, k_buckets
    iterator = iter(pipeline.make_pipeline(config, source, 0, 1))
    batches = [next(iterator) for _ in range(_PADDING_BATCHES.value)]
    common.print_figure(
      {
        "figure": "padding_fraction",
        "value": round(buckets.padding_fraction(config), 4),
        "measured": round(buckets.measured_padding_fraction(batches), 4),
        "buckets": name,
        "bounds": list(buckets.bounds(config)),
        "k_range": [config.k_min, config.k_max],
        "batches": len(batches),
        "batch_size": config.batch_size,
      }
    )


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  source = specs.get_source(_SOURCE.value)
  config = _config()
  config.resolution = 256
  config.k_min = config.k_max = 4

  iterator = iter(pipeline.make_pipeline(config, source, 0, 1))
  next(iterator)  # Start-up (worker processes, thread pool) is not counted.
  start = time.perf_counter()
  for _ in range(_BATCHES.value):
    next(iterator)
  seconds = time.perf_counter() - start
  if _WORKERS.value:
    iterator.close()
  common.print_figure(
    {
      "figure": "data_examples_per_second",
      "value": round(_BATCHES.value * _BATCH_SIZE.value / seconds, 2),
      "resolution": 256,
      "pairs": 4,
      "batch_size": _BATCH_SIZE.value,
      "workers": _WORKERS.value,
      "source": _SOURCE.value,
      "read_threads": config.read_threads,
      "cpus": os.cpu_count(),
      "tasks": list(TASKS),
    }
  )
  padding_figures(source)


if __name__ == "__main__":
  app.run(main)
