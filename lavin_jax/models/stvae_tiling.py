"""Tiled ST-VAE coding: bounded memory for large images and long clips (released scheme).

Space: tiles of `tile_size` pixels (`tile_size / 8` latents) start every
`tile_size * (1 - overlap)` pixels; each tile is coded alone, then blended into its
upper and left neighbours with linear ramps over `overlap * tile` rows/columns of the
output and cropped to the stride. Time: chunks of `tile_frames` frames
(`(tile_frames - 1) / 4 + 1` latents) overlapping by one frame; every chunk after the
first drops its first output frame, which only repeats the previous chunk's last.
Released defaults: 512 px tiles, 25% overlap, 129-frame chunks.

Each tile is normalised (GroupNorm) on its own and sees zero padding at its borders, so
tiled output is close to, not equal to, untiled output; on inputs that fit one tile and
one chunk the two are identical. Measured on the random-weight test model
(tests/test_stvae_tiling.py): mean |tiled - untiled| ~0.15 for encoder means and ~0.03
for decoded pixels, against ~0.3 between the outputs of unrelated inputs.
`encode` and `decode` pick tiling by size (`tiled=None`) or by flag.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections

from lavin_jax.models import stvae


@functools.lru_cache(maxsize=8)
def _jitted(config: ml_collections.FrozenConfigDict, method: str):
  """One compiled `encode` / `decode` per config (and input shape) across calls."""
  return jax.jit(functools.partial(stvae.STVAE(config).apply, method=method))


def _apply(module, params, x, method):
  return _jitted(ml_collections.FrozenConfigDict(module.config), method)({"params": params}, x)


def _ramp(n, axis, ndim):
  """y / n for y in [0, n), shaped to broadcast along `axis`."""
  shape = [1] * ndim
  shape[axis] = n
  return (jnp.arange(n, dtype=jnp.float32) / n).reshape(shape)


def _blend(prev, tile, extent, axis):
  """Ramps the first `extent` entries of tile along axis from prev's last entries."""
  extent = min(prev.shape[axis], tile.shape[axis], extent)
  if extent == 0:
    return tile
  head = jax.lax.slice_in_dim(tile, 0, extent, axis=axis)
  prev_tail = jax.lax.slice_in_dim(prev, prev.shape[axis] - extent, prev.shape[axis], axis=axis)
  w = _ramp(extent, axis, tile.ndim)
  head = prev_tail * (1 - w) + head * w
  return jnp.concatenate([head, jax.lax.slice_in_dim(tile, extent, None, axis=axis)], axis=axis)


def tile_spatially(fn, x, tile, stride, out_tile, blend):
  """Applies fn to overlapping (tile x tile) windows of x (B, T, H, W, C) and blends.

  Args:
    fn: maps a window (B, T, h, w, C) to (B, T', h * s, w * s, C') for a fixed scale s.
    x: the input.
    tile, stride: window size and step, in input pixels.
    out_tile: window size in output pixels (tile * s).
    blend: ramp length in output pixels.

  Returns:
    The blended output, (B, T', H * s, W * s, C'). Tiles are blended in raster order
    against their already-blended upper and left neighbours, as released.
  """
  h, w = x.shape[2:4]
  keep = out_tile - blend
  rows = []
  for i in range(0, h, stride):
    row = []
    for j in range(0, w, stride):
      out = fn(x[:, :, i : i + tile, j : j + tile])
      if rows:
        out = _blend(rows[-1][len(row)], out, blend, axis=2)
      if row:
        out = _blend(row[-1], out, blend, axis=3)
      row.append(out)
    rows.append(row)
  return jnp.concatenate(
    [jnp.concatenate([t[:, :, :keep, :keep] for t in row], axis=3) for row in rows], axis=2
  )


def chunk_temporally(fn, x, chunk):
  """Applies fn to chunks of `chunk` frames overlapping by one; drops repeated frames.

  fn maps (B, 1 + n * r, ...) to (B, 1 + n * s, ...) for fixed ratios r -> s (one
  output frame per leading input frame).
  """
  t = x.shape[1]
  if t <= chunk:
    return fn(x)
  outs = []
  for start in range(0, t - 1, chunk - 1):
    out = fn(x[:, start : min(start + chunk, t)])
    outs.append(out if start == 0 else out[:, 1:])
  return jnp.concatenate(outs, axis=1)


