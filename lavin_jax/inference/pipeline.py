"""In-context inference: encode context pairs and queries, sample the answer, decode.

The computation follows the released inference: every context image (or clip) and the
query are encoded as separate clips by the ST-VAE (posterior sample by default), the
latents are normalised, the condition is [in_1, tgt_1, ..., in_K, tgt_K, query], the
answer is sampled from noise with classifier-free guidance against the null condition
[zero frame, query], and the ST-VAE decodes it. Time convention: `lavin_jax.flow`.

The parameters are put on the device(s) once, when the pipeline is made
(`lavin_jax.inference.placement`), and every call reuses them. Encoding returns the
posterior's moments, so pairs used by many queries (a template folder) are encoded
once: `sample` draws each example's posterior sample from the moments. Example b's
randomness (its posterior sample and its noise) comes from its own seed alone, so a
query gives the same answer alone or in any batch.

A J-DiT with independent_condition reads its context pairs the same way for any query:
`context_cache` computes one template's pairs (one posterior sample, drawn from a seed)
as a `SharedContext`, and `sample_on_context` samples any batch of queries on it,
computing only the queries' keys and values (`cached_sampling.sample_on_contexts`).
"""

from typing import Mapping, NamedTuple, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lavin_jax import convert
from lavin_jax import flow
from lavin_jax.configs import models as model_configs
from lavin_jax.configs import sampling as sampling_configs
from lavin_jax.inference import cached_sampling
from lavin_jax.inference import placement
from lavin_jax.io import bundle as bundle_lib
from lavin_jax.models import incontext
from lavin_jax.models import jdit as jdit_lib
from lavin_jax.models import stvae as stvae_lib
from lavin_jax.models import stvae_tiling
from lavin_jax.parallel import mesh as mesh_lib

SAMPLERS = sampling_configs.SAMPLERS
POSTERIORS = sampling_configs.POSTERIORS
_RELEASED = sampling_configs.released()
_MAX_SEED = 2**31


class Moments(NamedTuple):
  """The ST-VAE posterior of clips: mean and log-variance, (..., T', h, w, 16) each."""

  mean: jax.Array
  logvar: jax.Array


class SharedContext(NamedTuple):
  """A template's K pairs as the J-DiT's context caches, for any query (`context_cache`).

  caches: the condition's and the null condition's context `jdit.ConditionCache`, each
    with equal rows (as many as the mesh splits a batch into).
  clip_shape: (T', h, w) of the pairs' latents; the queries' must be the same.
  """

  caches: tuple
  clip_shape: tuple


def _check_clips(name: str, x: np.ndarray, ndim: int) -> None:
  if x.ndim != ndim or x.shape[-1] != 3:
    raise ValueError(
      f"{name} must have shape {'(B, K, T, H, W, 3)' if ndim == 6 else '(B, T, H, W, 3)'}"
      f" (channels-last RGB in [-1, 1]); got {x.shape}."
    )


def check_clip_shape(frames: int, height: int, width: int, multiple: int) -> None:
  """Raises unless the model takes clips of this many frames and this size."""
  if height % multiple or width % multiple:
    raise ValueError(
      f"height and width must be multiples of {multiple} (the ST-VAE's "
      f"downsampling times J-DiT's patch size); got {height}x{width}. Resize or "
      "crop the images."
    )
  if (frames - 1) % 4:
    raise ValueError(f"clips must have 1 + 4k frames (1 for an image); got {frames}.")


