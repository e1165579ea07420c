"""ST-VAE: the causal 3D VAE of LaVin-DiT (SPEC.md, section ST-VAE), channels-last.

Pixels are (B, T, H, W, 3) in [-1, 1] with T = 1 + 4k (a single image is T = 1);
latents are (B, 1 + k, H/8, W/8, 16). The parameter tree mirrors the released PyTorch
key layout (`encoder.down_blocks.0.resnets.1.conv2.conv.weight` lives at
`encoder/down_blocks_0/resnets_1/conv2/kernel`), so the converter is a renaming.

Usage:
  module = STVAE(configs.stvae('released'))
  mean, logvar = module.apply({'params': p}, video, method='encode')
  pixels = module.apply({'params': p}, z, method='decode')

Released behaviour kept on purpose: GroupNorm statistics are shared by all frames of a
clip (config `per_frame_norm=False`), so the released encoder is not strictly causal;
`per_frame_norm=True` normalises each frame alone and makes encoder and decoder causal
(latent frame j depends on frames <= 4j only).
"""

import functools
import math
from typing import Any, Callable

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import ml_collections

from lavin_jax.configs.models import spatial_factor  # pixels per latent cell; re-exported


def _conv_kernel_and_bias(module, shape, dtype):
  """Declares a conv kernel (..., in, out) and bias (out,) with logical axis names."""
  names = (None,) * (len(shape) - 2) + ("conv_in", "conv_out")
  kernel = module.param(
    "kernel",
    nn.with_logical_partitioning(nn.initializers.lecun_normal(), names),
    shape,
    module.param_dtype,
  )
  bias = module.param(
    "bias",
    nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)),
    shape[-1:],
    module.param_dtype,
  )
  return kernel.astype(dtype), bias.astype(dtype)


def _conv_frames(x, kernel, strides=(1, 1), padding="SAME"):
  """2D convolution applied to every frame: x (B, T, H, W, I), kernel (kh, kw, I, O)."""
  b, t = x.shape[:2]
  y = lax.conv_general_dilated(
    x.reshape(b * t, *x.shape[2:]),
    kernel,
    strides,
    padding,
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
  )
  return y.reshape(b, t, *y.shape[1:])


def _delay(x, lag):
  """Frame t of the result is frame max(t - lag, 0) of x (B, T, ...)."""
  t = x.shape[1]
  lag = min(lag, t - 1)
  return jnp.concatenate([x[:, :1]] * lag + [x[:, : t - lag]], axis=1)


class CausalConv3d(nn.Module):
  """Conv3d, stride 1: first frame replicated (k - 1) times in front, H and W zero-padded.

  Computed per time tap: tap i is a 2D convolution of every frame, delayed by
  k - 1 - i frames (frame 0 standing in for frames before it), and the taps are summed.
  This is faster than XLA's conv3d on CPU and copies no input. A single frame sees only
  copies of itself, so its kernel is summed over time first: one 2D convolution.
  """

  features: int
  kernel_size: int = 3
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):  # (B, T, H, W, I) -> (B, T, H, W, O)
    k = self.kernel_size
    kernel, bias = _conv_kernel_and_bias(self, (k, k, k, x.shape[-1], self.features), self.dtype)
    x = x.astype(self.dtype)
    if x.shape[1] == 1:
      return _conv_frames(x, kernel.sum(axis=0)) + bias
    return sum(_delay(_conv_frames(x, kernel[i]), k - 1 - i) for i in range(k)) + bias


def _group_norm(config) -> Callable[..., nn.Module]:
  """GroupNorm over (C/G, T, H, W) as released, or over (C/G, H, W) per frame."""
  return functools.partial(
    nn.GroupNorm,
    num_groups=config.norm_num_groups,
    epsilon=config.norm_eps,
    reduction_axes=(2, 3, 4) if config.per_frame_norm else None,
    use_fast_variance=False,
    dtype=jnp.float32,
    param_dtype=jnp.dtype(config.param_dtype),
    scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)),
  )


