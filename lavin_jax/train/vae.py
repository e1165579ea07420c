"""ST-VAE training: reconstruction MSE + KL, optional LPIPS and PatchGAN hinge terms.

The paper trains the ST-VAE with MSE, perceptual (LPIPS), adversarial and KL losses and
publishes no weights for them: every weight is a config value (`lavin_jax.configs.
train_vae`). The perceptual term needs the LPIPS weight files (lavin_jax.eval.lpips);
the adversarial term starts at `disc_start` and trains a PatchGAN discriminator
(lavin_jax.models.discriminator) with its own AdamW.

  config = lavin_jax.configs.train_vae.get_config("small")
  params = train(config, workdir, source)   # resumes from workdir/checkpoints
"""

import functools
import os

import flax.linen as nn
from flax import struct
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from lavin_jax.configs import models as model_configs
from lavin_jax.data import specs
from lavin_jax.io import bundle
from lavin_jax.io import pixels as pixels_lib
from lavin_jax.data import episodes
from lavin_jax.models import discriminator as disc_lib
from lavin_jax.models import stvae
from lavin_jax.train import checkpoint
from lavin_jax.train import loop
from lavin_jax.train import state as state_lib


class VAEState(struct.PyTreeNode):
  step: jax.Array
  params: dict
  opt_state: optax.OptState
  disc_params: dict  # {} without the adversarial term
  disc_opt_state: optax.OptState
  rng: jax.Array


# ---------------------------------------------------------------------------------------
# Input: random square crops of the source's stills or clips, as (B, T, H, W, 3) pixels.


class _Crop(grain.transforms.RandomMap):

  def __init__(self, source, resolution):
    self.source, self.resolution = source, resolution

  def random_map(self, index, rng):
    example = episodes.fit_example(self.source[int(index)], self.resolution, rng)
    pixels = example["video"] if "video" in example else example["image"][None]
    return pixels_lib.to_float(pixels)


def make_input(source, config) -> grain.DatasetIterator:
  """A checkpointable iterator of pixel batches (B, T, H, W, 3) in [-1, 1]."""
  if len(source) < 1:
    raise ValueError("The ST-VAE training source is empty.")
  episodes.fit_example(source[0], config.resolution)  # size errors before training
  ds = grain.MapDataset.range(len(source)).seed(config.seed).shuffle().repeat()
  ds = ds.random_map(_Crop(source, config.resolution)).batch(config.batch_size)
  return iter(ds.to_iter_dataset())


# ---------------------------------------------------------------------------------------
# Losses.


def hinge_discriminator_loss(real_logits, fake_logits):
  return jnp.mean(jax.nn.relu(1.0 - real_logits)) + jnp.mean(jax.nn.relu(1.0 + fake_logits))


def vae_loss(params, disc_params, video, key, step, *, model, disc, lpips, config):
  """(loss, (metrics, reconstruction)) of the ST-VAE on pixels (B, T, H, W, 3)."""
  recon, mean, logvar = model.apply({"params": params}, video, key)
  mse = jnp.mean(jnp.square(recon - video))
  kl = jnp.mean(stvae.kl_divergence(mean, logvar))
  loss = mse + config.kl_weight * kl
  metrics = {"mse": mse, "kl": kl}
  if lpips is not None:
    module, lpips_params = lpips
    frames = lambda x: x.reshape((-1,) + x.shape[2:])
    perceptual = jnp.mean(module.apply({"params": lpips_params}, frames(recon), frames(video)))
    loss += config.lpips_weight * perceptual
    metrics["lpips"] = perceptual
  if disc is not None:
    generator = -jnp.mean(disc.apply({"params": disc_params}, recon))
    loss += jnp.where(step >= config.disc_start, config.adv_weight, 0.0) * generator
    metrics["generator"] = generator
  metrics["loss"] = loss
  return loss, (metrics, recon)


