"""Defaults of the in-context data pipeline (lavin_jax.data.pipeline)."""

import ml_collections

from lavin_jax.configs import tasks


def pipeline(media: str = "image") -> ml_collections.ConfigDict:
  """Pipeline settings: every task of `media` ('image' or 'video') with weight 1."""
  c = ml_collections.ConfigDict()
  c.resolution = 256  # Square side in pixels.
  c.batch_size = 8  # Global; each process gets batch_size / process_count.
  c.k_min = 1  # Context pairs per episode, uniform in [k_min, k_max] (released: 1-8).
  c.k_max = 8
  c.task_weights = tasks.weights(media)
  c.random_crop = True  # False: centred square crops.
  c.allow_upscale = False  # False: an example smaller than the resolution is an error.
  c.seed = 0
  c.worker_count = 0  # Worker processes (0: the main process does the work).
  c.worker_buffer_size = 2  # Batches each worker prepares ahead.
  c.read_threads = 2  # Threads per process preparing elements in parallel.
  c.read_buffer_size = 16  # Elements prepared ahead per process.
  c.task = tasks.options()
  return c
