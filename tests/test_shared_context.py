"""A template's context computed once (independent_condition) and reused by every query."""

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
import tiny_model

from lavin_jax.configs import sampling
from lavin_jax.inference import loading
from lavin_jax.inference import pipeline as pipeline_lib
from lavin_jax.inference import selection
from lavin_jax.inference import templates

SIZE = 32  # pixels; the tiny ST-VAE's latents are 4 x 4, J-DiT's tokens 2 x 2
LATENT = (1, 4, 4, 16)  # (T', h, w, C) of an image
K = 2


def _pipeline(independent: bool) -> pipeline_lib.Pipeline:
  config = tiny_model.tiny_model_config()
  config.jdit.independent_condition = independent
  return pipeline_lib.Pipeline(config, *tiny_model.tiny_model_params(config))


@pytest.fixture(scope="module")
def pipe():
  return _pipeline(independent=True)


def _moments(seed, *batch, shape=LATENT):
  rng = np.random.default_rng(seed)
  mean = rng.normal(size=batch + shape).astype(np.float32)
  logvar = rng.uniform(-3, 0, batch + shape).astype(np.float32)
  return pipeline_lib.Moments(jnp.asarray(mean), jnp.asarray(logvar))


def _posterior_sample(moments, seed):
  """The posterior sample `sample` draws with an example's seed: its first key."""
  key = jax.random.split(jax.random.key(seed))[0]
  noise = np.asarray(jax.random.normal(key, moments.mean.shape, jnp.float32))
  return np.asarray(moments.mean) + np.exp(0.5 * np.asarray(moments.logvar)) * noise


def _certain(z):
  """Moments whose posterior sample is z itself (exp(-5000) is 0 in float32)."""
  z = jnp.asarray(z, jnp.float32)
  return pipeline_lib.Moments(z, jnp.full_like(z, -1e4))


def test_shared_context_equals_each_query_on_the_same_context_latents(pipe):
  ctx_in, ctx_tgt, query = _moments(0, K), _moments(1, K), _moments(2, 3)
  seeds = [5, 9, 2]
  shared = pipe.context_cache(ctx_in, ctx_tgt, seed=7)
  got = pipe.sample_on_context(shared, query, seed=seeds, num_steps=4)

  # The per-query exact path, given the latents drawn independently: the pairs' one
  # posterior sample (seed 7, inputs then targets) and each query's from its own seed.
  pairs = _posterior_sample(
    pipeline_lib.Moments(*(jnp.concatenate([i, t]) for i, t in zip(ctx_in, ctx_tgt))), 7
  )
  queries = np.stack(
    [
      _posterior_sample(pipeline_lib.Moments(*(m[b : b + 1] for m in query)), s)[0]
      for b, s in enumerate(seeds)
    ]
  )
  ins, tgts = (_certain(np.broadcast_to(p, (3,) + p.shape)) for p in (pairs[:K], pairs[K:]))
  want = pipe.sample(ins, tgts, _certain(queries), seed=seeds, num_steps=4)
  assert got.shape == (3,) + LATENT
  np.testing.assert_allclose(got, want, atol=1e-5)

  # The context's draw matters: another seed gives other pairs' latents, other answers.
  other = pipe.context_cache(ctx_in, ctx_tgt, seed=8)
  other = pipe.sample_on_context(other, query, seed=seeds, num_steps=4)
  assert np.abs(np.asarray(other) - np.asarray(got)).max() > 1e-3


def test_fixed_picks_are_the_first_random_draw():
  picks = selection.fixed_picks(np.random.default_rng(3), 5, 2, 4)
  first = selection.random_picks(np.random.default_rng(3), 5, 2, 1)
  np.testing.assert_array_equal(picks, np.repeat(first, 4, axis=0))


def _png(path, seed):
  pixels = np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
  Image.fromarray(pixels).save(path)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  """A template of one pair (every query's pairs are then the same, drawn or fixed)."""
  root = tmp_path_factory.mktemp("shared")
  (root / "task").mkdir()
  _png(root / "task" / "a_input.png", 0)
  _png(root / "task" / "a_target.png", 1)
  (root / "queries").mkdir()
  for i in range(5):
    _png(root / "queries" / f"q{i}.png", 10 + i)
  return root


