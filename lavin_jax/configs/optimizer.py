"""The optimizer settings shared by every trainer (lavin_jax.train.state)."""

import ml_collections


def adamw(lr: float = 1e-4, weight_decay: float = 0.01) -> ml_collections.ConfigDict:
  """Global-norm clipping then AdamW (betas 0.9, 0.95), constant lr, no warmup (paper)."""
  c = ml_collections.ConfigDict()
  c.lr = lr
  c.b1 = 0.9
  c.b2 = 0.95
  c.eps = 1e-8
  c.weight_decay = weight_decay
  c.schedule = "constant"  # constant | cosine
  c.warmup_steps = 0
  c.decay_steps = 100_000  # cosine only: where the decay ends (job configs tie it to steps)
  c.end_lr_factor = 0.0  # cosine only
  c.clip_norm = 1.0
  return c
