"""In-context inference: encode context pairs and queries, sample the answer, decode.

The computation follows the released inference: every context image (or clip) and the
query are encoded as separate clips by the ST-VAE (posterior sample by default), the
latents are normalised, the condition is [in_1, tgt_1, ..., in_K, tgt_K, query], the
answer is sampled from noise with classifier-free guidance against the null condition
[zero frame, query], and the ST-VAE decodes it. Time convention: `lavin_jax.flow`.
"""

from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lavin_jax import convert
from lavin_jax import flow
from lavin_jax.configs import models as model_configs
from lavin_jax.configs import sampling as sampling_configs
from lavin_jax.io import bundle as bundle_lib
from lavin_jax.models import incontext
from lavin_jax.models import jdit as jdit_lib
from lavin_jax.models import stvae as stvae_lib
from lavin_jax.models import stvae_tiling

SAMPLERS = sampling_configs.SAMPLERS
POSTERIORS = sampling_configs.POSTERIORS
_RELEASED = sampling_configs.released()


def _check_clips(name: str, x: np.ndarray, ndim: int) -> None:
  if x.ndim != ndim or x.shape[-1] != 3:
    raise ValueError(
      f"{name} must have shape {'(B, K, T, H, W, 3)' if ndim == 6 else '(B, T, H, W, 3)'}"
      f" (channels-last RGB in [-1, 1]); got {x.shape}."
    )


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
  frames, height, width = query.shape[1:4]
  if height % multiple or width % multiple:
    raise ValueError(
      f"height and width must be multiples of {multiple} (the ST-VAE's "
      f"downsampling times J-DiT's patch size); got {height}x{width}. Resize or "
      "crop the images."
    )
  if (frames - 1) % 4:
    raise ValueError(f"clips must have 1 + 4k frames (1 for an image); got {frames}.")


