"""Rectified-flow training settings with the released values (lavin_jax.flow)."""

import ml_collections


def training() -> ml_collections.ConfigDict:
  """Time sampling, loss weights and context dropout of J-DiT training."""
  c = ml_collections.ConfigDict()
  # Training times: sigmoid(N(logit_mean, logit_std^2)) or U[0, 1), then the shift
  # t -> t / (t + s (1 - t)); s = 1 (released) leaves t unchanged, s > 1 moves
  # mass towards noise.
  c.time_sampling = "logit_normal"  # logit_normal | uniform
  c.logit_mean = 0.0
  c.logit_std = 1.0
  c.time_shift = 1.0
  c.l1_weight = 0.1  # loss = MSE + l1_weight * L1; 0 gives plain MSE
  c.uncond_ratio = 0.1  # probability of training on the null condition
  return c
