"""Building blocks of J-DiT: dense/norm factories, SwiGLU, timestep embedding, 3D RoPE.

Every parameter is created through `nn.with_logical_partitioning`, naming the logical axes
of DESIGN.md; the mapping to mesh axes lives in lavin_jax/parallel/mesh.py. Matmuls run in
the config's compute dtype; norms, RoPE and everything statistical run in float32.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

Axes = tuple[str | None, ...]


_XAVIER_UNIFORM = nn.initializers.xavier_uniform()


def _dot(a, b, contracting):
  """dot_general of 2D a and b summed in float32, returned in a's dtype."""
  out = jax.lax.dot_general(a, b, (contracting, ((), ())), preferred_element_type=jnp.float32)
  return out.astype(a.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _matmul(x, w, axes):
  """x (M, K) @ w (K, N) in the form XLA CPU runs fastest, forward and backward.

  Summed in float32 and returned in x's dtype: the numbers of a plain dot_general, but
  XLA CPU runs a bfloat16 dot natively only when asked for a float32 result (otherwise
  it converts the operands and runs it in float32). The VJP keeps the same form, so the
  gradient matmuls stay bfloat16 x bfloat16 too. `axes`: w's logical axes; each matmul
  reads w gathered (`_gathered`).
  """
  return _dot(x, _gathered(w, axes), ((1,), (0,)))


def _matmul_fwd(x, w, axes):
  # The residual keeps w's stored sharding: left free, XLA keeps every layer's gathered
  # kernel for the backward pass.
  return _matmul(x, w, axes), (x, nn.with_logical_constraint(w, axes))


def _matmul_bwd(axes, residuals, g):
  x, w = residuals
  return _dot(g, _gathered(w, axes), ((1,), (1,))), _dot(x, g, ((0,), (0,))).astype(w.dtype)


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def _gathered(w: jax.Array, axes: Axes) -> jax.Array:
  """Kernel w with its 'embed' axis whole (FSDP's gather before use), its other axes kept.

  Stated, not left to the partitioner, to work around an XLA bug (jax 0.10.2, Shardy and
  GSPMD alike): x P(('data', 'fsdp'), 'tensor') @ w P('tensor', 'fsdp') with the output
  wanted P(('data', 'fsdp'), 'tensor') moves batch rows between devices in one operand
  only, so a data = fsdp = tensor = 2 mesh mixed examples (J-DiT's row-parallel
  projections into modulated streams, and their transposes in the backward pass).
  """
  return nn.with_logical_constraint(w, tuple(None if a == "embed" else a for a in axes))


def _dense_dot(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, *, axes):
  """Dense's contraction, lhs (..., K) x rhs (K, N), as one 2D `_matmul`; `axes` are
  the kernel's logical axes.

  2D because XLA CPU transposes activations for the weight gradient of a dot with more
  than one free lhs dim.
  """
  # Dense contracts lhs's last dim with rhs's first; J-DiT sets no precision.
  del dimension_numbers, precision, preferred_element_type
  out = _matmul(lhs.reshape(-1, lhs.shape[-1]), rhs, axes)
  return out.reshape(*lhs.shape[:-1], rhs.shape[-1])


def dense(
  config: ml_collections.ConfigDict,
  features: int,
  axes: Axes,
  *,
  use_bias: bool = False,
  kernel_init: nn.initializers.Initializer = _XAVIER_UNIFORM,
  name: str | None = None,
) -> nn.Dense:
  """A Dense layer whose kernel (in, out) carries the logical `axes`; bias is zero-init."""
  return nn.Dense(
    features,
    use_bias=use_bias,
    dtype=jnp.dtype(config.dtype),
    param_dtype=jnp.dtype(config.param_dtype),
    kernel_init=nn.with_logical_partitioning(kernel_init, axes),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[-1:]),
    dot_general=functools.partial(_dense_dot, axes=tuple(axes)),
    name=name,
  )


