"""Guided samplers that compute the condition's keys and values once (`jdit.ConditionCache`).

Both take the arguments of `flow.make_guided_sampler`'s sampler,
`sample_fn(params, noise, cond, cond_null, grid, cfg_scale)`, and run in one jit.

exact: for a J-DiT with `independent_condition`, whose condition ignores the target and
  the time. The context's cache, then the query's on top of it, are computed once per
  sample for the condition and for the null condition; every step then runs only the
  target tokens against them. Equal to the uncached sampler up to float rounding. The
  context's cache does not depend on the query either: `sample_on_contexts` takes
  contexts computed once (a template's pairs, `inference.pipeline.SharedContext`) and
  computes only the queries' caches on top of them.
approximate: for the released weights, whose condition does change with the target and
  the time. Every `refresh_every`-th Euler step runs the whole joint sequence and keeps
  the condition's keys and values; the steps between run the target tokens against
  those. Off unless asked for (refresh_every = 1 is the exact released sampler).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from lavin_jax import flow
from lavin_jax.models import jdit


def split_condition(model: nn.Module, params, cond, query_frames: int):
  """cond = [context; query] -> (the context's ConditionCache, the query's latents).

  The context (B, Tc - query_frames, h, w, C) is computed alone; an independent-condition
  J-DiT only.
  """
  context = model.apply({"params": params}, None, None, cond[:, :-query_frames])
  return context, cond[:, -query_frames:]


def broadcast_cache(cache: jdit.ConditionCache, batch: int) -> jdit.ConditionCache:
  """The cache of its first example, repeated for `batch` examples."""
  kv = tuple(jnp.broadcast_to(x[:, :1], (x.shape[0], batch) + x.shape[2:]) for x in cache.kv)
  mask = cache.key_mask
  if mask is not None:
    mask = jnp.broadcast_to(mask[:1], (batch,) + mask.shape[1:])
  return jdit.ConditionCache(kv, mask, jnp.broadcast_to(cache.frames[:1], (batch,)))


def sample_on_contexts(model: nn.Module, solver: str, params, noise, conditions, grid, cfg_scale):
  """Guided sampling of an independent-condition J-DiT on cached contexts.

  Args:
    conditions: the condition's and the null condition's (context ConditionCache with B
      examples, query latents (B, Tq, h, w, C)). Each query's cache is computed on top of
      its context's once; every step then runs the target alone against them.
    noise: (B, Tx, h, w, C), the sample at t = 0.
  """
  apply = functools.partial(model.apply, {"params": params})
  caches = [apply(None, None, query, prefix=context) for context, query in conditions]

  def velocity_fn(x, t):
    v_cond, v_null = (apply(x, t, None, prefix=cache) for cache in caches)
    return v_null + cfg_scale * (v_cond - v_null)

  return flow.sample(velocity_fn, noise, grid, solver)


def make_exact_sampler(model: nn.Module, solver: str = "euler"):
  """The guided sampler of an independent-condition J-DiT, on cached conditions."""

  @jax.jit
  def sample_fn(params, noise, cond, cond_null, grid, cfg_scale):
    conditions = [split_condition(model, params, c, noise.shape[1]) for c in (cond, cond_null)]
    return sample_on_contexts(model, solver, params, noise, conditions, grid, cfg_scale)

  return sample_fn


def make_approximate_sampler(model: nn.Module, refresh_every: int):
  """Euler with guidance, the condition's keys and values refreshed every k-th step."""

  @jax.jit
  def sample_fn(params, noise, cond, cond_null, grid, cfg_scale):
    apply = functools.partial(model.apply, {"params": params})

    def joint(x, t, caches):
      del caches
      return [apply(x, t, c, emit_kv=True) for c in (cond, cond_null)]

    def cached(x, t, caches):
      return [(apply(x, t, None, prefix=cache), cache) for cache in caches]

    def step(carry, inputs):
      x, caches = carry
      i, t0, t1 = inputs
      t = jnp.full((x.shape[0],), t0, jnp.float32)
      (v_cond, cache), (v_null, cache_null) = jax.lax.cond(
        i % refresh_every == 0, joint, cached, x, t, caches
      )
      x = x + (t1 - t0) * (v_null + cfg_scale * (v_cond - v_null))
      return (x.astype(noise.dtype), (cache, cache_null)), None

    grid = jnp.asarray(grid, jnp.float32)
    first = jax.eval_shape(joint, noise, grid[:1].repeat(noise.shape[0]), None)
    empty = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), tuple(c for _, c in first))
    steps = (jnp.arange(grid.shape[0] - 1), grid[:-1], grid[1:])
    (x, _), _ = jax.lax.scan(step, (noise, empty), steps)
    return x

  return sample_fn