class Pipeline:
  """ST-VAE + J-DiT in-context predictor.

  Usage:
    pipe = Pipeline.from_bundle("bundle_dir")
    pred = pipe(context_inputs, context_targets, query, seed=0)  # (B, T, H, W, 3)
  """

  def __init__(self, config: ml_collections.ConfigDict, jdit_params, stvae_params):
    self.config = config
    self.jdit = jdit_lib.JDiT(config.jdit)
    self.vae = stvae_lib.STVAE(config.stvae)
    self.jdit_params = jdit_params
    self.stvae_params = stvae_params
    self._samplers = {name: flow.make_guided_sampler(self.jdit, name) for name in SAMPLERS}

  @classmethod
  def from_bundle(cls, path: str) -> "Pipeline":
    """Loads an inference bundle written by `lavin_jax.io.bundle.save_bundle`."""
    config, params = bundle_lib.load_bundle(path)
    return cls(config, params["jdit"], params["stvae"])

  @classmethod
  def from_released(
    cls,
    vae_path: str,
    dit_path: str,
    jdit_config: Optional[ml_collections.ConfigDict] = None,
    stvae_config: Optional[ml_collections.ConfigDict] = None,
  ) -> "Pipeline":
    """Loads the released `stvae.pt` and `lavin_dit.safetensors` (3.4B by default)."""
    jdit_config = jdit_config or model_configs.jdit("3.4b")
    stvae_config = stvae_config or model_configs.stvae("released")
    jdit_module, jdit_params = convert.load_released_jdit(dit_path, jdit_config)
    vae_module, stvae_params = convert.load_released_stvae(vae_path, stvae_config)
    config = ml_collections.ConfigDict({"jdit": jdit_module.config, "stvae": vae_module.config})
    return cls(config, jdit_params, stvae_params)

  @property
  def pixel_multiple(self) -> int:
    """Image sides must be multiples of this (ST-VAE factor x J-DiT patch size)."""
    return model_configs.pixel_multiple(self.config.stvae, self.config.jdit)

  # ---------------------------------------------------------------- latent coding

  def encode(self, clips: jax.Array, key: Optional[jax.Array]) -> jax.Array:
    """(N, T, H, W, 3) pixels -> (N, T', h, w, 16) normalised latents (sample or mean)."""
    mean, logvar = stvae_tiling.encode(self.vae, self.stvae_params, clips)
    z = mean if key is None else stvae_lib.sample_posterior(mean, logvar, key)
    return stvae_lib.normalize_latents(z, self.config.stvae)

  def decode(self, z: jax.Array) -> jax.Array:
    """(N, T', h, w, 16) normalised latents -> (N, T, H, W, 3) pixels in [-1, 1]."""
    z = stvae_lib.denormalize_latents(z, self.config.stvae)
    return jnp.clip(stvae_tiling.decode(self.vae, self.stvae_params, z), -1.0, 1.0)

  # ---------------------------------------------------------------- sampling

  def sample_latents(
    self,
    cond,
    noise,
    *,
    cfg_scale: float = _RELEASED.cfg_scale,
    num_steps: int = _RELEASED.num_steps,
    sampler: str = _RELEASED.sampler,
  ) -> jax.Array:
    """Integrates the guided velocity from noise (t = 0) to data (t = 1) in one jit.

    cond: (B, Tc, h, w, 16), ending with the query's latent frames; noise: (B, Tx, h, w, 16).
    """
    query = cond[:, -noise.shape[1] :]
    return self._samplers[sampler](
      self.jdit_params,
      noise,
      cond,
      jdit_lib.null_condition(query),
      jnp.asarray(flow.time_grid(num_steps), jnp.float32),
      jnp.float32(cfg_scale),
    )

  def __call__(
    self,
    context_inputs,
    context_targets,
    query,
    *,
    seed: int = 0,
    num_steps: int = _RELEASED.num_steps,
    cfg_scale: float = _RELEASED.cfg_scale,
    sampler: str = _RELEASED.sampler,
    posterior: str = _RELEASED.posterior,
  ) -> np.ndarray:
    """Predicts each query's target from its context pairs.

    Args:
      context_inputs, context_targets: (B, K, T, H, W, 3) or (K, T, H, W, 3) shared by
        all queries; pixels in [-1, 1].
      query: (B, T, H, W, 3) or (T, H, W, 3).
    Returns:
      (B, T, H, W, 3) float32 predictions in [-1, 1].
    """
    query = np.asarray(query, np.float32)
    if query.ndim == 4:
      query = query[None]
    context_inputs, context_targets = (
      np.broadcast_to(np.asarray(c, np.float32), (query.shape[0],) + np.shape(c))
      if np.ndim(c) == 5
      else np.asarray(c, np.float32)
      for c in (context_inputs, context_targets)
    )
    validate_inputs(context_inputs, context_targets, query, self.pixel_multiple)
    if sampler not in SAMPLERS:
      raise ValueError(f"unknown sampler {sampler!r}; choose one of {sorted(SAMPLERS)}.")
    if posterior not in POSTERIORS:
      raise ValueError(f"unknown posterior mode {posterior!r}; choose one of {POSTERIORS}.")
    if not np.isfinite(cfg_scale):
      raise ValueError(f"cfg_scale must be a finite number; got {cfg_scale}.")
    if num_steps < 2:
      raise ValueError(f"num_steps counts time-grid points and must be >= 2; got {num_steps}.")

    batch, num_pairs = context_inputs.shape[:2]
    clips = incontext.pack_clips(
      jnp.asarray(context_inputs), jnp.asarray(context_targets), jnp.asarray(query)
    )
    key_encode, key_noise = jax.random.split(jax.random.key(seed))
    z = self.encode(clips, key_encode if posterior == "sample" else None)
    ins, tgts, (query_z,) = incontext.unpack_clips(z, batch, num_pairs)
    cond = incontext.full_condition(ins, tgts, query_z)
    noise = jax.random.normal(key_noise, query_z.shape, jnp.float32)
    latents = self.sample_latents(
      cond, noise, cfg_scale=cfg_scale, num_steps=num_steps, sampler=sampler
    )
    return np.asarray(self.decode(latents))
