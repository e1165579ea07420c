"""Inference pipeline: bundle round trip, the in-context layout, determinism, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny_model

from lavin_jax import flow
from lavin_jax.inference import pipeline as pipeline_lib
from lavin_jax.inference import selection
from lavin_jax.io import bundle
from lavin_jax.models import stvae

SIZE = 32  # pixels; tiny ST-VAE -> 4x4 latents -> 2x2 J-DiT tokens


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
  config = tiny_model.tiny_model_config()
  config.jdit.scan_layers = False
  path = tmp_path_factory.mktemp("bundle") / "tiny"
  bundle.save_bundle(path, config, *tiny_model.tiny_model_params(config))
  return path


@pytest.fixture(scope="module")
def pipe(bundle_dir):
  return pipeline_lib.Pipeline.from_bundle(bundle_dir)


def _images(seed, shape):
  return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def _manual_prediction(pipe, ctx_in, ctx_tgt, query, num_steps, cfg_scale):
  """The released recipe written out step by step, one query, posterior mean."""
  vae, params = pipe.vae, pipe.stvae_params

  def encode(image):  # (H, W, 3) -> (1, h, w, 16)
    mean, _ = vae.apply({"params": params}, image[None, None], method="encode")
    return stvae.normalize_latents(mean, pipe.config.stvae)[0]

  frames = []
  for x, y in zip(ctx_in, ctx_tgt):
    frames += [encode(x[0]), encode(y[0])]
  frames.append(encode(query[0]))
  cond = jnp.concatenate(frames)[None]
  cond_null = jnp.concatenate([jnp.zeros_like(frames[-1]), frames[-1]])[None]
  _, key_noise = jax.random.split(jax.random.key(0))
  x = jax.random.normal(key_noise, (1,) + frames[-1].shape, jnp.float32)
  grid = flow.time_grid(num_steps)
  for t0, t1 in zip(grid[:-1], grid[1:]):
    v = pipe.jdit.apply(
      {"params": pipe.jdit_params},
      x,
      jnp.full((1,), t0),
      cond,
      cond_null,
      cfg_scale,
      method="forward_with_cfg",
    )
    x = x + (t1 - t0) * v
  z = stvae.denormalize_latents(x, pipe.config.stvae)
  return np.clip(np.asarray(vae.apply({"params": params}, z, method="decode")), -1, 1)[0]


def test_matches_the_recipe_written_out(pipe):
  ctx_in, ctx_tgt = _images(0, (2, 1, SIZE, SIZE, 3)), _images(1, (2, 1, SIZE, SIZE, 3))
  query = _images(2, (1, SIZE, SIZE, 3))
  got = pipe(ctx_in, ctx_tgt, query, seed=0, num_steps=5, cfg_scale=1.5, posterior="mean")
  want = _manual_prediction(pipe, ctx_in, ctx_tgt, query, 5, 1.5)
  assert got.shape == (1, 1, SIZE, SIZE, 3)
  np.testing.assert_allclose(got[0], want, atol=2e-5)


def test_seeded_and_batched(pipe):
  ctx_in, ctx_tgt = _images(3, (2, 2, 1, SIZE, SIZE, 3)), _images(4, (2, 2, 1, SIZE, SIZE, 3))
  query = _images(5, (2, 1, SIZE, SIZE, 3))
  a = pipe(ctx_in, ctx_tgt, query, seed=7, num_steps=4)
  b = pipe(ctx_in, ctx_tgt, query, seed=7, num_steps=4)
  c = pipe(ctx_in, ctx_tgt, query, seed=8, num_steps=4)
  assert a.shape == (2, 1, SIZE, SIZE, 3) and np.all(np.abs(a) <= 1)
  np.testing.assert_array_equal(a, b)
  assert np.abs(a - c).max() > 1e-3
  heun = pipe(ctx_in, ctx_tgt, query, seed=7, num_steps=4, sampler="heun")
  assert np.isfinite(heun).all() and np.abs(heun - a).max() > 1e-4


@pytest.mark.parametrize(
  "change, message",
  [
    (lambda i, t, q: (i, t, q[:, :, :24]), "same frames and size"),
    (
      lambda i, t, q: (i[:, :, :, :24, :24], t[:, :, :, :24, :24], q[:, :, :24, :24]),
      "multiples of 16",
    ),
    (lambda i, t, q: (i, t[:, :1], q), "same shape"),
    (lambda i, t, q: (i[:, :0], t[:, :0], q), "at least one context pair"),
    (lambda i, t, q: (i[..., :1], t[..., :1], q[..., :1]), "RGB"),
    (lambda i, t, q: (np.repeat(i, 2, 2), np.repeat(t, 2, 2), np.repeat(q, 2, 1)), r"1 \+ 4k"),
  ],
)
def test_bad_input_is_a_clear_error(pipe, change, message):
  inputs = change(
    _images(0, (1, 2, 1, SIZE, SIZE, 3)),
    _images(1, (1, 2, 1, SIZE, SIZE, 3)),
    _images(2, (1, 1, SIZE, SIZE, 3)),
  )
  with pytest.raises(ValueError, match=message):
    pipe(*inputs)


def test_bad_options_and_missing_bundle(pipe, tmp_path):
  args = (
    _images(0, (1, 1, SIZE, SIZE, 3)),
    _images(1, (1, 1, SIZE, SIZE, 3)),
    _images(2, (1, SIZE, SIZE, 3)),
  )
  with pytest.raises(ValueError, match="sampler"):
    pipe(*args, sampler="rk4")
  with pytest.raises(ValueError, match="posterior"):
    pipe(*args, posterior="mode")
  with pytest.raises(ValueError, match="num_steps"):
    pipe(*args, num_steps=1)
  with pytest.raises(FileNotFoundError, match="bundle"):
    pipeline_lib.Pipeline.from_bundle(tmp_path / "nothing")


def test_a_batch_equals_its_queries_one_at_a_time(pipe):
  ctx_in, ctx_tgt = _images(6, (3, 2, 1, SIZE, SIZE, 3)), _images(7, (3, 2, 1, SIZE, SIZE, 3))
  query = _images(8, (3, 1, SIZE, SIZE, 3))
  batched = pipe(ctx_in, ctx_tgt, query, seed=11, num_steps=3)
  for i in range(3):
    alone = pipe(ctx_in[i : i + 1], ctx_tgt[i : i + 1], query[i : i + 1], seed=11 + i, num_steps=3)
    np.testing.assert_allclose(batched[i], alone[0], atol=1e-5)
  # Seeds given per example; a context shared by all queries is encoded once.
  shared = pipe(ctx_in[0], ctx_tgt[0], query, seed=[11, 3, 5], num_steps=3)
  np.testing.assert_allclose(shared[0], batched[0], atol=1e-5)
  with pytest.raises(ValueError, match="seeds"):
    pipe(ctx_in, ctx_tgt, query, seed=[1, 2])


def test_parameters_stay_on_the_device(pipe):
  leaves = jax.tree.leaves((pipe.jdit_params, pipe.stvae_params))
  assert all(isinstance(x, jax.Array) for x in leaves)
  assert {d for x in leaves for d in x.devices()} == set(pipe.mesh.devices.flat)
  before = [id(x) for x in leaves]
  args = (
    _images(0, (1, 1, SIZE, SIZE, 3)),
    _images(1, (1, 1, SIZE, SIZE, 3)),
    _images(2, (1, SIZE, SIZE, 3)),
  )
  pipe(*args, num_steps=3, seed=0)
  pipe(*args, num_steps=3, seed=1)
  assert [id(x) for x in jax.tree.leaves((pipe.jdit_params, pipe.stvae_params))] == before
  assert pipe._sample._cache_size() >= 1  # compiled per shape, not per call


def test_selection_draws_and_nearest():
  rng = np.random.default_rng(4)
  picks = selection.random_picks(np.random.default_rng(3), 5, 2, 3)
  released = np.random.default_rng(3)
  np.testing.assert_array_equal(picks, [released.integers(0, 5, size=2) for _ in range(3)])
  pool = rng.normal(size=(6, 1, 8, 8, 16))
  assert selection.features(pool, grid=4).shape == (6, 4 * 4 * 16)
  assert selection.features(pool[:, :, :3, :5], grid=4).shape == (6, 4 * 4 * 16)
  np.testing.assert_allclose(selection.features(pool, grid=1)[:, :16], pool.mean(axis=(1, 2, 3)))
  features = selection.features(pool)
  chosen = selection.nearest(features[[4, 1]] + 1e-3, features, 3)
  assert chosen.shape == (2, 3) and list(chosen[:, -1]) == [4, 1]  # the nearest is last
  assert all(len(set(row)) == 3 for row in chosen)
  with pytest.raises(ValueError, match="distinct pairs"):
    selection.nearest(features[:1], features, 7)


def test_independent_condition_samples_on_its_cache():
  config = tiny_model.tiny_model_config()
  config.jdit.independent_condition = True
  pipe = pipeline_lib.Pipeline(config, *tiny_model.tiny_model_params(config))
  args = (
    _images(0, (1, 2, 1, SIZE, SIZE, 3)),
    _images(1, (1, 2, 1, SIZE, SIZE, 3)),
    _images(2, (1, 1, SIZE, SIZE, 3)),
  )
  prediction = pipe(*args, num_steps=3)  # cached == uncached: test_condition_cache.py
  assert prediction.shape == (1, 1, SIZE, SIZE, 3) and np.isfinite(prediction).all()
  with pytest.raises(ValueError, match="exact cache"):
    pipe(*args, kv_refresh=2)


def test_approximate_condition_cache(pipe):
  args = (
    _images(0, (1, 1, SIZE, SIZE, 3)),
    _images(1, (1, 1, SIZE, SIZE, 3)),
    _images(2, (1, SIZE, SIZE, 3)),
  )
  exact = pipe(*args, num_steps=5)
  approx = pipe(*args, num_steps=5, kv_refresh=2)
  assert np.isfinite(approx).all() and 0 < np.abs(approx - exact).max() < 0.5
  with pytest.raises(ValueError, match="kv_refresh"):
    pipe(*args, kv_refresh=2, sampler="heun")