def train_step(state, video, *, model, disc, lpips, tx, disc_tx, config):
  """One update of the ST-VAE (and of the discriminator once it has started)."""
  key = jax.random.fold_in(state.rng, state.step)
  loss_fn = functools.partial(vae_loss, model=model, disc=disc, lpips=lpips, config=config)
  (_, (metrics, recon)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params, state.disc_params, video, key, state.step)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics["grad_norm"] = optax.tree.norm(grads)
  disc_params, disc_opt_state = state.disc_params, state.disc_opt_state
  if disc is not None:
    fake = jax.lax.stop_gradient(recon)

    def disc_loss_fn(p):
      return hinge_discriminator_loss(disc.apply({"params": p}, video),
                                      disc.apply({"params": p}, fake))

    d_loss, d_grads = jax.value_and_grad(disc_loss_fn)(disc_params)
    d_updates, new_disc_opt = disc_tx.update(d_grads, disc_opt_state, disc_params)
    started = state.step >= config.disc_start
    disc_params = jax.tree.map(lambda new, old: jnp.where(started, new, old),
                               optax.apply_updates(disc_params, d_updates), disc_params)
    disc_opt_state = jax.tree.map(lambda new, old: jnp.where(started, new, old),
                                  new_disc_opt, disc_opt_state)
    metrics["disc_loss"] = d_loss
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                            disc_params=disc_params, disc_opt_state=disc_opt_state)
  return new_state, metrics


# ---------------------------------------------------------------------------------------
# The trainer.


def init_state(model, disc, tx, disc_tx, config, video_shape):
  """A fresh VAEState for clips of `video_shape` (B, T, H, W, 3), built in one jit."""

  def init(rng):
    k_vae, k_disc, k_state = jax.random.split(rng, 3)
    video = jnp.zeros((1,) + tuple(video_shape[1:]), jnp.float32)
    params = nn.unbox(model.init(k_vae, video)["params"])
    disc_params = nn.unbox(disc.init(k_disc, video)["params"]) if disc is not None else {}
    return VAEState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    disc_params=disc_params,
                    disc_opt_state=disc_tx.init(disc_params) if disc is not None else {},
                    rng=k_state)

  return jax.jit(init)(jax.random.PRNGKey(config.seed))


def check_config(config) -> None:
  factor = model_configs.spatial_factor(config.model)
  if config.resolution <= 0 or config.resolution % factor:
    raise ValueError(f"config.resolution must be a positive multiple of {factor} (the ST-VAE's "
                     f"downsampling), got {config.resolution}.")
  for name in ("total_steps", "batch_size", "checkpoint_every", "log_every"):
    if config[name] < 1:
      raise ValueError(f"config.{name} must be >= 1, got {config[name]}.")
  if config.lpips_weight > 0 and not (config.lpips_vgg and config.lpips_lin):
    raise ValueError("lpips_weight > 0 needs config.lpips_vgg and config.lpips_lin (the "
                     "LPIPS weight files; see lavin_jax.eval.lpips).")


def train(config: ml_collections.ConfigDict, workdir: str, source) -> dict:
  """Trains the ST-VAE on `source` (lavin_jax.data.sources schema); returns its params.

  Checkpoints (state and data position) go to workdir/checkpoints and a run resumes
  from the latest; metrics to workdir/metrics.jsonl.
  """
  check_config(config)
  os.makedirs(workdir, exist_ok=True)
  it = make_input(source, config)
  model = stvae.STVAE(config.model)
  disc = disc_lib.PatchDiscriminator(config.disc_channels) if config.adv_weight > 0 else None
  lpips = None
  if config.lpips_weight > 0:
    from lavin_jax.eval import lpips as lpips_lib  # pylint: disable=g-import-not-at-top
    lpips = lpips_lib.load_lpips(config.lpips_vgg, config.lpips_lin)
  tx, _ = state_lib.create_optimizer(config.optimizer)  # the discriminator's too
  shape = (config.batch_size, 1, config.resolution, config.resolution, 3)
  state = init_state(model, disc, tx, tx, config, shape)
  step_fn = jax.jit(functools.partial(train_step, model=model, disc=disc, lpips=lpips, tx=tx,
                                      disc_tx=tx, config=config), donate_argnums=(0,))

  ckpt = checkpoint.CheckpointManager(os.path.join(workdir, "checkpoints"),
                                      save_every=config.checkpoint_every, keep=2)
  with ckpt:
    if ckpt.latest_step() is not None:
      state, _ = ckpt.restore(state, data_iterator=it)
    state = loop.run(step_fn, state, (jnp.asarray(video) for video in it), ckpt=ckpt,
                     total_steps=config.total_steps, log_every=config.log_every,
                     workdir=workdir, config=config, data_iterator=it, desc="train ST-VAE")
  return jax.device_get(state.params)


def train_and_export(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Trains on `config.source` (a lavin_jax.data.specs spec); writes <workdir>/bundle."""
  params = train(config, workdir, specs.get_source(config.source))
  out = os.path.join(workdir, "bundle")
  bundle.save_bundle(out, ml_collections.ConfigDict({"stvae": config.model}),
                     stvae_params=params)
  return out
