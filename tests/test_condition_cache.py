"""J-DiT's independent condition: its attention structure token by token, and its cache."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lavin_jax import configs
from lavin_jax import flow
from lavin_jax.configs import train_dit
from lavin_jax.inference import cached_sampling
from lavin_jax.models import jdit
from lavin_jax.train import dit

T = 1  # latent frames of a clip
SIDE = 4  # latent side: 2 x 2 tokens per frame
TOKENS = (SIDE // 2) ** 2


def _model(independent=True, scan_layers=True):
  c = configs.jdit("tiny")
  c.update(dtype="float32", scan_layers=scan_layers, remat_policy="none")
  c.independent_condition = independent
  model = jdit.JDiT(c)
  x = jnp.zeros((1, T, SIDE, SIDE, 16))
  shapes = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), x, jnp.zeros(1), x)["params"])
  rng = np.random.default_rng(0)  # larger than init: zero-init modulations would hide paths
  return model, jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.05, s.shape), s.dtype), shapes)


def _latents(seed, frames, batch=2):
  shape = (batch, frames, SIDE, SIDE, 16)
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _apply(model, params, *args, **kwargs):
  return model.apply({"params": params}, *args, **kwargs)


@pytest.fixture(scope="module")
def independent():
  return _model()


def test_condition_tokens_never_see_the_target_nor_the_query(independent):
  model, params = independent
  pairs, query, x = _latents(0, 4 * T), _latents(1, T), _latents(2, T)
  t = jnp.array([0.2, 0.7])
  cond = jnp.concatenate([pairs, query], axis=1)
  v, cache = _apply(model, params, x, t, cond, emit_kv=True)
  # Another target and time: every condition token's keys and values in every layer stay.
  v2, cache2 = _apply(model, params, _latents(3, T), 1 - t, cond, emit_kv=True)
  assert np.abs(v2 - v).max() > 1e-2
  for a, b in zip(cache.kv, cache2.kv):
    np.testing.assert_array_equal(a, b)
  # Another query: the context tokens stay, the query's tokens and the target change.
  v3, cache3 = _apply(
    model, params, x, t, jnp.concatenate([pairs, _latents(4, T)], 1), emit_kv=True
  )
  context = 4 * T * TOKENS
  for a, b in zip(cache.kv, cache3.kv):
    np.testing.assert_array_equal(a[:, :, :context], b[:, :, :context])
    assert np.abs(a[:, :, context:] - b[:, :, context:]).max() > 1e-3
  assert np.abs(v3 - v).max() > 1e-2
  # One token of the first pair changed: the target sees it, and so does every token of
  # the context and the query (they attend within the condition).
  pairs4 = pairs.at[:, 0, 0, 0].add(1.0)
  v4, cache4 = _apply(model, params, x, t, jnp.concatenate([pairs4, query], 1), emit_kv=True)
  assert np.abs(v4 - v).max() > 1e-3
  changed = np.abs(cache4.kv[0][-1] - cache.kv[0][-1]).max(axis=(2, 3))  # last layer's keys
  assert (changed > 0).all()


def test_the_released_layout_is_unchanged_by_default():
  model, params = _model(independent=False)
  pairs, query, x = _latents(0, 2 * T), _latents(1, T), _latents(2, T)
  cond = jnp.concatenate([pairs, query], axis=1)
  t = jnp.array([0.3, 0.6])
  _, cache = _apply(model, params, x, t, cond, emit_kv=True)
  _, cache2 = _apply(model, params, _latents(3, T), t, cond, emit_kv=True)
  assert np.abs(cache.kv[0][-1] - cache2.kv[0][-1]).max() > 1e-3  # the condition sees x
  with pytest.raises(ValueError, match="independent_condition"):
    _apply(model, params, None, None, cond)


@pytest.mark.parametrize("scan_layers", [True, False])
def test_cached_chunks_equal_the_full_forward(scan_layers):
  model, params = _model(scan_layers=scan_layers)
  pairs, query, x = _latents(5, 4 * T), _latents(6, T), _latents(7, T)
  mask = jnp.array([[True, True, False, False, True], [True] * 5])  # padding frames
  cond = jnp.concatenate([pairs, query], axis=1)
  t = jnp.array([0.1, 0.9])
  want, full_cache = _apply(model, params, x, t, cond, mask, emit_kv=True)
  cache = _apply(model, params, None, None, pairs, mask[:, :-1])  # the context, once
  cache = _apply(model, params, None, None, query, prefix=cache)  # then the query
  got = _apply(model, params, x, t, None, prefix=cache)  # every step: the target alone
  np.testing.assert_allclose(got, want, atol=1e-5)
  for a, b in zip(cache.kv, full_cache.kv):
    np.testing.assert_allclose(a, b, atol=1e-5)
  np.testing.assert_array_equal(cache.frames, [3, 5])


def test_cached_sampling_equals_uncached_sampling(independent):
  model, params = independent
  cond, noise = _latents(8, 5 * T), _latents(9, T)
  args = (params, noise, cond, jdit.null_condition(cond[:, -T:]), flow.time_grid(6), 1.5)
  for solver in ("euler", "heun"):
    want = flow.make_guided_sampler(model, solver)(*args)
    got = cached_sampling.make_exact_sampler(model, solver)(*args)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_approximate_cache_of_the_released_layout():
  model, params = _model(independent=False)
  cond, noise = _latents(10, 5 * T), _latents(11, T)
  args = (params, noise, cond, jdit.null_condition(cond[:, -T:]), flow.time_grid(7), 1.5)
  exact = flow.make_guided_sampler(model)(*args)
  # Refreshed at every step it is the released sampler; every 3rd step, an approximation.
  np.testing.assert_allclose(
    cached_sampling.make_approximate_sampler(model, 1)(*args), exact, atol=1e-5
  )
  approx = cached_sampling.make_approximate_sampler(model, 3)(*args)
  assert np.isfinite(approx).all() and 1e-4 < np.abs(approx - exact).max() < np.abs(exact).max()


def test_the_trainer_trains_it_unchanged(independent):
  model, params = independent
  latents = {k: _latents(i, T) for i, k in enumerate(("query", "target"))}
  for i, k in enumerate(("context_inputs", "context_targets")):
    latents[k] = _latents(20 + i, 3 * T)[:, :, None]  # (B, K=3, T, h, w, C)
  flow_config = train_dit.get_config("tiny").flow
  flow_config.uncond_ratio = 0.5
  inputs = dit.sample_training_inputs(latents, jnp.array([1, 3]), jax.random.key(0), flow_config)
  grads = jax.grad(lambda p: dit.velocity_loss(model, p, *inputs, 0.0))(params)
  norms = {k: float(optax.tree.norm(g)) for k, g in grads.items()}
  assert all(np.isfinite(n) for n in norms.values())
  assert norms["cond_embedder"] > 0 and norms["prompt_embed"] > 0
