"""Training side of the rectified flow: time sampling, interpolation, target, loss.

Time convention: see `lavin_jax.flow` (t = 0 noise, t = 1 data).
"""

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections

TIME_SAMPLINGS = ("logit_normal", "uniform")


def _check_time_config(config: ml_collections.ConfigDict) -> None:
  if config.time_sampling not in TIME_SAMPLINGS:
    raise ValueError(
      f"Unknown time_sampling {config.time_sampling!r}; choose one of {TIME_SAMPLINGS}."
    )
  if not config.time_shift > 0:
    raise ValueError(f"time_shift must be > 0, got {config.time_shift}.")
  if config.time_sampling == "logit_normal" and not config.logit_std > 0:
    raise ValueError(f"logit_std must be > 0, got {config.logit_std}.")


def shift_time(t: jax.Array, shift: float) -> jax.Array:
  """Time shift t / (t + s (1 - t)); s = 1 is the identity, s > 1 favours noise."""
  return t / (t + shift * (1.0 - t))


def sample_time(
  key: jax.Array, shape: Sequence[int], config: ml_collections.ConfigDict
) -> jax.Array:
  """Draws training times in [0, 1] (float32) as `config` says (lavin_jax.configs.flow)."""
  _check_time_config(config)
  if config.time_sampling == "logit_normal":
    z = config.logit_mean + config.logit_std * jax.random.normal(key, shape, jnp.float32)
    t = jax.nn.sigmoid(z)
  else:
    t = jax.random.uniform(key, shape, jnp.float32)
  return shift_time(t, config.time_shift)


def _expand_time(t: jax.Array, x: jax.Array) -> jax.Array:
  """(B,) or scalar times -> broadcastable against x (B, ...)."""
  t = jnp.asarray(t, jnp.float32)
  return t.reshape(t.shape + (1,) * (x.ndim - t.ndim))


def interpolate(x_data: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
  """x_t = t * x_data + (1 - t) * noise, with t (B,) or a scalar."""
  t = _expand_time(t, x_data)
  return (t * x_data + (1.0 - t) * noise).astype(x_data.dtype)


def velocity_target(x_data: jax.Array, noise: jax.Array) -> jax.Array:
  """u = x_data - noise, the time derivative of `interpolate`."""
  return x_data - noise


def flow_loss(
  v: jax.Array, u: jax.Array, l1_weight: float = 0.1, mask: Optional[jax.Array] = None
) -> jax.Array:
  """Per-example MSE(v, u) + l1_weight * L1(v, u), averaged over the batch.

  Args:
    v: predicted velocity (B, ...).
    u: target velocity, same shape.
    l1_weight: weight of the L1 term (released 0.1; 0 gives plain MSE).
    mask: optional array broadcastable to v, nonzero where an element is valid;
      each example's means run over its valid elements only (an example without
      valid elements contributes 0).

  Returns:
    The scalar float32 loss.
  """
  if v.shape != u.shape:
    raise ValueError(f"v and u must have the same shape, got {v.shape} and {u.shape}.")
  err = v.astype(jnp.float32) - u.astype(jnp.float32)
  axes = tuple(range(1, err.ndim))
  if mask is None:
    mse = jnp.mean(jnp.square(err), axis=axes)
    l1 = jnp.mean(jnp.abs(err), axis=axes)
  else:
    try:
      mask = jnp.broadcast_to(jnp.asarray(mask, jnp.float32), err.shape)
    except ValueError as e:
      raise ValueError(f"mask of shape {jnp.shape(mask)} does not broadcast to v {v.shape}.") from e
    count = jnp.maximum(jnp.sum(mask, axis=axes), 1.0)
    mse = jnp.sum(mask * jnp.square(err), axis=axes) / count
    l1 = jnp.sum(mask * jnp.abs(err), axis=axes) / count
  return jnp.mean(mse + l1_weight * l1)
