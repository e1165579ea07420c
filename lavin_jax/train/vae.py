"""ST-VAE training, sharded over devices and hosts, in the paper's two stages.

Read top to bottom, like dit.py: state, loss, update step, sharded init, checks, then
`train(config, workdir)`: sources, mesh, model, shard, checkpoint, loop, report.

The loss of pixels x (B, T, H, W, 3) and r, the decoding of a posterior sample:
  rec  = mse_weight * mean (r - x)^2 + l1_weight * mean |r - x|
         + lpips_weight * mean LPIPS(r, x)                        (LPIPS per frame)
  kl   = mean over clips of KL(q(z | x) || N(0, I)), summed over the latent
  gan  = -mean D(r)                                               (hinge generator term)
  loss = rec + kl_weight * kl + lambda * gan
  lambda = adv_weight * [step >= disc_start]
           * clip(|d rec / dW| / (|d gan / dW| + adaptive_eps), 0, adaptive_max)
W is the decoder's output conv kernel and lambda is held fixed (no gradient through
it), as in VQGAN. From step disc_start the PatchGAN discriminator D
(lavin_jax.models.discriminator) takes one AdamW step on the hinge loss
  mean relu(1 - D(x)) + mean relu(1 + D(r)), r detached.
Terms whose configured weight is 0 are not computed. With ema_decay > 0 an EMA of the
ST-VAE params is kept and exported.

Stages (config.stage): 'images' trains on stills, 'images+clips' on batches of stills
or of clips (lavin_jax.train.vae_data); config.init_from starts a fresh run from the
released weights, a bundle or an earlier stage (lavin_jax.train.vae_init). At the end
of a run the reconstructions of held-out photographs and clips are scored
(lavin_jax.train.vae_report), printed and appended to metrics.jsonl.

  state = train(config, workdir)                 # resumes from workdir/checkpoints
  bundle_dir = train_and_export(config, workdir)  # then writes workdir/bundle
"""

import functools
import os
from typing import Any

from absl import logging
from flax import struct
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from lavin_jax.configs import models as model_configs
from lavin_jax.configs import train_vae as train_vae_configs
from lavin_jax.data import specs
from lavin_jax.eval import lpips as lpips_lib
from lavin_jax.io import bundle
from lavin_jax.io import tree_fit
from lavin_jax.models import discriminator as disc_lib
from lavin_jax.models import stvae
from lavin_jax.parallel import mesh as mesh_lib
from lavin_jax.train import checkpoint
from lavin_jax.train import loop
from lavin_jax.train import state as state_lib
from lavin_jax.train import vae_data
from lavin_jax.train import vae_init
from lavin_jax.train import vae_report

LAST_LAYER = ("decoder", "conv_out", "kernel")  # where the adaptive weight compares terms
_PIXELS = ("batch", None, None, None, None)  # logical axes of (B, T, H, W, C)


class VAEState(struct.PyTreeNode):
  """Everything a step reads and writes; a plain pytree (checkpointable)."""

  step: jax.Array  # int32 scalar: number of updates applied
  params: Any
  ema_params: Any  # {} with the EMA off
  opt_state: Any
  disc_params: Any  # {} without the adversarial term
  disc_opt_state: Any
  rng: jax.Array  # raw uint32 key; the step key is fold_in(rng, step)


def ema_on(config) -> bool:
  return bool(config.ema_decay)


def export_params(state: VAEState, config):
  """The params a run hands on (bundle, report): the EMA when it is on."""
  return state.ema_params if ema_on(config) else state.params


# ---------------------------------------------------------------------------------------
# Loss.


def _frames(x):
  """(B, T, H, W, C) -> (B * T, H, W, C)."""
  return x.reshape((-1,) + x.shape[2:])


def reconstruction_loss(recon, video, lpips_params, *, lpips, config):
  """(the weighted reconstruction terms, their values) of pixels (B, T, H, W, 3)."""
  loss, metrics = 0.0, {}
  if config.mse_weight > 0:
    metrics["mse"] = jnp.mean(jnp.square(recon - video))
    loss += config.mse_weight * metrics["mse"]
  if config.l1_weight > 0:
    metrics["l1"] = jnp.mean(jnp.abs(recon - video))
    loss += config.l1_weight * metrics["l1"]
  if config.lpips_weight > 0:
    metrics["lpips"] = jnp.mean(
      lpips.apply({"params": lpips_params}, _frames(recon), _frames(video))
    )
    loss += config.lpips_weight * metrics["lpips"]
  return loss, metrics


