"""ST-VAE: released parity, causality, shapes, posterior, remat and bad inputs."""

import pathlib

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lavin_jax import configs
from lavin_jax.convert import load_released_stvae
from lavin_jax.models import stvae
from lavin_jax.models import stvae_tiling

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "stvae"
TOL = 1e-4  # max abs error against the released PyTorch outputs, float32


def _tiny(**overrides):
  c = configs.stvae("tiny")
  c.update(overrides)
  return c


def _video(key, frames, size=16, batch=1):
  return jax.random.uniform(key, (batch, frames, size, size, 3), minval=-1.0, maxval=1.0)


def _encode(module, params, x):
  return stvae_tiling.encode(module, params, x, tiled=False)  # one compile per config


def _decode(module, params, z):
  return stvae_tiling.decode(module, params, z, tiled=False)


@pytest.fixture(scope="module")
def released():
  """The released model's code with the fixture's random weights (tiny config)."""
  config = ml_collections.ConfigDict(
    dict(block_out_channels=(32, 32, 32, 32), layers_per_block=1, latent_channels=16)
  )
  return load_released_stvae(FIXTURES / "vae_state.pt", config)


@pytest.fixture(scope="module")
def causal(released):
  """Same weights, per-frame ("strictly causal") norms."""
  module, params = released
  config = ml_collections.ConfigDict(module.config)
  config.per_frame_norm = True
  return stvae.STVAE(config), params


@pytest.mark.parametrize("case", ["img", "vid"])
def test_matches_released(released, case):
  module, params = released
  io = np.load(FIXTURES / "vae_io.npz")
  to_ours = lambda a: einops.rearrange(a, "b c t h w -> b t h w c")
  mean, logvar = _encode(module, params, to_ours(io[case]))
  recon = _decode(module, params, mean)
  moments = np.concatenate([mean, logvar], axis=-1)
  for name, ours in [("moments", moments), ("mean", mean), ("logvar", logvar), ("recon", recon)]:
    ref = to_ours(io[f"{case}_{name}"])
    assert ours.shape == ref.shape, name
    assert np.max(np.abs(np.asarray(ours) - ref)) < TOL, name


@pytest.mark.parametrize("frames", [1, 5])
def test_causal_conv_is_conv3d_with_first_frame_replicated(frames):
  """Independent check: lax.conv3d on the explicitly padded clip."""
  x = jax.random.normal(jax.random.key(1), (2, frames, 6, 5, 4))
  conv = stvae.CausalConv3d(features=3)
  params = nn.unbox(jax.jit(conv.init)(jax.random.key(2), x)["params"])
  padded = jnp.concatenate([x[:, :1], x[:, :1], x], axis=1)
  want = (
    jax.lax.conv_general_dilated(
      padded,
      params["kernel"],
      (1, 1, 1),
      ((0, 0), (1, 1), (1, 1)),
      dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
    )
    + params["bias"]
  )
  got = jax.jit(conv.apply)({"params": params}, x)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_per_frame_norm_encoder_is_causal(causal):
  module, params = causal
  video = _video(jax.random.key(3), 9)
  changed = video.at[:, 5].add(0.5)  # frame 5 feeds latent frame 2 (frames 5..8)
  before, after = _encode(module, params, video)[0], _encode(module, params, changed)[0]
  np.testing.assert_allclose(after[:, :2], before[:, :2], atol=1e-6)
  assert np.max(np.abs(after[:, 2] - before[:, 2])) > 1e-3


def test_per_frame_norm_decoder_is_causal(causal):
  module, params = causal
  z = jax.random.normal(jax.random.key(4), (1, 3, 2, 2, 16))
  before, after = _decode(module, params, z), _decode(module, params, z.at[:, 2].add(1.0))
  np.testing.assert_allclose(after[:, :5], before[:, :5], atol=1e-6)  # frames of latents 0, 1
  assert np.max(np.abs(after[:, 5:] - before[:, 5:])) > 1e-3


