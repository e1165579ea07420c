"""Tiled ST-VAE coding: exact tiling machinery, agreement with untiled coding, switches.

Tolerance (documented in lavin_jax/models/stvae_tiling.py): inputs that fit one tile and
one chunk give exactly the untiled result. Larger inputs differ, because each tile has
its own GroupNorm statistics and borders: on the random-weight test model at 96x48 px with
64 px tiles, the mean |tiled - untiled| is ~0.15 for the encoder mean and ~0.03 for
decoded pixels, against ~0.34 and ~0.28 between the outputs of two unrelated inputs;
with 9-frame chunks of a 17-frame clip, ~0.09 for the first chunk's latents and ~0.01
for decoded pixels (against ~0.22 and ~0.06). The tests bound them at 0.5x (encoder)
and 0.25x (decoder) that distance. Latents of later chunks restart from a first frame
coded as an image: for this untrained encoder they differ as much as unrelated inputs
(tested exactly with per-frame norms instead: the first chunk is then exact).
"""

import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lavin_jax.convert import load_released_stvae
from lavin_jax.models import stvae_tiling

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "stvae"


@pytest.fixture(scope="module")
def model():
  config = ml_collections.ConfigDict(
    dict(block_out_channels=(32, 32, 32, 32), layers_per_block=1, latent_channels=16)
  )
  return load_released_stvae(FIXTURES / "vae_state.pt", config)


def _uniform(key, shape):
  return jax.random.uniform(jax.random.key(key), shape, minval=-1.0, maxval=1.0)