def generator_loss(recon, disc_params, *, disc):
  """The hinge generator term -mean D(recon)."""
  return -jnp.mean(disc.apply({"params": disc_params}, recon))


def hinge_discriminator_loss(real_logits, fake_logits):
  return jnp.mean(jax.nn.relu(1.0 - real_logits)) + jnp.mean(jax.nn.relu(1.0 + fake_logits))


def adaptive_weight(rec_grad, gan_grad, config):
  """clip(|rec_grad| / (|gan_grad| + eps), 0, max), without gradient."""
  ratio = optax.tree.norm(rec_grad) / (optax.tree.norm(gan_grad) + config.adaptive_eps)
  return jax.lax.stop_gradient(jnp.clip(ratio, 0.0, config.adaptive_max))


def loss_and_grads(
  params, disc_params, lpips_params, video, key, step, *, model, disc, lpips, config
):
  """(metrics, reconstruction, gradients) of the ST-VAE loss at `params`.

  One forward pass; each term's gradient at the reconstruction goes back through the
  decoder (the adaptive weight needs only W's part of two of them).
  """
  video = nn.with_logical_constraint(video, _PIXELS)

  def forward(p):
    recon, mean, logvar = model.apply({"params": p}, video, key)
    kl = jnp.mean(stvae.kl_divergence(mean, logvar))
    return (nn.with_logical_constraint(recon, _PIXELS), config.kl_weight * kl), kl

  (recon, kl_term), backward, kl = jax.vjp(forward, params, has_aux=True)
  (rec, metrics), rec_grad = jax.value_and_grad(
    functools.partial(reconstruction_loss, lpips=lpips, config=config), has_aux=True
  )(recon, video, lpips_params)
  loss, recon_grad = rec + kl_term, rec_grad
  if disc is not None:
    gan, gan_grad = jax.value_and_grad(functools.partial(generator_loss, disc=disc))(
      recon, disc_params
    )

    def last_layer(grad):
      tree = backward((grad, jnp.zeros_like(kl_term)))[0]
      return functools.reduce(lambda t, k: t[k], LAST_LAYER, tree)

    weight = (
      config.adv_weight
      * (step >= config.disc_start)
      * adaptive_weight(last_layer(rec_grad), last_layer(gan_grad), config)
    )
    loss += weight * gan
    recon_grad = recon_grad + weight * gan_grad
    metrics.update(generator=gan, adv_weight=weight)
  grads = backward((recon_grad, jnp.ones_like(kl_term)))[0]
  metrics.update(kl=kl, loss=loss)
  return metrics, recon, grads


def discriminator_update(disc_params, disc_opt_state, real, fake, started, *, disc, tx):
  """One hinge-loss step of the discriminator, applied only where `started`.

  Returns:
    (params, optimizer state, the loss before the step).
  """

  def loss_fn(p):
    return hinge_discriminator_loss(
      disc.apply({"params": p}, real), disc.apply({"params": p}, fake)
    )

  loss, grads = jax.value_and_grad(loss_fn)(disc_params)
  updates, opt_state = tx.update(grads, disc_opt_state, disc_params)
  keep = lambda new, old: jnp.where(started, new, old)
  return (
    jax.tree.map(keep, optax.apply_updates(disc_params, updates), disc_params),
    jax.tree.map(keep, opt_state, disc_opt_state),
    loss,
  )


# ---------------------------------------------------------------------------------------
# Update step.


def train_step(state, lpips_params, video, *, model, disc, lpips, tx, config):
  """One update of the ST-VAE, its EMA and (from disc_start) the discriminator."""
  key = jax.random.fold_in(state.rng, state.step)
  metrics, recon, grads = loss_and_grads(
    state.params,
    state.disc_params,
    lpips_params,
    video,
    key,
    state.step,
    model=model,
    disc=disc,
    lpips=lpips,
    config=config,
  )
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics["grad_norm"] = optax.tree.norm(grads)
  ema_params = state.ema_params
  if ema_on(config):
    ema_params = state_lib.ema_update(ema_params, params, config.ema_decay)
  disc_params, disc_opt_state = state.disc_params, state.disc_opt_state
  if disc is not None:
    disc_params, disc_opt_state, metrics["disc_loss"] = discriminator_update(
      disc_params,
      disc_opt_state,
      video,
      jax.lax.stop_gradient(recon),
      state.step >= config.disc_start,
      disc=disc,
      tx=tx,
    )
  new_state = state.replace(
    step=state.step + 1,
    params=params,
    ema_params=ema_params,
    opt_state=opt_state,
    disc_params=disc_params,
    disc_opt_state=disc_opt_state,
  )
  return new_state, metrics