def test_released_norm_shares_statistics_across_frames(released):
  """The released GroupNorm lets later frames change earlier latents (not causal)."""
  module, params = released
  video = _video(jax.random.key(3), 9)
  before = _encode(module, params, video)[0]
  after = _encode(module, params, video.at[:, 5].add(0.5))[0]
  assert np.max(np.abs(after[:, 0] - before[:, 0])) > 1e-4


def test_image_is_first_frame_of_video(causal):
  """An image is a 1-frame video: with causal norms it codes like a clip's first frame."""
  module, params = causal
  video = _video(jax.random.key(3), 9)
  mean_video = _encode(module, params, video)[0]
  mean_image = _encode(module, params, video[:, :1])[0]
  assert mean_image.shape == (1, 1, 2, 2, 16)
  np.testing.assert_allclose(mean_image, mean_video[:, :1], atol=1e-5)
  image = _decode(module, params, mean_video[:, :1])
  assert image.shape == (1, 1, 16, 16, 3)
  np.testing.assert_allclose(image, _decode(module, params, mean_video)[:, :1], atol=1e-5)


@pytest.mark.parametrize("frames", [1, 5, 9, 17])
def test_shapes(frames):
  module = stvae.STVAE(_tiny())
  video = jax.ShapeDtypeStruct((2, frames, 24, 16, 3), jnp.float32)
  params = jax.eval_shape(module.init, jax.random.key(0), video)["params"]
  mean, logvar = jax.eval_shape(
    lambda p, x: module.apply({"params": p}, x, method="encode"), params, video
  )
  latent_frames = 1 + (frames - 1) // 4
  assert mean.shape == logvar.shape == (2, latent_frames, 3, 2, 16)
  assert mean.dtype == jnp.float32
  recon = jax.eval_shape(lambda p, z: module.apply({"params": p}, z, method="decode"), params, mean)
  assert recon.shape == (2, frames, 24, 16, 3)


@pytest.mark.parametrize(
  "shape, match",
  [
    ((1, 2, 16, 16, 3), "Frame count 2"),
    ((1, 4, 16, 16, 3), "Frame count 4"),
    ((1, 6, 16, 16, 3), "Frame count 6"),
    ((1, 1, 20, 16, 3), "multiples of 8"),
    ((1, 1, 16, 12, 3), "multiples of 8"),
    ((1, 1, 16, 16, 4), "Expected 3 channels"),
    ((1, 16, 16, 3), "add a time axis"),
  ],
)
def test_bad_video(shape, match):
  module = stvae.STVAE(_tiny())
  with pytest.raises(ValueError, match=match):
    module.init(jax.random.key(0), jnp.zeros(shape))


@pytest.mark.parametrize("shape", [(1, 1, 2, 2, 8), (1, 2, 2, 16)])
def test_bad_latents(shape):
  module = stvae.STVAE(_tiny())
  params = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 1, 16, 16, 3)))
  with pytest.raises(ValueError, match="Expected latents"):
    module.apply(params, jnp.zeros(shape), method="decode")


@pytest.mark.parametrize("remat", [False, True])
def test_remat_wraps_each_resnet_block(remat):
  config = _tiny(remat=remat)
  module = stvae.STVAE(config)
  video = jnp.zeros((1, 1, 8, 8, 3))
  params = jax.eval_shape(module.init, jax.random.key(0), video)
  jaxpr = str(jax.make_jaxpr(lambda p: module.apply(p, video))(params))
  blocks = len(config.block_out_channels) * (2 * config.layers_per_block + 1) + 2 * 2
  assert jaxpr.count("remat2[") == (blocks if remat else 0)


def test_remat_block_gives_same_gradients():
  x = jax.random.normal(jax.random.key(6), (1, 3, 4, 4, 32))
  z = jax.random.normal(jax.random.key(7), (1, 2, 1, 1, 16))
  blocks = [stvae._layer_factories(_tiny(remat=r))[2](features=64) for r in (False, True)]
  params = nn.unbox(jax.jit(blocks[0].init)(jax.random.key(0), x, z)["params"])

  def grads(block):  # a decoder-style block (SpatialNorms) with a shortcut conv
    loss = lambda p, x: jnp.sum(jnp.sin(block.apply({"params": p}, x, z)))
    return jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)

  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4),
    grads(blocks[1]),
    grads(blocks[0]),
  )  # gradients of size ~1-10: f32 rounding


