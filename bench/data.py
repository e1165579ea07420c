"""Input pipeline throughput: in-context examples per second at 256 px with 4 pairs.

  python bench/data.py [--workers=0] [--batches=20] [--source=photos]

Source: by default the photographs shipped inside scikit-image, decoded on every read;
tasks: the photometric image tasks (they need no annotations), equally weighted.
Prints one JSON line.
"""

import argparse
import json
import os
import time

from lavin_jax.data import pipeline
from lavin_jax.data import specs
from lavin_jax.configs import data as data_configs

TASKS = ('colorization', 'inpainting', 'canny_edges', 'de_motion_blur', 'de_glass_blur',
         'de_raining')


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workers', type=int, default=0)
  parser.add_argument('--batches', type=int, default=20)
  parser.add_argument('--batch_size', type=int, default=8)
  parser.add_argument('--source', default='photos', help='a `specs.get_source` spec')
  args = parser.parse_args()

  source = specs.get_source(args.source)
  config = data_configs.pipeline('image')
  config.resolution = 256
  config.k_min = config.k_max = 4
  config.batch_size = args.batch_size
  config.worker_count = args.workers
  for name in config.task_weights:
    config.task_weights[name] = float(name in TASKS)

  iterator = iter(pipeline.make_pipeline(config, source, 0, 1))
  next(iterator)  # Start-up (worker processes, thread pool) is not counted.
  start = time.perf_counter()
  for _ in range(args.batches):
    next(iterator)
  seconds = time.perf_counter() - start
  if args.workers:
    iterator.close()
  print(json.dumps({
      'figure': 'data_examples_per_second',
      'value': round(args.batches * args.batch_size / seconds, 2),
      'resolution': 256, 'pairs': 4, 'batch_size': args.batch_size,
      'workers': args.workers, 'source': args.source, 'read_threads': config.read_threads,
      'cpus': os.cpu_count(), 'tasks': list(TASKS),
  }))


if __name__ == '__main__':
  main()