def _dot_sum(a: jax.Array, b: jax.Array, keep: tuple[int, ...]) -> jax.Array:
  """sum(a * b) over every axis not in `keep`, as one float32 dot_general batched over `keep`.

  The gradients of per-channel and per-token scales are such sums; XLA CPU runs a
  multiply followed by a reduction an order of magnitude slower than the same sum as a
  dot (`bench/profile.py --what=train` lists such reductions by source).
  """
  summed = tuple(i for i in range(a.ndim) if i not in keep)
  dims = ((summed, summed), (keep, keep))
  with jax.named_scope("dot_sum"):  # names these sums in profiles and jaxprs
    return jax.lax.dot_general(a, b, dims, preferred_element_type=jnp.float32)


@jax.custom_vjp
def scale_channels(x: jax.Array, scale: jax.Array) -> jax.Array:
  """x (B, L, D) * scale, scale (B, D) per example or (D,) shared, broadcast over tokens."""
  return x * _over_tokens(scale)


def _over_tokens(scale):
  return scale[:, None, :] if scale.ndim == 2 else scale


def _scale_channels_fwd(x, scale):
  return scale_channels(x, scale), (x, scale)


def _scale_channels_bwd(residuals, g):
  x, scale = residuals
  keep = (0, 2) if scale.ndim == 2 else (2,)
  return (g * _over_tokens(scale)).astype(x.dtype), _dot_sum(g, x, keep).astype(scale.dtype)


scale_channels.defvjp(_scale_channels_fwd, _scale_channels_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def rms_normalize(x: jax.Array, eps: float) -> jax.Array:
  """x / sqrt(mean(x^2) + eps) over the last axis, x float32 (..., D)."""
  return _rms_normalize_fwd(x, eps)[0]


def _rms_normalize_fwd(x, eps):
  inv = jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps)  # (..., 1)
  y = x * inv
  return y, (y, inv)


def _rms_normalize_bwd(eps, residuals, g):
  """dx = inv * (g - y * mean(g * y)), the per-token mean as a dot."""
  del eps
  y, inv = residuals
  mean_gy = _dot_sum(g, y, tuple(range(y.ndim - 1)))[..., None] / y.shape[-1]
  return (inv * (g - y * mean_gy),)


rms_normalize.defvjp(_rms_normalize_fwd, _rms_normalize_bwd)


class RMSNorm(nn.Module):
  """RMSNorm over the last axis in float32, optional learned scale (D,) named 'scale'."""

  eps: float
  use_scale: bool = False
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = rms_normalize(x.astype(jnp.float32), self.eps)
    if not self.use_scale:
      return y
    init = nn.with_logical_partitioning(nn.initializers.ones, ("norm",))
    scale = self.param("scale", init, (x.shape[-1],), self.param_dtype)
    return scale_channels(y, scale.astype(jnp.float32))


def rms_norm(
  config: ml_collections.ConfigDict, *, use_scale: bool = False, name: str | None = None
) -> RMSNorm:
  """RMSNorm over the last axis in float32 (eps `config.norm_eps`), optional learned scale."""
  return RMSNorm(
    eps=config.norm_eps,
    use_scale=use_scale,
    param_dtype=jnp.dtype(config.param_dtype),
    name=name,
  )


def modulate(x: jax.Array, scale: jax.Array) -> jax.Array:
  """(1 + scale) * x with a per-example scale (B, D) broadcast over tokens (B, L, D)."""
  return scale_channels(x, 1 + scale)