def create_train_step(model, disc, lpips, tx, config, state_shardings):
  """The jitted `train_step`: state donated, shardings kept, metrics replicated.

  Call it inside `jax.set_mesh(mesh)` and `nn.logical_axis_rules(mesh_lib.AXIS_RULES)`
  with a global batch (`mesh_lib.global_batch`).
  """
  step = functools.partial(train_step, model=model, disc=disc, lpips=lpips, tx=tx, config=config)
  replicated = mesh_lib.replicated(jax.tree.leaves(state_shardings)[0].mesh)
  return jax.jit(step, out_shardings=(state_shardings, replicated), donate_argnums=(0,))


# ---------------------------------------------------------------------------------------
# Sharded init.


def make_models(config):
  """(ST-VAE, discriminator or None) modules of a config."""
  disc = None
  if config.adv_weight > 0:
    disc = disc_lib.PatchDiscriminator(
      config.disc_channels, config.disc_layers, config.disc_temporal
    )
  return stvae.STVAE(config.model), disc


def _state_init_fn(model, disc, tx, config):
  """rng -> a fresh VAEState whose params carry logical-axis boxes."""
  video = jnp.zeros((1, 1, config.resolution, config.resolution, config.model.in_channels))

  def init(rng):
    k_vae, k_disc, k_state = jax.random.split(rng, 3)
    params = model.init(k_vae, video)["params"]
    disc_params = disc.init(k_disc, video)["params"] if disc is not None else {}
    return VAEState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      ema_params=jax.tree.map(jnp.copy, params) if ema_on(config) else {},
      opt_state=tx.init(params),
      disc_params=disc_params,
      disc_opt_state=tx.init(disc_params) if disc is not None else {},
      rng=k_state,
    )

  return init


def abstract_train_state(model, disc, tx, config, mesh, rng):
  """(state ShapeDtypeStructs carrying their shardings, state shardings); no allocation."""
  boxed = jax.eval_shape(_state_init_fn(model, disc, tx, config), rng)
  shardings = mesh_lib.fit_shardings(mesh_lib.logical_shardings(mesh, boxed), nn.unbox(boxed))
  abstract = jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), nn.unbox(boxed), shardings
  )
  return abstract, shardings


def _flat_shapes(tree) -> dict:
  return {
    jax.tree_util.keystr(p): tuple(np.shape(x))
    for p, x in jax.tree_util.tree_leaves_with_path(tree)
  }


def _start_fields(start, disc, config) -> dict:
  """{VAEState field: host tree} that `start` (vae_init.load) replaces in a fresh state."""
  fields = {"params": start["params"]}
  if ema_on(config):
    fields["ema_params"] = start.get("ema_params", start["params"])
  if disc is not None and "disc_params" in start:
    fields["disc_params"] = start["disc_params"]
  return fields


def init_train_state(model, disc, tx, config, mesh, rng, start=None):
  """A VAEState created directly in its sharded layout (as dit.init_train_state).

  Args:
    start: optional host trees from `vae_init.load`: 'params' replace the fresh
      params (and start the EMA unless 'ema_params' are given); 'disc_params' replace
      the fresh discriminator when this run has one. Checked against the model
      before anything compiles.

  Returns:
    (state, state_shardings).
  """
  abstract, shardings = abstract_train_state(model, disc, tx, config, mesh, rng)
  fields = {} if start is None else _start_fields(start, disc, config)
  for name, tree in fields.items():
    tree_fit.check_fits(
      _flat_shapes(tree),
      _flat_shapes(getattr(abstract, name)),
      f"config.init_from {config.init_from!r} ({name})",
      "check config.model and the discriminator settings",
    )
  init = _state_init_fn(model, disc, tx, config)
  state = jax.jit(lambda r: nn.unbox(init(r)), out_shardings=shardings)(rng)
  return state.replace(
    **{
      name: mesh_lib.put_global(
        jax.tree.map(lambda x, a: np.asarray(x, a.dtype), tree, getattr(abstract, name)),
        getattr(shardings, name),
      )
      for name, tree in fields.items()
    }
  ), shardings


# ---------------------------------------------------------------------------------------
# Checks (before any compile).