def _pool8(x):
  """A stand-in encoder that tiling cannot change: 8x8 mean pooling, frames 0, 4, 8..."""
  b, t, h, w, c = x.shape
  x = x[:, ::4].reshape(b, (t + 3) // 4, h // 8, 8, w // 8, 8, c)
  return x.mean(axis=(3, 5))


def _unpool8(z):
  """A stand-in decoder: nearest 8x upsampling, each latent frame after the first -> 4."""
  z = jnp.repeat(jnp.repeat(z, 8, axis=2), 8, axis=3)
  return jnp.concatenate([z[:, :1], jnp.repeat(z[:, 1:], 4, axis=1)], axis=1)


@pytest.mark.parametrize("size, tile, stride", [(64, 32, 24), (80, 32, 16), (72, 40, 40)])
def test_tile_spatially_is_exact_for_local_maps(size, tile, stride):
  x = _uniform(0, (2, 1, size, size + 8, 3))
  tiled = jax.jit(
    lambda x: stvae_tiling.tile_spatially(_pool8, x, tile, stride, tile // 8, (tile - stride) // 8)
  )
  np.testing.assert_allclose(tiled(x), _pool8(x), atol=1e-6)
  z = _pool8(x)
  tiled = jax.jit(
    lambda z: stvae_tiling.tile_spatially(_unpool8, z, tile // 8, stride // 8, tile, tile - stride)
  )
  np.testing.assert_allclose(tiled(z), _unpool8(z), atol=1e-6)


def test_tile_spatially_blends_linearly():
  """Tiles of constant value v_tile: the overlap ramps from the left tile to the right."""
  x = jnp.zeros((1, 1, 8, 16, 1))
  calls = iter([1.0, 2.0])
  fn = lambda t: jnp.full(t.shape, next(calls))
  got = stvae_tiling.tile_spatially(fn, x, tile=12, stride=8, out_tile=12, blend=4)
  np.testing.assert_allclose(
    got[0, 0, 0, :, 0], [1] * 8 + [1, 1.25, 1.5, 1.75] + [2] * 4, atol=1e-6
  )


@pytest.mark.parametrize("frames, chunk", [(17, 5), (17, 9), (13, 9), (9, 9)])
def test_chunk_temporally_is_exact_for_causal_maps(frames, chunk):
  x = _uniform(1, (1, frames, 8, 8, 3))
  tiled = jax.jit(lambda x: stvae_tiling.chunk_temporally(_pool8, x, chunk))
  np.testing.assert_allclose(tiled(x), _pool8(x))
  z = _pool8(x)
  tiled = jax.jit(lambda z: stvae_tiling.chunk_temporally(_unpool8, z, (chunk - 1) // 4 + 1))
  np.testing.assert_allclose(tiled(z), _unpool8(z))


def test_one_tile_is_untiled(model):
  module, params = model
  video = _uniform(2, (1, 9, 32, 32, 3))
  mean, logvar = stvae_tiling.encode(module, params, video, tiled=False)
  tiled_mean, tiled_logvar = stvae_tiling.tiled_encode(module, params, video)
  np.testing.assert_array_equal(tiled_mean, mean)
  np.testing.assert_array_equal(tiled_logvar, logvar)
  np.testing.assert_array_equal(
    stvae_tiling.tiled_decode(module, params, mean),
    stvae_tiling.decode(module, params, mean, tiled=False),
  )


def _mean_abs(a, b):
  return float(jnp.mean(jnp.abs(a - b)))


def test_spatial_tiles_agree_with_untiled(model):
  module, params = model
  # 64 px tiles every 48 px: two rows of tiles (64 and 48 px high), one column.
  video, other = _uniform(3, (1, 1, 96, 48, 3)), _uniform(4, (1, 1, 96, 48, 3))
  mean = stvae_tiling.encode(module, params, video, tiled=False)[0]
  tiled = stvae_tiling.encode(module, params, video, tiled=True, tile_size=64)[0]
  unrelated = stvae_tiling.encode(module, params, other, tiled=False)[0]
  assert tiled.shape == mean.shape
  assert _mean_abs(tiled, mean) < 0.5 * _mean_abs(unrelated, mean)

  z, z_other = jax.random.normal(jax.random.key(5), mean.shape), mean
  pixels = stvae_tiling.decode(module, params, z, tiled=False)
  tiled = stvae_tiling.decode(module, params, z, tiled=True, tile_size=64)
  unrelated = stvae_tiling.decode(module, params, z_other, tiled=False)
  assert tiled.shape == pixels.shape
  assert _mean_abs(tiled, pixels) < 0.25 * _mean_abs(unrelated, pixels)


def test_temporal_chunks_agree_with_untiled(model):
  module, params = model
  video = _uniform(6, (1, 17, 16, 16, 3))
  mean = stvae_tiling.encode(module, params, video, tiled=False)[0]
  tiled = stvae_tiling.encode(module, params, video, tiled=True, tile_frames=9)[0]
  unrelated = stvae_tiling.encode(module, params, _uniform(7, video.shape), tiled=False)[0]
  assert tiled.shape == mean.shape == (1, 5, 2, 2, 16)
  # The first chunk's latents differ only through shared norm statistics; later chunks
  # restart from an image-coded first frame, which an untrained encoder does not smooth.
  assert _mean_abs(tiled[:, :3], mean[:, :3]) < 0.5 * _mean_abs(unrelated[:, :3], mean[:, :3])

  pixels = stvae_tiling.decode(module, params, mean, tiled=False)
  tiled = stvae_tiling.decode(module, params, mean, tiled=True, tile_frames=9)
  unrelated = stvae_tiling.decode(module, params, unrelated, tiled=False)
  assert tiled.shape == pixels.shape == video.shape
  assert _mean_abs(tiled, pixels) < 0.25 * _mean_abs(unrelated, pixels)


def test_first_chunk_is_exact_with_causal_norms(model):
  """Per-frame norms: the first chunk sees exactly the frames its latents depend on."""
  module, params = model
  config = ml_collections.ConfigDict(module.config)
  config.per_frame_norm = True
  causal = stvae_tiling.stvae.STVAE(config)
  video = _uniform(8, (1, 17, 16, 16, 3))
  mean = stvae_tiling.encode(causal, params, video, tiled=False)[0]
  tiled = stvae_tiling.encode(causal, params, video, tiled=True, tile_frames=9)[0]
  np.testing.assert_allclose(tiled[:, :3], mean[:, :3], atol=1e-5)
  assert np.max(np.abs(tiled[:, 3:] - mean[:, 3:])) > 1e-3  # later chunks restart causally


def test_tiling_switches_on_by_size(model, monkeypatch):
  module, params = model
  calls = []
  monkeypatch.setattr(stvae_tiling, "tiled_encode", lambda *a, **k: calls.append("enc"))
  monkeypatch.setattr(stvae_tiling, "tiled_decode", lambda *a, **k: calls.append("dec"))
  small = jnp.zeros((2, 1, 32, 32, 3))  # the parity test's image shape: compiled once
  stvae_tiling.encode(module, params, small, tile_size=32)
  stvae_tiling.decode(module, params, jnp.zeros((1, 3, 4, 4, 16)), tile_frames=9)
  assert calls == []
  stvae_tiling.encode(module, params, jnp.zeros((1, 1, 40, 32, 3)), tile_size=32)
  stvae_tiling.encode(module, params, jnp.zeros((1, 13, 8, 8, 3)), tile_frames=9)
  stvae_tiling.decode(module, params, jnp.zeros((1, 1, 4, 5, 16)), tile_size=32)
  stvae_tiling.decode(module, params, jnp.zeros((1, 4, 1, 1, 16)), tile_frames=9)
  stvae_tiling.encode(module, params, small, tiled=True)
  assert calls == ["enc", "enc", "dec", "dec", "enc"]


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(tile_size=36), "multiple of 8"),
    (dict(tile_size=0), "multiple of 8"),
    (dict(tile_size=32, overlap=1.0), "overlap"),
    (dict(tile_size=32, overlap=0.1), "overlap"),
    (dict(tile_frames=8), "tile_frames"),
    (dict(tile_frames=1), "tile_frames"),
  ],
)
def test_bad_tiling_settings(model, kwargs, match):
  module, params = model
  with pytest.raises(ValueError, match=match):
    stvae_tiling.tiled_encode(module, params, jnp.zeros((1, 1, 16, 16, 3)), **kwargs)
  with pytest.raises(ValueError, match=match):
    stvae_tiling.tiled_decode(module, params, jnp.zeros((1, 1, 2, 2, 16)), **kwargs)


def test_bad_inputs_are_caught_before_tiling(model):
  module, params = model
  with pytest.raises(ValueError, match="Frame count"):
    stvae_tiling.encode(module, params, jnp.zeros((1, 3, 16, 16, 3)))
  with pytest.raises(ValueError, match="Expected latents"):
    stvae_tiling.decode(module, params, jnp.zeros((1, 1, 2, 2, 4)), tiled=True)