def test_params_carry_logical_axis_names():
  module = stvae.STVAE(_tiny())
  boxed = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 1, 8, 8, 3)))
  specs = jax.tree.leaves(
    nn.get_partition_spec(boxed)["params"],
    is_leaf=lambda s: isinstance(s, jax.sharding.PartitionSpec),
  )
  names = {n for spec in specs for n in spec}
  assert names == {None, "conv_in", "conv_out", "norm"}


def test_bfloat16_compute_stays_close(released):
  module, params = released
  config = ml_collections.ConfigDict(module.config)
  config.dtype = "bfloat16"
  io = np.load(FIXTURES / "vae_io.npz")
  to_ours = lambda a: einops.rearrange(a, "b c t h w -> b t h w c")
  mean = to_ours(io["img_mean"])
  mean_bf16 = _encode(stvae.STVAE(config), params, to_ours(io["img"]))[0]
  assert mean_bf16.dtype == jnp.float32
  assert np.max(np.abs(mean_bf16 - mean)) < 0.1 * np.max(np.abs(mean))


def test_sample_posterior():
  mean = jnp.linspace(-2.0, 2.0, 8).reshape(1, 1, 1, 1, 8) * jnp.ones((64, 2, 8, 8, 1))
  logvar = jnp.linspace(-4.0, 1.0, 8).reshape(1, 1, 1, 1, 8) * jnp.ones_like(mean)
  key = jax.random.key(8)
  z = stvae.sample_posterior(mean, logvar, key)
  np.testing.assert_array_equal(z, stvae.sample_posterior(mean, logvar, key))
  axes = (0, 1, 2, 3)
  np.testing.assert_allclose(z.mean(axes), mean[0, 0, 0, 0], atol=0.05 * 2)
  np.testing.assert_allclose(z.std(axes), np.exp(0.5 * logvar[0, 0, 0, 0]), rtol=0.05)


def test_kl_divergence_matches_closed_form():
  rng = np.random.default_rng(0)
  mean, logvar = rng.normal(size=(2, 3, 4, 4, 16)), rng.normal(size=(2, 3, 4, 4, 16))
  var = np.exp(logvar)
  want = 0.5 * np.sum(mean**2 + var - 1 - np.log(var), axis=(1, 2, 3, 4))
  np.testing.assert_allclose(stvae.kl_divergence(mean, logvar), want, rtol=1e-5)


def test_latent_normalisation():
  config = configs.stvae("released")
  z = jnp.linspace(-3.0, 3.0, 32).reshape(1, 1, 1, 2, 16)
  np.testing.assert_allclose(
    stvae.normalize_latents(z, config), (np.asarray(z) - 0.032470703125) * 1.08936170213, rtol=1e-6
  )
  np.testing.assert_allclose(
    stvae.denormalize_latents(stvae.normalize_latents(z, config), config), z, atol=1e-6
  )


@pytest.mark.parametrize("compress_time, frames", [(False, 3), (True, 3)])
def test_upsample_is_nearest_then_conv(compress_time, frames):
  """Independent check of the phase-wise upsampling conv: repeat, then a 3x3 conv."""
  x = jax.random.normal(jax.random.key(9), (2, frames, 3, 4, 5))
  up = stvae.Upsample(features=6, compress_time=compress_time)
  params = nn.unbox(jax.jit(up.init)(jax.random.key(10), x)["params"])
  big = jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)
  if compress_time and frames > 1:
    big = jnp.concatenate([big[:, :1], jnp.repeat(big[:, 1:], 2, axis=1)], axis=1)
  t = big.shape[1]
  want = (
    jax.lax.conv_general_dilated(
      big.reshape(-1, 6, 8, 5),
      params["kernel"],
      (1, 1),
      ((1, 1), (1, 1)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
    ).reshape(2, t, 6, 8, 6)
    + params["bias"]
  )
  np.testing.assert_allclose(jax.jit(up.apply)({"params": params}, x), want, atol=1e-5)