def check_config(config) -> None:
  """Raises ValueError on settings that cannot train, naming the fix."""
  if config.stage not in train_vae_configs.STAGES:
    raise ValueError(
      f"config.stage must be one of {train_vae_configs.STAGES}, got {config.stage!r}."
    )
  factor = model_configs.spatial_factor(config.model)
  if config.resolution <= 0 or config.resolution % factor:
    raise ValueError(
      f"config.resolution must be a positive multiple of {factor} (the ST-VAE's "
      f"downsampling), got {config.resolution}."
    )
  counts = ["total_steps", "batch_size", "checkpoint_every", "keep_checkpoints", "log_every"]
  if vae_data.uses_clips(config):
    counts.append("clip_batch_size")
  for name in counts:
    if config[name] < 1:
      raise ValueError(f"config.{name} must be >= 1, got {config[name]}.")
  loop.check_profile_steps(config.profile_steps, config.total_steps)
  tc = config.model.temporal_compression
  if vae_data.uses_clips(config):
    if config.clip_frames <= 1 or (config.clip_frames - 1) % tc:
      raise ValueError(
        f"config.clip_frames must be 1 + {tc}k with k >= 1 (5, 9, 17, ...), "
        f"got {config.clip_frames}."
      )
    if not 0.0 < config.clip_fraction <= 1.0:
      raise ValueError(
        f"config.clip_fraction must be in (0, 1] for stage "
        f"{config.stage!r}, got {config.clip_fraction}."
      )
  weights = ("mse_weight", "l1_weight", "lpips_weight", "kl_weight", "adv_weight")
  negative = [name for name in weights if config[name] < 0]
  if negative:
    raise ValueError(f"Loss weights must be >= 0: {negative}.")
  if not config.mse_weight + config.l1_weight + config.lpips_weight > 0:
    raise ValueError(
      "config.mse_weight, l1_weight and lpips_weight are all 0: give the "
      "reconstruction at least one term."
    )
  if config.lpips_weight > 0 and not (config.lpips_vgg and config.lpips_lin):
    raise ValueError(
      "lpips_weight > 0 needs config.lpips_vgg and config.lpips_lin (the "
      "LPIPS weight files; see lavin_jax.eval.lpips)."
    )
  if config.ema_decay and not 0.0 < config.ema_decay < 1.0:
    raise ValueError(
      f"config.ema_decay must be in [0, 1) (0 or None: no EMA), got {config.ema_decay}."
    )
  patch = 3 * 2**config.disc_layers
  if config.adv_weight > 0 and config.resolution < patch:
    raise ValueError(
      f"config.resolution {config.resolution} is too small for a "
      f"{config.disc_layers}-layer PatchGAN (needs >= {patch}); lower "
      "config.disc_layers."
    )


def check_batch_sizes(config, mesh) -> None:
  """Raises ValueError unless every global batch splits over processes and devices."""
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  names = ["batch_size"] + (["clip_batch_size"] if vae_data.uses_clips(config) else [])
  for name in names:
    if config[name] % jax.process_count() or config[name] % shards:
      raise ValueError(
        f"config.{name} = {config[name]} does not divide over {jax.process_count()} "
        f"processes and data x fsdp = {shards} devices; change it or config.mesh."
      )


# ---------------------------------------------------------------------------------------
# The trainer.


def lpips_model(config, mesh):
  """(LPIPS module, params replicated on `mesh`) when the weight files are configured."""
  if not (config.lpips_vgg and config.lpips_lin):
    return None
  module, params = lpips_lib.load_lpips(config.lpips_vgg, config.lpips_lin)
  replicated = mesh_lib.replicated(mesh)
  return module, mesh_lib.put_global(params, jax.tree.map(lambda _: replicated, params))


def _report(state, model, lpips, examples, config, workdir, mesh):
  """Scores reconstructions of the held-out examples; prints and records them."""
  replicated = mesh_lib.replicated(mesh)
  on_mesh = lambda x: mesh_lib.put_global(x, replicated)
  params = export_params(state, config)
  apply = jax.jit(
    lambda p, x: jnp.clip(model.apply({"params": p}, x)[0], -1.0, 1.0), out_shardings=replicated
  )
  distance = None
  if lpips is not None:
    module, lpips_params = lpips
    lpips_fn = jax.jit(lambda p, x, y: module.apply({"params": p}, x, y), out_shardings=replicated)
    distance = lambda x, y: lpips_fn(lpips_params, on_mesh(x), on_mesh(y))
  scores = vae_report.report(lambda x: apply(params, on_mesh(x)), examples, distance)
  step = int(state.step)
  writer = loop.MetricWriter(workdir)
  writer.write(step, scores)
  writer.close()
  if jax.process_index() == 0:
    print(vae_report.format_report(scores, step), flush=True)
  return scores


