"""The released sampler settings (lavin_jax.inference.pipeline, launch/sample.py)."""

import ml_collections

SAMPLERS = ("euler", "heun")
POSTERIORS = ("sample", "mean")


def released() -> ml_collections.ConfigDict:
  """20 time-grid points, Euler, guidance 1.5, a posterior sample of every context clip."""
  c = ml_collections.ConfigDict()
  c.num_steps = 20  # time-grid points (released `--timesteps`); steps = points - 1
  c.cfg_scale = 1.5
  c.sampler = "euler"  # one of SAMPLERS
  c.posterior = "sample"  # one of POSTERIORS: the released inference samples
  return c