def validate_inputs(context_inputs, context_targets, query, multiple: int) -> None:
  """Shape checks done on host before anything is compiled; sides are `multiple`s."""
  _check_clips("context_inputs", context_inputs, 6)
  _check_clips("context_targets", context_targets, 6)
  _check_clips("query", query, 5)
  if context_inputs.shape != context_targets.shape:
    raise ValueError(
      "context_inputs and context_targets must have the same shape; got "
      f"{context_inputs.shape} and {context_targets.shape}."
    )
  if context_inputs.shape[0] != query.shape[0] or context_inputs.shape[2:] != query.shape[1:]:
    raise ValueError(
      "each query needs its context pairs with the same frames and size: "
      f"context {context_inputs.shape} vs query {query.shape}; expected context "
      "(B, K) + query.shape[1:]."
    )
  if context_inputs.shape[1] < 1:
    raise ValueError("at least one context pair is needed (K >= 1).")
  check_clip_shape(*query.shape[1:4], multiple)


def check_sampling(
  num_steps: int,
  cfg_scale: float,
  sampler: str,
  posterior: str,
  kv_refresh: int = 1,
  flag_prefix: str = "",
  independent_condition: bool = False,
) -> None:
  """Raises ValueError on sampler settings that cannot run (`flag_prefix` names them);
  `independent_condition`: the J-DiT's, which samples on its exact cache."""
  if kv_refresh < 1 or (kv_refresh > 1 and sampler != "euler"):
    raise ValueError(
      f"{flag_prefix}kv_refresh must be >= 1, and 1 unless the sampler is euler; got "
      f"{kv_refresh} with {sampler}."
    )
  if kv_refresh > 1 and independent_condition:
    raise ValueError(
      f"{flag_prefix}kv_refresh > 1 approximates the released model's condition; this "
      "J-DiT has independent_condition and samples on its exact cache: leave kv_refresh at 1."
    )
  if sampler not in SAMPLERS:
    raise ValueError(f"unknown {flag_prefix}sampler {sampler!r}; choose one of {SAMPLERS}.")
  if posterior not in POSTERIORS:
    raise ValueError(f"unknown {flag_prefix}posterior {posterior!r}; choose one of {POSTERIORS}.")
  if not np.isfinite(cfg_scale):
    raise ValueError(f"{flag_prefix}cfg_scale must be a finite number; got {cfg_scale}.")
  if num_steps < 2:
    raise ValueError(
      f"{flag_prefix}num_steps counts time-grid points and must be >= 2; got {num_steps}."
    )


def example_seeds(seed: Union[int, Sequence[int]], batch: int) -> np.ndarray:
  """Per-example seeds: an int gives seed, seed + 1, ...; a sequence is taken as is."""
  seeds = seed + np.arange(batch) if np.ndim(seed) == 0 else np.asarray(seed)
  if seeds.shape != (batch,) or seeds.min() < 0 or seeds.max() >= _MAX_SEED:
    raise ValueError(
      f"seeds must be {batch} integers in [0, 2**31) (or one int); got {np.ravel(seed)[:8]}."
    )
  return seeds.astype(np.int32)


def with_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A bundle's {'jdit', 'stvae'} config with the J-DiT settings it predates at defaults."""
  defaults = model_configs.jdit()
  for key in defaults:
    if key not in config.jdit:
      config.jdit[key] = defaults[key]
  return config


def _pad_rows(tree, size: int):
  """Pads every leaf's leading axis to `size` with copies of its last row."""
  return jax.tree.map(
    lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], size - x.shape[0], axis=0)]), tree
  )