def _settings(config, tile_size=None, overlap=None, tile_frames=None):
  """Validated (tile px, stride px, chunk frames), defaulting to the config's."""
  tile = config.tile_sample_size if tile_size is None else tile_size
  overlap = config.tile_overlap if overlap is None else overlap
  frames = config.tile_frames if tile_frames is None else tile_frames
  f, tc = stvae.spatial_factor(config), config.temporal_compression
  if tile <= 0 or tile % f:
    raise ValueError(f"tile_size must be a positive multiple of {f} pixels, got {tile}.")
  stride = int(tile * (1 - overlap))
  if not 0 <= overlap < 1 or stride % f or stride == 0:
    raise ValueError(
      f"overlap must be in [0, 1) with tile_size * (1 - overlap) a positive multiple of "
      f"{f}; got overlap {overlap} for tile_size {tile}."
    )
  if frames < 1 + tc or (frames - 1) % tc:
    raise ValueError(f"tile_frames must be 1 + {tc}k with k >= 1, got {frames}.")
  return tile, stride, frames


def tiled_encode(module, params, video, *, tile_size=None, overlap=None, tile_frames=None):
  """Tiled `encode`: video (B, 1 + 4k, H, W, 3) -> mean, logvar (B, 1 + k, H/8, W/8, 16).

  tile_size (pixels), overlap (fraction) and tile_frames default to the module config's
  tile_sample_size, tile_overlap and tile_frames.
  """
  config = module.config
  stvae.check_video(video, config)
  tile, stride, frames = _settings(config, tile_size, overlap, tile_frames)
  f = stvae.spatial_factor(config)

  def encode_tile(x):
    return jnp.concatenate(_apply(module, params, x, "encode"), axis=-1)

  def encode_chunk(x):
    return tile_spatially(encode_tile, x, tile, stride, tile // f, (tile - stride) // f)

  moments = chunk_temporally(encode_chunk, video, frames)
  mean, logvar = jnp.split(moments, 2, axis=-1)
  return mean, logvar


def tiled_decode(module, params, z, *, tile_size=None, overlap=None, tile_frames=None):
  """Tiled `decode`: z (B, T', h, w, 16) -> pixels (B, 1 + 4 (T' - 1), 8h, 8w, 3).

  tile_size (pixels), overlap and tile_frames are given in pixel space as for
  `tiled_encode` and default to the module config's.
  """
  config = module.config
  stvae.check_latents(z, config)
  tile, stride, frames = _settings(config, tile_size, overlap, tile_frames)
  f, tc = stvae.spatial_factor(config), config.temporal_compression

  def decode_tile(x):
    return _apply(module, params, x, "decode")

  def decode_chunk(x):
    return tile_spatially(decode_tile, x, tile // f, stride // f, tile, tile - stride)

  return chunk_temporally(decode_chunk, z, (frames - 1) // tc + 1)


def _needs_tiles(config, frames, height, width, tiling):
  tile, _, chunk = _settings(config, **tiling)
  return max(height, width) > tile or frames > chunk


def encode(module, params, video, *, tiled=None, **tiling):
  """`encode`, tiled when asked (tiled=True) or, by default, when video exceeds one tile.

  `tiling` takes tiled_encode's tile_size, overlap and tile_frames.
  """
  stvae.check_video(video, module.config)
  if tiled is None:
    tiled = _needs_tiles(module.config, *video.shape[1:4], tiling)
  if tiled:
    return tiled_encode(module, params, video, **tiling)
  return _apply(module, params, video, "encode")


def decode(module, params, z, *, tiled=None, **tiling):
  """`decode`, tiled when asked (tiled=True) or, by default, when output exceeds one tile."""
  config = module.config
  stvae.check_latents(z, config)
  if tiled is None:
    f, tc = stvae.spatial_factor(config), config.temporal_compression
    tiled = _needs_tiles(config, 1 + tc * (z.shape[1] - 1), z.shape[2] * f, z.shape[3] * f, tiling)
  if tiled:
    return tiled_decode(module, params, z, **tiling)
  return _apply(module, params, z, "decode")