def _resize_nearest(x, size):
  """Nearest resize of (B, T, H, W, C) to (B, *size, C) by integer factors."""
  for axis, (src, dst) in enumerate(zip(x.shape[1:4], size), start=1):
    if dst % src:
      raise ValueError(f"Cannot resize axis {axis} from {src} to {dst} by an integer factor.")
    x = jnp.repeat(x, dst // src, axis=axis)
  return x


def _resize_like(z, f):
  """Resizes z to f's (T, H, W); frame 0 apart when f has an odd T > 1 (released rule)."""
  t, h, w = f.shape[1:4]
  if t > 1 and t % 2 == 1:
    return jnp.concatenate(
      [_resize_nearest(z[:, :1], (1, h, w)), _resize_nearest(z[:, 1:], (t - 1, h, w))], axis=1
    )
  return _resize_nearest(z, (t, h, w))


class SpatialNorm(nn.Module):
  """norm(f) * conv_y(z) + conv_b(z), z resized (nearest) to f."""

  group_norm: Callable[..., nn.Module]
  conv: Callable[..., nn.Module]

  @nn.compact
  def __call__(self, f, z):
    features = f.shape[-1]
    # 1x1x1 convolutions commute with the nearest resize: apply them at latent size.
    scale = _resize_like(self.conv(features, kernel_size=1, name="conv_y")(z), f)
    shift = _resize_like(self.conv(features, kernel_size=1, name="conv_b")(z), f)
    return self.group_norm(name="norm_layer")(f) * scale + shift


class ResnetBlock(nn.Module):
  """norm1, SiLU, conv1, norm2, SiLU, conv2, plus a 1x1x1 shortcut when channels change.

  The norms are GroupNorms (encoder) or SpatialNorms conditioned on z (decoder).
  """

  features: int
  group_norm: Callable[..., nn.Module]
  conv: Callable[..., nn.Module]

  def _norm(self, name, x, z):
    if z is None:
      return self.group_norm(name=name)(x)
    return SpatialNorm(self.group_norm, self.conv, name=name)(x, z)

  @nn.compact
  def __call__(self, x, z=None):
    h = self.conv(self.features, name="conv1")(nn.silu(self._norm("norm1", x, z)))
    h = self.conv(self.features, name="conv2")(nn.silu(self._norm("norm2", h, z)))
    if x.shape[-1] != self.features:
      x = self.conv(self.features, kernel_size=1, name="conv_shortcut")(x)
    return x.astype(h.dtype) + h


_RematResnetBlock = nn.remat(ResnetBlock)


class Downsample(nn.Module):
  """Optional time halving (frame 0 kept apart when T is odd), then a stride-2 3x3 conv.

  The conv pads right and bottom by one, frame by frame.
  """

  features: int
  compress_time: bool
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.compress_time and x.shape[1] > 1:
      first, rest = (x[:, :1], x[:, 1:]) if x.shape[1] % 2 else (x[:, :0], x)
      b, t, h, w, c = rest.shape
      rest = rest.reshape(b, t // 2, 2, h, w, c).mean(axis=2)
      x = jnp.concatenate([first, rest], axis=1)
    kernel, bias = _conv_kernel_and_bias(self, (3, 3, x.shape[-1], self.features), self.dtype)
    return _conv_frames(x.astype(self.dtype), kernel, (2, 2), ((0, 1), (0, 1))) + bias


def _fold_taps(kernel, axis, phase):
  """The 2 taps, along axis, of a 3-tap kernel applied to a 2x nearest-upsampled input.

  Output row 2i + phase sees input rows (i - 1, i, i) for phase 0 and (i, i, i + 1)
  for phase 1.
  """
  k0, k1, k2 = jnp.split(kernel, 3, axis=axis)
  return jnp.concatenate([k0, k1 + k2] if phase == 0 else [k0 + k1, k2], axis=axis)


def _upsample_conv_frames(x, kernel):
  """Nearest 2x spatial upsampling then a 3x3 'SAME' conv, per frame, at input size.

  Each of the four output phases is a 2x2 conv of the input: 2.25x fewer FLOPs than
  convolving the upsampled frame. x (B, T, h, w, I) -> (B, T, 2h, 2w, O).
  """
  b, t, h, w, _ = x.shape
  x = jnp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)))
  phases = [
    _conv_frames(
      x[:, :, i : i + h + 1, j : j + w + 1],
      _fold_taps(_fold_taps(kernel, 0, i), 1, j),
      padding="VALID",
    )
    for i in range(2)
    for j in range(2)
  ]
  y = jnp.stack(phases, axis=-2).reshape(b, t, h, w, 2, 2, -1)  # (..., row phase, col phase, O)
  return y.transpose(0, 1, 2, 4, 3, 5, 6).reshape(b, t, 2 * h, 2 * w, -1)