def _predict(model, folders, out, select_context, **settings):
  config = sampling.released()
  config.update(num_steps=3, posterior="mean", **settings)
  return templates.predict_templates(
    model,
    folders / "task",
    folders / "queries",
    out,
    height=SIZE,
    width=SIZE,
    num_prompt=K,
    seed=4,
    sampling=config,
    batch_size=2,
    select_context=select_context,
  )


def _count_calls(monkeypatch, pipe, name):
  calls = []
  function = getattr(pipe, name)
  monkeypatch.setattr(pipe, name, lambda *a, **k: calls.append(1) or function(*a, **k))
  return calls


def test_a_folder_computes_its_context_once(pipe, folders, tmp_path, monkeypatch):
  context = _count_calls(monkeypatch, pipe, "_context")
  shared = _count_calls(monkeypatch, pipe, "_sample_shared")
  per_query = _count_calls(monkeypatch, pipe, "_sample")
  fixed = _predict(loading.LoadedModel(pipe), folders, tmp_path / "fixed", "fixed")
  assert (len(context), len(shared), len(per_query)) == (1, 3, 0)  # 5 queries, 3 batches
  # The same pairs drawn per query on the per-query path: the same pictures (posterior
  # means, so the pairs' latents agree too).
  drawn = _predict(loading.LoadedModel(pipe), folders, tmp_path / "random", "random")
  assert len(context) == 1 and len(per_query) == 3
  assert [p.name for p in fixed] == [p.name for p in drawn] == [f"q{i}.png" for i in range(5)]
  for a, b in zip(fixed, drawn):
    diff = np.abs(np.asarray(Image.open(a), int) - np.asarray(Image.open(b), int))
    assert diff.max() <= 1  # float tolerance, then rounding to uint8


def test_fixed_pairs_of_a_released_layout_model(folders, tmp_path, monkeypatch):
  released = _pipeline(independent=False)
  seen = []

  def sample(ctx_in, ctx_tgt, query, **kwargs):  # records the pairs; the answer is 0
    seen.append(np.asarray(ctx_in.mean))
    return jnp.zeros(query.mean.shape)

  monkeypatch.setattr(released, "sample", sample)
  monkeypatch.setattr(released, "_context", lambda *a, **k: pytest.fail("context cached"))
  written = _predict(loading.LoadedModel(released), folders, tmp_path, "fixed")
  assert len(written) == 5 and len(seen) == 3
  for batch in seen:  # every query's pairs are the first query's
    np.testing.assert_array_equal(batch, np.broadcast_to(seen[0][:1], batch.shape))


def _no_compile(monkeypatch, pipe):
  for name in ("_context", "_sample_shared", "_sample"):
    monkeypatch.setattr(pipe, name, lambda *a, **k: pytest.fail("compiled"))


def test_bad_shared_contexts_fail_before_compiling(pipe, folders, tmp_path, monkeypatch):
  shared = pipe.context_cache(_moments(0, K), _moments(1, K))
  released = _pipeline(independent=False)
  _no_compile(monkeypatch, pipe)
  _no_compile(monkeypatch, released)
  query = _moments(2, 2)
  with pytest.raises(ValueError, match="needs a J-DiT with independent_condition"):
    released.context_cache(_moments(0, K), _moments(1, K))
  with pytest.raises(ValueError, match="needs a J-DiT with independent_condition"):
    released.sample_on_context(shared, query)
  with pytest.raises(ValueError, match="leave kv_refresh at 1"):
    pipe.sample_on_context(shared, query, kv_refresh=2)
  with pytest.raises(ValueError, match="one shape"):
    pipe.context_cache(_moments(0, K), _moments(1, K + 1))
  with pytest.raises(ValueError, match="one shape"):
    pipe.context_cache(_moments(0, 1, K), _moments(1, 1, K))  # a batch of contexts
  for shape in ((1, 8, 8, 16), (2, 4, 4, 16)):  # another size, another frame count
    with pytest.raises(ValueError, match="do not fit the shared context"):
      pipe.sample_on_context(shared, _moments(2, 2, shape=shape))
  monkeypatch.setattr(pipe, "encode", lambda clips: pytest.fail("encoded"))
  with pytest.raises(ValueError, match="leave kv_refresh at 1"):
    _predict(loading.LoadedModel(pipe), folders, tmp_path, "fixed", kv_refresh=2)