def train(
  config: ml_collections.ConfigDict, workdir: str, source=None, clip_source=None
) -> VAEState:
  """Trains the ST-VAE; checkpoints, metrics.jsonl, TensorBoard event files and the
  report go to `workdir` (a profile to workdir/profile with config.profile_steps).

  Call it on every process (multi-host). A workdir with checkpoints resumes from its
  latest (params, EMA, optimizers, discriminator, data position); a fresh one starts
  from config.init_from when set.

  Args:
    config: a configs/train_vae.py config.
    workdir: output directory.
    source: optional stills source replacing config.source (any sequence of
      {'image': uint8 (H, W, 3)}).
    clip_source: optional clips source replacing config.clip_source
      ({'video': uint8 (T, H, W, 3)}).

  Returns:
    The final VAEState (global arrays); its step is below config.total_steps when a
    stop request ended the run early.
  """
  # ## Checks, sources, report examples and mesh, before any compile.
  check_config(config)
  if source is None and not config.source:
    raise ValueError(
      "config.source is empty: set it to a source spec (lavin_jax.data.specs) or pass a source."
    )
  stills = source if source is not None else specs.get_source(config.source)
  clips = None
  if vae_data.uses_clips(config):
    clips = clip_source
    if clips is None and config.clip_source:
      clips = specs.get_source(config.clip_source)
  it = vae_data.make_input(stills, clips, config)
  held_out = vae_report.held_out_examples(config)
  mesh = mesh_lib.create_mesh(config.mesh)
  check_batch_sizes(config, mesh)
  os.makedirs(workdir, exist_ok=True)
  logging.info(
    "ST-VAE training (stage %s) in %s, %d processes, mesh %s.",
    config.stage,
    workdir,
    jax.process_count(),
    dict(mesh.shape),
  )

  # ## Models and optimizer (one factory for the ST-VAE and its discriminator).
  model, disc = make_models(config)
  lpips = lpips_model(config, mesh)  # the loss's when lpips_weight > 0; the report's
  loss_lpips, lpips_params = lpips if lpips and config.lpips_weight > 0 else (None, {})
  tx, _ = state_lib.create_optimizer(config.optimizer)

  # ## Shard: restore the latest checkpoint, or init (from config.init_from).
  rng = jax.random.PRNGKey(config.seed)
  abstract, shardings = abstract_train_state(model, disc, tx, config, mesh, rng)
  ckpt = checkpoint.CheckpointManager(
    os.path.join(workdir, "checkpoints"),
    save_every=config.checkpoint_every,
    keep=config.keep_checkpoints,
  )
  with ckpt:
    if ckpt.latest_step() is not None:
      logging.info("Resuming from %s/%d.", ckpt.directory, ckpt.latest_step())
      state, _ = ckpt.restore(abstract, data_iterator=it, fallback=config.restore_fallback)
    else:
      start = None
      if config.init_from:
        kind, path = vae_init.locate(config.init_from)
        logging.info("Starting from %s (%s).", path, kind)
        start = vae_init.load(kind, path, config.model)
      state, _ = init_train_state(model, disc, tx, config, mesh, rng, start=start)

    # ## Update step and loop.
    step_fn = create_train_step(model, disc, loss_lpips, tx, config, shardings)
    with jax.set_mesh(mesh), nn.logical_axis_rules(mesh_lib.AXIS_RULES):
      state = loop.run(
        lambda state, video: step_fn(state, lpips_params, video),
        state,
        (mesh_lib.global_batch(video, mesh) for video in it),
        ckpt=ckpt,
        total_steps=config.total_steps,
        log_every=config.log_every,
        workdir=workdir,
        config=config,
        data_iterator=it,
        profile_steps=config.profile_steps,
        desc=f"train ST-VAE ({config.stage})",
      )

      # ## Report.
      if int(state.step) == config.total_steps and held_out:
        _report(state, model, lpips, held_out, config, workdir, mesh)
  return state


def train_and_export(
  config: ml_collections.ConfigDict, workdir: str, source=None, clip_source=None, out=None
):
  """`train`, then an inference bundle (the EMA params when on) at `out`
  (default <workdir>/bundle). Returns its path, or None when a stop request ended the
  run before config.total_steps (rerun to resume)."""
  state = train(config, workdir, source, clip_source)
  if int(state.step) < config.total_steps:
    logging.info(
      "Stopped at step %d of %d; run again to resume.", int(state.step), config.total_steps
    )
    return None
  out = out or os.path.join(workdir, "bundle")
  bundle.save_bundle(
    out,
    ml_collections.ConfigDict({"stvae": config.model}),
    stvae_params=export_params(state, config),
  )
  return out