class Upsample(nn.Module):
  """2x nearest upsampling then a 3x3 conv, frame by frame.

  With compress_time and T > 1, time is doubled too except for frame 0 (1 + k frames
  -> 1 + 2k). The conv acts per frame, so frames are repeated after it.
  """

  features: int
  compress_time: bool
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel, bias = _conv_kernel_and_bias(self, (3, 3, x.shape[-1], self.features), self.dtype)
    y = _upsample_conv_frames(x.astype(self.dtype), kernel) + bias
    if self.compress_time and y.shape[1] > 1:
      y = jnp.concatenate([y[:, :1], jnp.repeat(y[:, 1:], 2, axis=1)], axis=1)
    return y


class Stage(nn.Module):
  """`num_layers` ResNet blocks, then an optional resampler (a released down/mid/up block)."""

  features: int
  num_layers: int
  block: Callable[..., nn.Module]
  resample: Callable[..., nn.Module] | None = None

  @nn.compact
  def __call__(self, x, z=None):
    for i in range(self.num_layers):
      x = self.block(self.features, name=f"resnets_{i}")(x, z)
    if self.resample is not None:
      x = self.resample(self.features)(x)
    return x


def _dtypes(config):
  return {"dtype": jnp.dtype(config.dtype), "param_dtype": jnp.dtype(config.param_dtype)}


def _layer_factories(config):
  """(causal conv, group norm, ResNet block) constructors for a config."""
  conv = functools.partial(CausalConv3d, **_dtypes(config))
  group_norm = _group_norm(config)
  block_cls = _RematResnetBlock if config.remat else ResnetBlock
  block = functools.partial(block_cls, group_norm=group_norm, conv=conv)
  return conv, group_norm, block


def _time_levels(config) -> int:
  return int(math.log2(config.temporal_compression))


class Encoder(nn.Module):
  """Pixels (B, T, H, W, C) -> moments (B, T', H/8, W/8, 2 * latent_channels)."""

  config: ml_collections.ConfigDict

  @nn.compact
  def __call__(self, x):
    c = self.config
    conv, group_norm, block = _layer_factories(c)
    channels = tuple(c.block_out_channels)
    x = conv(channels[0], name="conv_in")(x)
    for i, features in enumerate(channels):
      resample = None
      if i < len(channels) - 1:
        resample = functools.partial(
          Downsample, compress_time=i < _time_levels(c), name="downsamplers_0", **_dtypes(c)
        )
      x = Stage(features, c.layers_per_block, block, resample, name=f"down_blocks_{i}")(x)
    x = Stage(channels[-1], 2, block, name="mid_block")(x)
    x = nn.silu(group_norm(name="norm_out")(x))
    return conv(2 * c.latent_channels, name="conv_out")(x)


