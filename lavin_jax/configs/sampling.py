"""The released sampler settings and the numbers of inference (lavin_jax.inference)."""

import ml_collections

SAMPLERS = ("euler", "heun")
POSTERIORS = ("sample", "mean")
# How a template folder's pairs are chosen for a query (lavin_jax.inference.selection).
SELECTIONS = ("random", "nearest", "fixed")
VIDEO_FORMATS = ("gif", "mp4")

# Parameters taking more than this share of one device's memory are sharded over all
# local devices (lavin_jax.inference.placement); the rest is left to activations.
ONE_DEVICE_FRACTION = 0.5
# Nearest-context features: each clip's posterior mean averaged over a grid of
# SELECT_GRID x SELECT_GRID cells per latent frame (bench/context_selection.py).
SELECT_GRID = 4
VIDEO_FPS = 8  # frames per second of the GIF / MP4 files launch/sample.py writes


def released() -> ml_collections.ConfigDict:
  """20 time-grid points, Euler, guidance 1.5, a posterior sample of every context clip."""
  c = ml_collections.ConfigDict()
  c.num_steps = 20  # time-grid points (released `--timesteps`); steps = points - 1
  c.cfg_scale = 1.5
  c.sampler = "euler"  # one of SAMPLERS
  c.posterior = "sample"  # one of POSTERIORS: the released inference samples
  # k > 1: the condition's keys and values are recomputed every k-th Euler step only, an
  # approximation for released-layout models (lavin_jax.inference.cached_sampling).
  c.kv_refresh = 1
  return c