def drop_path(x: jax.Array, rate: jax.Array | float, key: jax.Array) -> jax.Array:
  """Stochastic depth: zero whole examples with probability `rate`, rescale the rest."""
  keep_prob = 1.0 - rate
  keep = jax.random.bernoulli(key, keep_prob, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(keep, x / keep_prob, 0).astype(x.dtype)


class SwiGLU(nn.Module):
  """down(silu(gate(x)) * up(x)), no biases; the inner width comes from the config."""

  config: ml_collections.ConfigDict

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = self.config
    inner = mlp_hidden_size(c)
    gate = dense(c, inner, ("embed", "mlp"), name="gate_proj")(x)
    up = dense(c, inner, ("embed", "mlp"), name="up_proj")(x)
    return dense(c, c.hidden_size, ("mlp", "embed"), name="down_proj")(nn.silu(gate) * up)


def mlp_hidden_size(config: ml_collections.ConfigDict) -> int:
  """SwiGLU inner width: int(ratio * D * 2/3 / multiple) * multiple (1344 for D = 512)."""
  multiple = config.mlp_multiple_of
  return int(config.mlp_ratio * config.hidden_size * 2 / 3 / multiple) * multiple


def timestep_embedding(t: jax.Array, dim: int, max_period: float) -> jax.Array:
  """Sinusoidal features of t (B,) -> (B, dim) float32, [cos, sin] order, t used as is."""
  half = dim // 2
  freqs = jnp.exp(-np.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  angles = t.astype(jnp.float32)[:, None] * freqs[None]
  return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


class TimestepEmbedder(nn.Module):
  """t (B,) -> Linear(freq_dim, D), SiLU, Linear(D, D)."""

  config: ml_collections.ConfigDict

  @nn.compact
  def __call__(self, t: jax.Array) -> jax.Array:
    c = self.config
    init = nn.initializers.normal(0.02)
    h = timestep_embedding(t, c.time_freq_dim, c.time_max_period)
    h = dense(c, c.hidden_size, ("freq", "embed"), use_bias=True, kernel_init=init, name="fc1")(h)
    return dense(c, c.hidden_size, ("embed", "mlp"), use_bias=True, kernel_init=init, name="fc2")(
      nn.silu(h)
    )


# ---------------------------------------------------------------------------------------
# 3D rotary position embedding.


def rope_split(head_dim: int) -> tuple[int, int, int]:
  """Channels of each head given to the (t, h, w) axes.

  Rule: h = w = 2 * (head_dim // 6) and t takes the rest, so every part is even (the
  half-split rotation needs it) and time, the longest axis of an in-context sequence,
  gets any remainder. head_dim 72 -> (24, 24, 24) as released; 64 -> (24, 20, 20).
  """
  if head_dim % 2:
    raise ValueError(f"RoPE needs an even head_dim, got {head_dim}.")
  spatial = 2 * (head_dim // 6)
  return head_dim - 2 * spatial, spatial, spatial


def rope_tables(positions: jax.Array, head_dim: int, theta: float):
  """cos and sin tables (B, L, 1, head_dim) float32 for integer positions (B, L, 3).

  Axis a with d_a channels rotates at inv_freq = theta^(-arange(0, d_a, 2) / d_a); the
  angles are repeated twice ([f, f]) to match the half-split rotation of `apply_rope`.
  """
  angles = []
  for axis, dim in enumerate(rope_split(head_dim)):
    inv_freq = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    a = positions[..., axis : axis + 1].astype(jnp.float32) * inv_freq.astype(np.float32)
    angles += [a, a]
  angles = jnp.concatenate(angles, axis=-1)[:, :, None, :]
  return jnp.cos(angles), jnp.sin(angles)


def _rotate_half(x: jax.Array) -> jax.Array:
  x1, x2 = jnp.split(x, 2, axis=-1)
  return jnp.concatenate([-x2, x1], axis=-1)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotates x (B, L, N, hd) part by part ((t, h, w) of `rope_split`), in float32."""
  split = np.cumsum(rope_split(x.shape[-1]))[:-1]
  parts = jnp.split(x.astype(jnp.float32), split, axis=-1)
  rotated = jnp.concatenate([_rotate_half(p) for p in parts], axis=-1)
  return (x.astype(jnp.float32) * cos + rotated * sin).astype(x.dtype)


def token_positions(frames: jax.Array, height: int, width: int) -> jax.Array:
  """(t, h, w) positions (B, F*height*width, 3) int32 for frame indices (B, F)."""
  b, f = frames.shape
  rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  grid = np.stack([rows.ravel(), cols.ravel()], axis=-1)  # (h*w, 2)
  t = jnp.repeat(frames.astype(jnp.int32), height * width, axis=1)[..., None]
  hw = jnp.broadcast_to(jnp.tile(grid, (f, 1)), (b, f * height * width, 2))
  return jnp.concatenate([t, hw.astype(jnp.int32)], axis=-1)