class Decoder(nn.Module):
  """Latents (B, T', h, w, latent_channels) -> pixels (B, 1 + 4 (T' - 1), 8h, 8w, C)."""

  config: ml_collections.ConfigDict

  @nn.compact
  def __call__(self, z):
    c = self.config
    conv, group_norm, block = _layer_factories(c)
    channels = tuple(reversed(c.block_out_channels))
    x = conv(channels[0], name="conv_in")(z)
    x = Stage(channels[0], 2, block, name="mid_block")(x, z)
    for i, features in enumerate(channels):
      resample = None
      if i < len(channels) - 1:
        resample = functools.partial(
          Upsample, compress_time=i < _time_levels(c), name="upsamplers_0", **_dtypes(c)
        )
      x = Stage(features, c.layers_per_block + 1, block, resample, name=f"up_blocks_{i}")(x, z)
    x = nn.silu(SpatialNorm(group_norm, conv, name="norm_out")(x, z))
    return conv(c.in_channels, name="conv_out")(x)


def check_video(video, config):
  """Raises ValueError unless video is (B, 1 + 4k, H, W, C) with H, W multiples of 8."""
  if video.ndim != 5:
    raise ValueError(
      f"Expected pixels of shape (B, T, H, W, {config.in_channels}), got {video.shape}; "
      "add a time axis of length 1 for images."
    )
  _, t, h, w, c = video.shape
  if c != config.in_channels:
    raise ValueError(
      f"Expected {config.in_channels} channels (channels-last), got {c} in shape {video.shape}."
    )
  tc = config.temporal_compression
  if (t - 1) % tc:
    raise ValueError(
      f"Frame count {t} is not 1 + {tc}k; trim or pad the clip to 1, {1 + tc}, "
      f"{1 + 2 * tc}, ... frames."
    )
  f = spatial_factor(config)
  if h % f or w % f:
    raise ValueError(
      f"Height and width must be multiples of {f}, got {h}x{w}; resize or crop to "
      f"{h // f * f or f}x{w // f * f or f}."
    )


def check_latents(z, config):
  """Raises ValueError unless z is (B, T', h, w, latent_channels)."""
  if z.ndim != 5 or z.shape[-1] != config.latent_channels:
    raise ValueError(
      f"Expected latents of shape (B, T, h, w, {config.latent_channels}), got {z.shape}."
    )


class STVAE(nn.Module):
  """The ST-VAE: `encode` -> (mean, logvar), `decode` -> pixels; `__call__` does both."""

  config: ml_collections.ConfigDict

  def setup(self):
    self.encoder = Encoder(self.config)
    self.decoder = Decoder(self.config)

  def encode(self, video):
    """(B, 1 + 4k, H, W, 3) -> mean, logvar (clipped), each (B, 1 + k, H/8, W/8, 16) f32."""
    check_video(video, self.config)
    moments = self.encoder(video).astype(jnp.float32)
    mean, logvar = jnp.split(moments, 2, axis=-1)
    return mean, jnp.clip(logvar, self.config.logvar_min, self.config.logvar_max)

  def decode(self, z):
    """(B, T', h, w, 16) -> pixels (B, 1 + 4 (T' - 1), 8h, 8w, 3) float32."""
    check_latents(z, self.config)
    return self.decoder(z).astype(jnp.float32)

  def __call__(self, video, key=None):
    """Reconstruction from a posterior sample (or the mean when key is None), mean, logvar."""
    mean, logvar = self.encode(video)
    z = mean if key is None else sample_posterior(mean, logvar, key)
    return self.decode(z), mean, logvar


def sample_posterior(mean, logvar, key):
  """mean + exp(logvar / 2) * N(0, 1): what the released inference feeds to J-DiT."""
  noise = jax.random.normal(key, mean.shape, jnp.float32)
  return mean + jnp.exp(0.5 * logvar) * noise


def kl_divergence(mean, logvar):
  """KL(N(mean, exp(logvar)) || N(0, 1)) summed over all but the batch axis: (B,)."""
  kl = 0.5 * (jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)
  return kl.reshape(kl.shape[0], -1).sum(axis=-1)


def normalize_latents(z, config):
  """VAE latents -> J-DiT latents: (z - shift) * scale."""
  return (z - config.latent_shift) * config.latent_scale


def denormalize_latents(z, config):
  """J-DiT latents -> VAE latents: z / scale + shift."""
  return z / config.latent_scale + config.latent_shift