class Pipeline:
  """ST-VAE + J-DiT in-context predictor with device-resident parameters.

  Usage:
    pipe = Pipeline.from_bundle("bundle_dir")
    pred = pipe(context_inputs, context_targets, query, seed=0)  # (B, T, H, W, 3)

  mesh_axes (e.g. {'data': 2, 'tensor': 4}) places the model on that mesh of the local
  devices; None lets `placement.choose_mesh` decide by the parameters' size. The J-DiT
  runs with its layers unrolled (`jdit.unrolled`), whichever layout its params come in.
  """

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    jdit_params,
    stvae_params,
    mesh_axes: Optional[Mapping[str, int]] = None,
  ):
    config = config.copy_and_resolve_references()
    config.jdit, jdit_params = jdit_lib.unrolled(config.jdit, jdit_params)
    self.config = config
    self.jdit = jdit_lib.JDiT(config.jdit)
    self.vae = stvae_lib.STVAE(config.stvae)
    self.mesh = placement.choose_mesh(
      placement.tree_bytes(jdit_params, stvae_params), config.jdit.num_kv_heads, mesh_axes
    )
    latent = jnp.zeros((1, 1, 2, 2, config.jdit.in_channels))
    self.jdit_params = placement.put(
      jdit_params, placement.logical(self.jdit, self.mesh, latent, jnp.zeros(1), latent)
    )
    self.stvae_params = placement.put(stvae_params, placement.replicated(self.mesh, stvae_params))
    exact = self.independent_condition
    make = cached_sampling.make_exact_sampler if exact else flow.make_guided_sampler
    self._samplers = {name: make(self.jdit, name) for name in SAMPLERS}
    self._sample = jax.jit(self._sample_fn, static_argnames=("sampler", "posterior", "kv_refresh"))
    self._context = jax.jit(self._context_fn, static_argnames=("posterior",))
    self._sample_shared = jax.jit(self._shared_fn, static_argnames=("sampler", "posterior"))

  @classmethod
  def from_bundle(cls, path: str, attention: Optional[str] = None, mesh_axes=None) -> "Pipeline":
    """Loads an inference bundle (`lavin_jax.io.bundle`); `attention` overrides its
    J-DiT's attention implementation."""
    config, params = bundle_lib.load_bundle(path)
    config = with_defaults(config)
    if attention:
      config.jdit.attention_impl = attention
    return cls(config, params.pop("jdit"), params.pop("stvae"), mesh_axes)

  @classmethod
  def from_released(
    cls,
    vae_path: str,
    dit_path: str,
    jdit_config: Optional[ml_collections.ConfigDict] = None,
    stvae_config: Optional[ml_collections.ConfigDict] = None,
    mesh_axes=None,
  ) -> "Pipeline":
    """Loads the released `stvae.pt` and `lavin_dit.safetensors` (3.4B by default)."""
    jdit_config = jdit_config or model_configs.jdit("3.4b")
    stvae_config = stvae_config or model_configs.stvae("released")
    jdit_module, jdit_params = convert.load_released_jdit(dit_path, jdit_config)
    vae_module, stvae_params = convert.load_released_stvae(vae_path, stvae_config)
    config = ml_collections.ConfigDict({"jdit": jdit_module.config, "stvae": vae_module.config})
    return cls(config, jdit_params, stvae_params, mesh_axes)

  @property
  def pixel_multiple(self) -> int:
    """Image sides must be multiples of this (ST-VAE factor x J-DiT patch size)."""
    return model_configs.pixel_multiple(self.config.stvae, self.config.jdit)

  # ---------------------------------------------------------------- latent coding

  def encode(self, clips) -> Moments:
    """(N, T, H, W, 3) pixels -> the posterior Moments, (N, T', h, w, 16) each."""
    return Moments(*stvae_tiling.encode(self.vae, self.stvae_params, jnp.asarray(clips)))

  def normalize(self, z: jax.Array) -> jax.Array:
    """ST-VAE latents -> the normalised latents J-DiT reads."""
    return stvae_lib.normalize_latents(z, self.config.stvae)

  def decode(self, z: jax.Array) -> jax.Array:
    """(N, T', h, w, 16) normalised latents -> (N, T, H, W, 3) pixels in [-1, 1]."""
    z = stvae_lib.denormalize_latents(z, self.config.stvae)
    return jnp.clip(stvae_tiling.decode(self.vae, self.stvae_params, z), -1.0, 1.0)

  # ---------------------------------------------------------------- sampling

  def _draw(self, clips: Moments, seed, posterior):
    """One example's clips (N, T', h, w, 16) -> (their normalised latents, its noise).

    The posterior sample (or its mean) comes from the seed's first key, the noise
    (T', h, w, 16) from its second.
    """
    key_encode, key_noise = jax.random.split(jax.random.key(seed))
    z = clips.mean
    if posterior == "sample":
      z = stvae_lib.sample_posterior(clips.mean, clips.logvar, key_encode)
    return self.normalize(z), jax.random.normal(key_noise, clips.mean.shape[1:], jnp.float32)

  def _sample_fn(
    self,
    jdit_params,
    ctx_in,
    ctx_tgt,
    query,
    seeds,
    grid,
    cfg_scale,
    *,
    sampler,
    posterior,
    kv_refresh,
  ):
    """Jitted: each example's posterior sample and noise from its seed, then the sampler."""
    num_pairs = ctx_in.mean.shape[1]

    def draw(ctx_in, ctx_tgt, query, seed):  # one example
      packed = jax.tree.map(
        lambda i, t, q: jnp.concatenate([i, t, q[None]]), ctx_in, ctx_tgt, query
      )  # [in_1 .. in_K, tgt_1 .. tgt_K, query], as one call of the released code
      z, noise = self._draw(packed, seed, posterior)
      return z[:num_pairs], z[num_pairs:-1], z[-1], noise

    ins, tgts, query_z, noise = jax.vmap(draw)(ctx_in, ctx_tgt, query, seeds)
    cond = incontext.full_condition(ins, tgts, query_z)
    sample_fn = self._samplers[sampler]
    if kv_refresh > 1:
      sample_fn = cached_sampling.make_approximate_sampler(self.jdit, kv_refresh)
    return sample_fn(jdit_params, noise, cond, jdit_lib.null_condition(query_z), grid, cfg_scale)

  def _context_fn(self, jdit_params, ctx_in, ctx_tgt, seed, *, posterior):
    """Jitted: the SharedContext caches of K pairs (K, T', h, w, 16), one draw from seed."""
    num_pairs, frames = ctx_in.mean.shape[:2]
    packed = jax.tree.map(lambda i, t: jnp.concatenate([i, t]), ctx_in, ctx_tgt)
    z, _ = self._draw(packed, seed, posterior)  # (2K, T', h, w, 16)
    rows = placement.batch_multiple(self.mesh)
    ins, tgts = (jnp.broadcast_to(p, (rows,) + p.shape) for p in (z[:num_pairs], z[num_pairs:]))
    query = jnp.zeros_like(ins[:, 0])  # a stand-in: split_condition cuts the query off
    return tuple(
      cached_sampling.split_condition(self.jdit, jdit_params, cond, frames)[0]
      for cond in (incontext.full_condition(ins, tgts, query), jdit_lib.null_condition(query))
    )

  def _shared_fn(self, jdit_params, caches, query, seeds, grid, cfg_scale, *, sampler, posterior):
    """Jitted: each query's posterior sample and noise from its seed, sampled on `caches`."""

    def draw(query, seed):  # one example
      z, noise = self._draw(jax.tree.map(lambda q: q[None], query), seed, posterior)
      return z[0], noise

    query_z, noise = jax.vmap(draw)(query, seeds)
    conditions = [(cached_sampling.broadcast_cache(c, len(seeds)), query_z) for c in caches]
    return cached_sampling.sample_on_contexts(
      self.jdit, sampler, jdit_params, noise, conditions, grid, cfg_scale
    )

  @property
  def independent_condition(self) -> bool:
    """Whether the J-DiT's condition ignores the target and the time (exact caches)."""
    return jdit_lib.independent_condition(self.config.jdit)

  def validate_sampling(
    self,
    num_steps: int = _RELEASED.num_steps,
    cfg_scale: float = _RELEASED.cfg_scale,
    sampler: str = _RELEASED.sampler,
    posterior: str = _RELEASED.posterior,
    kv_refresh: int = _RELEASED.kv_refresh,
  ) -> None:
    """Raises ValueError on sampler settings this model cannot run (`check_sampling`)."""
    check_sampling(
      num_steps,
      cfg_scale,
      sampler,
      posterior,
      kv_refresh,
      independent_condition=self.independent_condition,
    )

  def _run(self, fn, fixed, rows, seed, num_steps, cfg_scale, **static):
    """fn(params, *fixed, *rows, seeds, grid, cfg_scale) on rows padded for the mesh."""
    batch = rows[-1].mean.shape[0]
    seeds = example_seeds(seed, batch)
    multiple = placement.batch_multiple(self.mesh)
    args = _pad_rows((*rows, jnp.asarray(seeds)), -(-batch // multiple) * multiple)
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(mesh_lib.AXIS_RULES):
      latents = fn(
        self.jdit_params,
        *fixed,
        *args,
        jnp.asarray(flow.time_grid(num_steps), jnp.float32),
        jnp.float32(cfg_scale),
        **static,
      )
    return latents[:batch]

  def sample(
    self,
    context_inputs: Moments,
    context_targets: Moments,
    query: Moments,
    *,
    seed: Union[int, Sequence[int]] = 0,
    num_steps: int = _RELEASED.num_steps,
    cfg_scale: float = _RELEASED.cfg_scale,
    sampler: str = _RELEASED.sampler,
    posterior: str = _RELEASED.posterior,
    kv_refresh: int = _RELEASED.kv_refresh,
  ) -> jax.Array:
    """Samples each query's answer latents (B, T', h, w, 16) from encoded clips.

    Args:
      context_inputs, context_targets: Moments (B, K, T', h, w, 16) of each query's pairs.
      query: Moments (B, T', h, w, 16).
      seed: one int (example b gets seed + b) or B ints.
      kv_refresh: k > 1 recomputes the condition's keys and values every k-th step only
        (`cached_sampling`, approximate; released-layout models). A J-DiT with
        independent_condition always samples on its exact condition cache.
    """
    self.validate_sampling(num_steps, cfg_scale, sampler, posterior, kv_refresh)
    return self._run(
      self._sample,
      (),
      (context_inputs, context_targets, query),
      seed,
      num_steps,
      cfg_scale,
      sampler=sampler,
      posterior=posterior,
      kv_refresh=kv_refresh,
    )

  def _check_shared(self) -> None:
    if not self.independent_condition:
      raise ValueError(
        "a shared context needs a J-DiT with independent_condition (the released layout's "
        "condition changes with the target and the time): sample with `sample` instead."
      )

  def context_cache(
    self,
    context_inputs: Moments,
    context_targets: Moments,
    *,
    seed: int = 0,
    posterior: str = _RELEASED.posterior,
  ) -> SharedContext:
    """One template's pairs as a SharedContext, computed once for `sample_on_context`.

    Args:
      context_inputs, context_targets: Moments (K, T', h, w, 16) of the pairs.
      seed: the pairs' posterior sample is drawn from it once, as `sample` draws an
        example's from its seed.
    """
    self._check_shared()
    if posterior not in POSTERIORS:
      raise ValueError(f"unknown posterior {posterior!r}; choose one of {POSTERIORS}.")
    example_seeds(seed, 1)
    shapes = [np.shape(m) for c in (context_inputs, context_targets) for m in c]
    if len(set(shapes)) != 1 or len(shapes[0]) != 5 or shapes[0][0] < 1:
      raise ValueError(
        "a shared context takes one template's K >= 1 pairs: input and target Moments of "
        f"one shape (K, T', h, w, 16); got {shapes}."
      )
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(mesh_lib.AXIS_RULES):
      caches = self._context(
        self.jdit_params, context_inputs, context_targets, jnp.int32(seed), posterior=posterior
      )
    return SharedContext(caches, shapes[0][1:4])

  def sample_on_context(
    self,
    context: SharedContext,
    query: Moments,
    *,
    seed: Union[int, Sequence[int]] = 0,
    num_steps: int = _RELEASED.num_steps,
    cfg_scale: float = _RELEASED.cfg_scale,
    sampler: str = _RELEASED.sampler,
    posterior: str = _RELEASED.posterior,
    kv_refresh: int = _RELEASED.kv_refresh,
  ) -> jax.Array:
    """Samples each query's answer latents (B, T', h, w, 16) on a template's SharedContext.

    As `sample` with the context's pairs for every query, except that their posterior
    sample is the context's one draw; only the queries' keys and values are computed.
    Args as `sample`; query: Moments (B, T', h, w, 16) of the context's clip shape.
    """
    self._check_shared()
    self.validate_sampling(num_steps, cfg_scale, sampler, posterior, kv_refresh)
    if tuple(query.mean.shape[1:4]) != tuple(context.clip_shape):
      raise ValueError(
        f"the queries' latents {query.mean.shape} do not fit the shared context's pairs "
        f"(T', h, w) = {tuple(context.clip_shape)}: give queries of the pairs' frames and size."
      )
    return self._run(
      self._sample_shared,
      (context.caches,),
      (query,),
      seed,
      num_steps,
      cfg_scale,
      sampler=sampler,
      posterior=posterior,
    )

  def __call__(
    self,
    context_inputs,
    context_targets,
    query,
    *,
    seed: Union[int, Sequence[int]] = 0,
    num_steps: int = _RELEASED.num_steps,
    cfg_scale: float = _RELEASED.cfg_scale,
    sampler: str = _RELEASED.sampler,
    posterior: str = _RELEASED.posterior,
    kv_refresh: int = _RELEASED.kv_refresh,
  ) -> np.ndarray:
    """Predicts each query's target from its context pairs.

    Args:
      context_inputs, context_targets: (B, K, T, H, W, 3), or (K, T, H, W, 3) shared by
        all queries (then encoded once); pixels in [-1, 1].
      query: (B, T, H, W, 3) or (T, H, W, 3).
      seed: one int (example b gets seed + b) or B ints.
    Returns:
      (B, T, H, W, 3) float32 predictions in [-1, 1].
    """
    query = np.asarray(query, np.float32)
    if query.ndim == 4:
      query = query[None]
    shared = np.ndim(context_inputs) == 5
    context_inputs, context_targets = (
      np.asarray(c, np.float32)[None] if shared else np.asarray(c, np.float32)
      for c in (context_inputs, context_targets)
    )
    validate_inputs(
      *(
        np.broadcast_to(c, (query.shape[0],) + c.shape[1:])
        for c in (context_inputs, context_targets)
      ),
      query,
      self.pixel_multiple,
    )
    self.validate_sampling(num_steps, cfg_scale, sampler, posterior, kv_refresh)
    seeds = example_seeds(seed, query.shape[0])

    batch, num_pairs = context_inputs.shape[:2]
    clips = incontext.pack_clips(
      jnp.asarray(context_inputs), jnp.asarray(context_targets), jnp.asarray(query)
    )
    moments = self.encode(clips)  # one ST-VAE call for every clip
    parts = [incontext.unpack_clips(m, batch, num_pairs) for m in moments]
    ins, tgts = (
      Moments(*(jnp.broadcast_to(p[i], (query.shape[0],) + p[i].shape[1:]) for p in parts))
      for i in (0, 1)
    )
    query_moments = Moments(*(jnp.concatenate(p[2]) for p in parts))
    latents = self.sample(
      ins,
      tgts,
      query_moments,
      seed=seeds,
      num_steps=num_steps,
      cfg_scale=cfg_scale,
      sampler=sampler,
      posterior=posterior,
      kv_refresh=kv_refresh,
    )
    return np.asarray(self.decode(latents))
