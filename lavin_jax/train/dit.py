"""J-DiT training with the rectified-flow loss, sharded over devices and hosts.

Time convention: see `lavin_jax.flow` (t = 0 noise, t = 1 data).

Read top to bottom, like big_vision's trainers: inputs (pixels -> latents, context
dropout), loss, update step (with gradient accumulation), evaluation, sharded init, then
`train(config, workdir)`: logging, mesh, input, model, shard, checkpoint, evaluation,
loop.

A batch (see lavin_jax.data.pipeline) holds 'context_inputs' and
'context_targets' (B, K, T, H, W, 3), 'query' and 'target' (B, T, H, W, 3) in
[-1, 1] and 'num_pairs' (B,); with config.input = 'latents' the same keys hold the
stored ST-VAE posterior moments (B, K, T', h, w, 32) etc., mean | log-variance
(lavin_jax.data.latents). Either way the step draws one posterior sample per clip and
normalises it on the device (`clip_latents`). Batches may change their frame count T
from step to step (a mixture of stills and clips): each shape compiles once.
"""

import functools
import itertools
import os

from absl import logging
import flax.linen as nn
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from lavin_jax import convert
from lavin_jax import flow
from lavin_jax.configs import models as model_configs
from lavin_jax.data import episodes
from lavin_jax.data import latents
from lavin_jax.data import pipeline
from lavin_jax.io import bundle
from lavin_jax.models import incontext
from lavin_jax.models import jdit
from lavin_jax.models import stvae
from lavin_jax.parallel import mesh as mesh_lib
from lavin_jax.train import checkpoint
from lavin_jax.train import loop
from lavin_jax.train import state as state_lib

CLIP_KEYS = ("context_inputs", "context_targets", "query", "target")
INPUTS = ("pixels", "latents")
# ST-VAE settings that leave the stored posterior moments as they are.
VAE_FIELDS_BESIDE_LATENTS = (
  "latent_shift",
  "latent_scale",
  "remat",
  "tile_sample_size",
  "tile_overlap",
  "tile_frames",
)


# ---------------------------------------------------------------------------------------
# Inputs: pixels -> latents, the condition sequence, context dropout.


def clip_latents(batch, moments_fn, key, vae_config):
  """Every clip of a batch as normalised J-DiT latents, coded in one call.

  moments_fn maps the packed clips (N, ...) to the ST-VAE posterior (mean, logvar), each
  (N, T', h, w, 16); one posterior sample of each (as the released inference draws),
  then the J-DiT latent normalisation; no gradient flows back. Returns the batch's clip
  keys: context_* (B, K, T', h, w, 16), query and target (B, T', h, w, 16).
  """
  b, k = batch["context_inputs"].shape[:2]
  clips = incontext.pack_clips(
    batch["context_inputs"], batch["context_targets"], batch["query"], batch["target"]
  )
  mean, logvar = moments_fn(clips)
  z = stvae.normalize_latents(stvae.sample_posterior(mean, logvar, key), vae_config)
  ins, tgts, (query, target) = incontext.unpack_clips(jax.lax.stop_gradient(z), b, k)
  return {"context_inputs": ins, "context_targets": tgts, "query": query, "target": target}


def encode_batch(vae, vae_params, batch, key, vae_config):
  """`clip_latents` of a pixel batch: the frozen ST-VAE encodes each clip separately."""
  encode = lambda clips: vae.apply({"params": vae_params}, clips, method="encode")
  return clip_latents(batch, encode, key, vae_config)


def sample_batch(batch, key, vae_config):
  """`clip_latents` of a batch of stored moments (mean | logvar on the last axis)."""
  split = lambda clips: jnp.split(clips.astype(jnp.float32), 2, axis=-1)
  return clip_latents(batch, split, key, vae_config)


# ---------------------------------------------------------------------------------------
# Loss.


def velocity_loss(model, params, x_data, noise, t, cond, cond_mask, l1_weight, dropout_key=None):
  """Flow loss of J-DiT's velocity at x_t against u = x_data - noise.

  The loss covers the target only; padding lives in the condition, where
  cond_mask hides it. dropout_key=None runs deterministically (no drop path).
  """
  x_t = flow.interpolate(x_data, noise, t)
  rngs = None if dropout_key is None else {"dropout": dropout_key}
  v = model.apply(
    {"params": params}, x_t, t, cond, cond_mask, deterministic=dropout_key is None, rngs=rngs
  )
  return flow.flow_loss(v, flow.velocity_target(x_data, noise), l1_weight)


def sample_training_inputs(latents, num_pairs, key, flow_config):
  """Random draws of one step: context dropout, times, noise -> the loss inputs.

  Returns (x_data, noise, t, cond, cond_mask).
  """
  k_drop, k_time, k_noise = jax.random.split(key, 3)
  x_data = latents["target"].astype(jnp.float32)
  b = x_data.shape[0]
  drop = jax.random.bernoulli(k_drop, flow_config.uncond_ratio, (b,))
  cond, cond_mask = incontext.build_condition(
    latents["context_inputs"], latents["context_targets"], latents["query"], num_pairs, drop
  )
  t = flow.sample_time(k_time, (b,), flow_config)
  noise = jax.random.normal(k_noise, x_data.shape, jnp.float32)
  return x_data, noise, t, cond, cond_mask


# ---------------------------------------------------------------------------------------
# Update step.


def batch_latents(vae_params, batch, key, *, config, vae=None):
  """`clip_latents` of a batch of config.input: pixels (encoded) or stored moments."""
  if config.input == "pixels":
    return encode_batch(vae, vae_params, batch, key, config.vae)
  return sample_batch(batch, key, config.vae)


def step_inputs(state, vae_params, batch, *, config, vae=None):
  """The random draws of the update at state.step, as loss inputs.

  The step's key is fold_in(state.rng, state.step): the same state and batch
  always give the same update.

  Returns:
    ((x_data, noise, t, cond, cond_mask), dropout_key).
  """
  key = jax.random.fold_in(state.rng, state.step)
  k_vae, k_inputs, k_dropout = jax.random.split(key, 3)
  latents = batch_latents(vae_params, batch, k_vae, config=config, vae=vae)
  inputs = sample_training_inputs(latents, batch["num_pairs"], k_inputs, config.flow)
  return inputs, k_dropout


def check_accumulation(batch_size: int, steps: int, shards: int = 1) -> None:
  """Raises ValueError unless a global batch splits into `steps` microbatches that
  each divide over `shards` (data x fsdp) devices."""
  if batch_size % (steps * shards):
    raise ValueError(
      f"The global batch {batch_size} does not split into grad_accum_steps = {steps} "
      f"microbatches over data x fsdp = {shards} devices (needs a multiple of "
      f"{steps * shards}); change config.data.batch_size or config.grad_accum_steps."
    )


def train_step(state, vae_params, batch, *, model, tx, schedule, config, vae=None):
  """One AdamW + EMA update on a global batch. Returns (new state, metrics).

  With config.grad_accum_steps = n > 1 the gradient is the float32 mean over n
  microbatches (`state_lib.accumulated_gradients`), the same update as the whole
  batch at once. Every per-example draw (posterior sample, context dropout, time,
  noise) is made for the whole batch before the split, so it does not depend on n;
  only drop path (model.drop_path > 0) draws per microbatch: the same distribution,
  other draws.
  """
  steps = config.get("grad_accum_steps", 1)
  mesh = jax.sharding.get_abstract_mesh()  # the one set by jax.set_mesh, if any
  shards = 1 if mesh.empty else mesh.shape["data"] * mesh.shape["fsdp"]
  check_accumulation(batch["num_pairs"].shape[0], steps, shards)  # at trace time
  inputs, k_dropout = step_inputs(state, vae_params, batch, config=config, vae=vae)

  def loss_fn(params, micro, key):
    return velocity_loss(model, params, *micro, config.flow.l1_weight, dropout_key=key)

  loss, grads = state_lib.accumulated_gradients(loss_fn, state.params, inputs, k_dropout, steps)
  new_state, updates = state_lib.apply_gradients(state, grads, tx, config.optimizer.ema_decay)
  metrics = {
    "loss": loss,
    "grad_norm": optax.tree.norm(grads),
    "update_norm": optax.tree.norm(updates),
    "param_norm": optax.tree.norm(new_state.params),
    "lr": schedule(state.step),
  }
  return new_state, metrics


def create_train_step(model, tx, schedule, config, state_shardings, vae=None):
  """The jitted `train_step`: state donated, shardings kept, metrics replicated.

  Inputs carry their own shardings (`mesh_lib.global_batch` for the batch); call
  it inside `jax.set_mesh(mesh)` and `nn.logical_axis_rules(mesh_lib.AXIS_RULES)`.
  """
  step = functools.partial(
    train_step, model=model, tx=tx, schedule=schedule, config=config, vae=vae
  )
  replicated = jax.sharding.NamedSharding(
    jax.tree.leaves(state_shardings)[0].mesh, jax.sharding.PartitionSpec()
  )
  return jax.jit(step, out_shardings=(state_shardings, replicated), donate_argnums=(0,))


# ---------------------------------------------------------------------------------------
# Evaluation: the loss of fixed held-out batches at fixed times.


def eval_key(config, index: int) -> jax.Array:
  """The key of held-out batch `index`: its posterior sample and noise."""
  return jax.random.fold_in(jax.random.PRNGKey(config.eval_seed), index)


def eval_inputs(vae_params, batch, key, *, config, vae=None):
  """Loss inputs of a held-out batch, fixed by `key`: the latents' posterior sample,
  the whole context (no dropout) and one noise draw for each time of config.eval_times.

  Returns:
    (x_data (B, T', h, w, C), noise (len(eval_times), B, T', h, w, C), cond, cond_mask).
  """
  k_vae, k_noise = jax.random.split(key)
  latents = batch_latents(vae_params, batch, k_vae, config=config, vae=vae)
  x_data = latents["target"].astype(jnp.float32)
  no_drop = jnp.zeros(x_data.shape[:1], bool)
  cond, cond_mask = incontext.build_condition(
    latents["context_inputs"],
    latents["context_targets"],
    latents["query"],
    batch["num_pairs"],
    no_drop,
  )
  noise = jax.random.normal(k_noise, (len(config.eval_times),) + x_data.shape, jnp.float32)
  return x_data, noise, cond, cond_mask


def eval_loss(model, params, inputs, times, l1_weight, microbatches: int = 1):
  """Mean over `times` (T,) of the deterministic `velocity_loss` of `eval_inputs`,
  every example at each time; batches of `microbatches` parts, one at a time."""
  x_data, noise, cond, cond_mask = inputs

  def at_time(args):
    noise_t, t = args

    def part(micro):
      x, n, c, m = micro
      return velocity_loss(model, params, x, n, jnp.full(x.shape[:1], t), c, m, l1_weight)

    split = lambda a: state_lib.split_microbatches(a, microbatches)
    return jnp.mean(jax.lax.map(part, jax.tree.map(split, (x_data, noise_t, cond, cond_mask))))

  return jnp.mean(jax.lax.map(at_time, (noise, times)))


def create_eval_fn(model, config, batches, vae_params, mesh, vae=None):
  """state -> {'eval_loss': replicated scalar} of the global held-out `batches`.

  Their loss inputs (`eval_inputs`, key `eval_key(config, i)`) are computed once,
  here; the loss is then a deterministic function of state.params: the mean of
  `eval_loss` over the batches. Call it inside the mesh and axis-rule contexts.
  """
  make_inputs = jax.jit(functools.partial(eval_inputs, config=config, vae=vae))
  inputs = [make_inputs(vae_params, b, eval_key(config, i)) for i, b in enumerate(batches)]
  loss = jax.jit(
    functools.partial(
      eval_loss,
      model,
      times=jnp.asarray(config.eval_times, jnp.float32),
      l1_weight=config.flow.l1_weight,
      microbatches=config.get("grad_accum_steps", 1),
    ),
    out_shardings=mesh_lib.replicated(mesh),
  )  # compiled once per batch shape
  return lambda state: {"eval_loss": sum(loss(state.params, x) for x in inputs) / len(inputs)}


# ---------------------------------------------------------------------------------------
# Sharded init.


def _state_init_fn(model, tx, config):
  """rng -> a fresh TrainState whose params carry logical-axis boxes."""
  c = config.model
  size = 2 * c.patch_size  # parameters do not depend on the input size
  x = jnp.zeros((1, 1, size, size, c.in_channels), jnp.float32)

  def init(rng):
    k_params, k_state = jax.random.split(rng)
    params = model.init({"params": k_params}, x, jnp.zeros((1,)), x)["params"]
    return state_lib.create_train_state(params, tx, k_state)

  return init


def abstract_train_state(model, tx, config, mesh, rng):
  """(state ShapeDtypeStructs carrying their shardings, state shardings); no allocation."""
  boxed = jax.eval_shape(_state_init_fn(model, tx, config), rng)
  shardings = mesh_lib.logical_shardings(mesh, boxed)
  abstract = jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), nn.unbox(boxed), shardings
  )
  return abstract, shardings


def init_train_state(model, tx, config, mesh, rng):
  """A TrainState created directly in its sharded layout.

  Shapes come from `jax.eval_shape`, shardings from the logical axis names of
  the parameters (mesh_lib.AXIS_RULES), and `jax.jit(init, out_shardings=...)`
  makes every device create only its own shard. With config.init_from, params
  and EMA start from that released J-DiT file instead.

  Returns:
    (state, state_shardings).
  """
  init = _state_init_fn(model, tx, config)
  _, shardings = abstract_train_state(model, tx, config, mesh, rng)
  state = jax.jit(lambda r: nn.unbox(init(r)), out_shardings=shardings)(rng)
  if config.get("init_from"):
    params = mesh_lib.put_global(load_released_params(config), shardings.params)
    state = state.replace(params=params, ema_params=jax.tree.map(jnp.copy, params))
  return state, shardings


# ---------------------------------------------------------------------------------------
# Checks (before any compile).


def check_config(config, batches_given=False):
  """Raises ValueError on settings that cannot train, naming the fix."""
  if config.input not in INPUTS:
    raise ValueError(f"config.input must be one of {INPUTS}, got {config.input!r}.")
  needs_vae = config.input == "pixels" or not batches_given
  if needs_vae and not (config.vae_checkpoint or config.vae_random_init):
    raise ValueError(
      f"config.input={config.input!r} encodes with the frozen ST-VAE: set "
      "config.vae_checkpoint to the released stvae.pt (or an inference bundle)."
    )
  if config.input == "latents":
    latents.check_config(config.latents)
  if not batches_given and not source_specs(config):
    raise ValueError(
      "config.sources holds no source spec; set one, e.g. "
      "--config.sources.synthetic=synthetic:small (lavin_jax.data.specs)."
    )
  if config.vae_checkpoint and not os.path.exists(config.vae_checkpoint):
    raise FileNotFoundError(f"config.vae_checkpoint {config.vae_checkpoint!r} does not exist.")
  if config.init_from and not os.path.isfile(config.init_from):
    raise FileNotFoundError(f"config.init_from {config.init_from!r} does not exist.")
  counts = ("total_steps", "checkpoint_every", "keep_checkpoints", "log_every", "grad_accum_steps")
  for name in counts:
    if config[name] < 1:
      raise ValueError(f"config.{name} must be >= 1, got {config[name]}.")
  loop.check_profile_steps(config.profile_steps, config.total_steps)
  check_eval_config(config, batches_given)
  if not batches_given:
    check_accumulation(config.data.batch_size, config.grad_accum_steps)
  if not 0.0 <= config.flow.uncond_ratio < 1.0:
    raise ValueError(f"config.flow.uncond_ratio must be in [0, 1), got {config.flow.uncond_ratio}.")
  multiple = model_configs.pixel_multiple(config.vae, config.model)
  if config.data.resolution <= 0 or config.data.resolution % multiple:
    raise ValueError(
      f"config.data.resolution must be a positive multiple of {multiple} (the "
      f"ST-VAE's downsampling times J-DiT's patch size), got "
      f"{config.data.resolution}."
    )


def check_batch_split(config, mesh) -> None:
  """Raises ValueError unless the global batch splits into config.grad_accum_steps
  microbatches over the mesh's data x fsdp devices."""
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  check_accumulation(config.data.batch_size, config.grad_accum_steps, shards)


def check_eval_config(config, batches_given=False):
  """Raises ValueError on evaluation settings that cannot run."""
  if config.eval_every < 0:
    raise ValueError(f"config.eval_every must be >= 0 (0 is off), got {config.eval_every}.")
  if not config.eval_every:
    return
  if config.eval_batches < 1:
    raise ValueError(f"config.eval_batches must be >= 1, got {config.eval_batches}.")
  if not config.eval_times or not all(0.0 <= t <= 1.0 for t in config.eval_times):
    raise ValueError(
      f"config.eval_times must be a non-empty tuple of times in [0, 1], got {config.eval_times}."
    )
  if not batches_given and config.eval_seed == config.data.seed:
    raise ValueError(
      f"config.eval_seed ({config.eval_seed}) equals config.data.seed: the held-out "
      "batches would be training batches; choose another eval_seed."
    )


def check_batch(batch, config):
  """Raises ValueError unless a process-local batch has the layout this trainer needs."""
  missing = [k for k in CLIP_KEYS + ("num_pairs",) if k not in batch]
  if missing:
    raise ValueError(f"Batch lacks {missing}; it has {sorted(batch)}.")
  channels = 3 if config.input == "pixels" else 2 * config.model.in_channels  # moments
  clip = np.shape(batch["query"])
  b, k = np.shape(batch["context_inputs"])[:2]
  want = {
    "context_inputs": (b, k) + clip[1:],
    "context_targets": (b, k) + clip[1:],
    "query": (b,) + clip[1:],
    "target": (b,) + clip[1:],
    "num_pairs": (b,),
  }
  bad = {key: np.shape(batch[key]) for key in want if np.shape(batch[key]) != want[key]}
  if len(clip) != 5 or clip[-1] != channels or bad:
    raise ValueError(
      f"Batch shapes do not fit config.input={config.input!r} (clips (B, T, H, W, "
      f"{channels}), context (B, K, T, H, W, {channels}), num_pairs (B,)): query {clip}, "
      f"mismatched {bad}."
    )
  num_pairs = np.asarray(batch["num_pairs"])
  if num_pairs.min() < 1 or num_pairs.max() > k:
    raise ValueError(
      f"num_pairs must lie in [1, {k}] (the context slots), got "
      f"{num_pairs.min()}..{num_pairs.max()}."
    )


def latent_geometry(batch, config):
  """Latent (K, T', h, w) of a batch (arrays, or anything with shapes)."""
  k, t, h, w = np.shape(batch["context_inputs"])[1:5]
  if config.input == "pixels":
    f = stvae.spatial_factor(config.vae)
    t, h, w = 1 + (t - 1) // config.vae.temporal_compression, h // f, w // f
  return k, t, h, w


def tokens_per_example(batch, config) -> int:
  """Joint sequence length (condition incl. padding + target tokens) of one example."""
  k, t, h, w = latent_geometry(batch, config)
  p = config.model.patch_size
  return (2 * k + 2) * t * (h // p) * (w // p)


# ---------------------------------------------------------------------------------------
# Model pieces from files.


def _vae_files(config):
  """The ST-VAE of config.vae_checkpoint as (module, host params)."""
  path = config.vae_checkpoint
  if path and os.path.isdir(path):
    bundle_config, params = bundle.load_bundle(path)
    if params.get("stvae") is None:
      raise ValueError(f"The bundle {path!r} holds no ST-VAE params.")
    return stvae.STVAE(bundle_config.stvae), params["stvae"]
  if path:
    return convert.load_released_stvae(path, config.vae)
  logging.warning("Training on an untrained (random-init) ST-VAE: smoke tests only.")
  module = stvae.STVAE(config.vae)
  f = stvae.spatial_factor(config.vae)
  video = jnp.zeros((1, 1, f, f, config.vae.in_channels), jnp.float32)
  params = jax.jit(module.init)(jax.random.PRNGKey(config.seed + 1), video)["params"]
  return module, jax.device_get(params)


def load_vae(config):
  """The frozen ST-VAE as (module, host params) from config.vae_checkpoint.

  The module computes in config.vae_dtype (float32 where a config saved before that
  field does not name it); the params are as stored.
  """
  module, params = _vae_files(config)
  vae_config = module.config.copy_and_resolve_references()
  vae_config.dtype = config.get("vae_dtype", "float32")
  return stvae.STVAE(vae_config), params


def load_released_params(config):
  """J-DiT params of config.init_from (released key layout) for this model config."""
  _, params = convert.load_released_jdit(config.init_from, config.model)
  return params


# ---------------------------------------------------------------------------------------
# The trainer.


def vae_identity(config) -> dict:
  """What stored latents depend on of the ST-VAE: its weights and architecture."""
  model = {k: v for k, v in config.vae.to_dict().items() if k not in VAE_FIELDS_BESIDE_LATENTS}
  model["dtype"] = config.vae_dtype  # the encode's compute dtype
  weights = config.vae_checkpoint or f"random init, seed {config.seed + 1}"
  return {"weights": weights, "model": model}


def latents_dir(config, workdir) -> str:
  """Where the stored latents are: config.latents.dir, else <workdir>/latents."""
  return config.latents.dir or os.path.join(workdir, "latents")


def source_specs(config) -> dict:
  """{name: spec} of the sources in use: config.sources with a non-empty spec."""
  return {name: spec for name, spec in config.sources.items() if spec}


def open_sources(config) -> dict:
  """{name: source} of `source_specs`."""
  # Imported here: sources pull in tensorflow_datasets, which only the data needs.
  from lavin_jax.data import specs  # pylint: disable=g-import-not-at-top

  return {name: specs.get_source(spec) for name, spec in source_specs(config).items()}


def encode_latents(config, workdir) -> list:
  """Encodes the configured mixture's task pairs into `latents_dir` (lavin_jax.data.latents).

  Every process encodes its share of the shards, skipping those already written, then
  waits for the others. The frozen ST-VAE is loaded only when a shard is left to do.
  Returns the files this process wrote.
  """
  check_config(config)

  def make_encoder():
    vae, host_params = load_vae(config)
    params = jax.device_put(host_params, jax.local_devices()[0])
    encode = jax.jit(lambda p, x: vae.apply({"params": p}, x, method="encode"))
    return functools.partial(encode, params)

  written = latents.encode_latents(
    open_sources(config),
    latents_dir(config, workdir),
    config.data,
    config.latents,
    make_encoder,
    vae_identity(config),
    jax.process_index(),
    jax.process_count(),
  )
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("lavin_jax latents encoded")
  return written


def make_input(config, workdir):
  """This process's Grain batches of the configured data (checkpointable iterator).

  input='pixels': episodes of rendered clips of the source mixture
  (lavin_jax.data.pipeline). input='latents': the mixture's task pairs are encoded
  once (`encode_latents`; finished shards are kept) and episodes of their posterior
  moments are read from disk (lavin_jax.data.latents).
  """
  if config.input == "pixels":
    return iter(pipeline.make_mixture(config.data, open_sources(config)))
  encode_latents(config, workdir)
  return iter(
    latents.make_latent_pipeline(
      latents_dir(config, workdir),
      list(source_specs(config)),
      config.data,
      config.latents,
      vae_identity(config),
    )
  )


def held_out_batches(config, workdir) -> list:
  """config.eval_batches process-local batches of the configured input, drawn once with
  data seed config.eval_seed: other episodes of the same sources than training draws."""
  held_out = config.copy_and_resolve_references()
  held_out.data.seed = config.eval_seed
  held_out.data.worker_count = 0  # a few batches: no worker processes
  held_out.eval_every = 0  # the copy draws batches; it does not evaluate
  it = make_input(held_out, workdir)
  return [next(it) for _ in range(config.eval_batches)]


def evaluates(config, first_step: int) -> bool:
  """Whether a run from first_step to config.total_steps has an evaluation step."""
  every = config.eval_every
  return every > 0 and config.total_steps // every > first_step // every


def global_batches(local_batches, config, mesh, first_step=1):
  """Checked process-local batches -> global batches on `mesh`, one per step from first_step.

  A batch holding an example with NaN or inf (`episodes.NonFiniteExampleError`, found on the
  host by the pipeline) stops the run with the step and the example named; with
  config.data.skip_nonfinite the pipeline redraws such examples, and their running
  count is logged.
  """
  local_batches, skipped = iter(local_batches), 0
  for step in itertools.count(first_step):
    try:
      local = next(local_batches)
    except StopIteration:
      return
    except episodes.NonFiniteExampleError as e:
      raise episodes.NonFiniteExampleError(f"Step {step}: {e}") from None
    check_batch(local, config)
    if np.any(local.get("skipped", 0)):
      skipped += int(np.sum(local["skipped"]))
      logging.warning("Step %d: %d examples with NaN or inf skipped so far.", step, skipped)
    yield mesh_lib.global_batch({k: local[k] for k in CLIP_KEYS + ("num_pairs",)}, mesh)


def train(config: ml_collections.ConfigDict, workdir: str, batches=None, eval_batches=None):
  """Trains J-DiT; checkpoints, metrics.jsonl, TensorBoard event files and the config go
  to `workdir` (a profile to workdir/profile with config.profile_steps).

  Args:
    config: a configs/train_dit.py config.
    workdir: output directory; a run there resumes from its latest checkpoint.
    batches: optional iterator of process-local batches replacing the configured
      input (tests). A Grain iterator's position is checkpointed; any other
      iterator restarts from its beginning on resume.
    eval_batches: optional process-local held-out batches replacing
      `held_out_batches` (every config.eval_every steps). With `batches` given and
      no eval_batches there is no evaluation.

  Returns:
    The final TrainState.

  Raises:
    FloatingPointError: a step gave a non-finite loss or norm (checked every
      config.log_every steps and before every save). The message names the step
      and the quantity; that state is never saved.
  """
  # ## Config and logging.
  check_config(config, batches_given=batches is not None)
  os.makedirs(workdir, exist_ok=True)
  logging.info(
    "J-DiT training in %s, %d processes, %d devices.",
    workdir,
    jax.process_count(),
    jax.device_count(),
  )

  # ## Mesh.
  mesh = mesh_lib.create_mesh(config.mesh)
  logging.info("Mesh %s.", dict(mesh.shape))
  if batches is None:
    check_batch_split(config, mesh)

  # ## Input.
  it = make_input(config, workdir) if batches is None else iter(batches)
  data_iterator = it if hasattr(it, "get_state") else None  # checkpointable: Grain

  # ## Model and optimizer.
  model = jdit.JDiT(config.model)
  tx, schedule = state_lib.create_optimizer(config.optimizer)
  vae, vae_params = None, None
  if config.input == "pixels":
    vae, host_vae_params = load_vae(config)  # small: replicated
    vae_params = mesh_lib.put_global(
      host_vae_params, jax.tree.map(lambda _: mesh_lib.replicated(mesh), host_vae_params)
    )

  # ## Shard: restore the latest checkpoint, or init directly in the sharded layout.
  rng = jax.random.PRNGKey(config.seed)
  abstract, shardings = abstract_train_state(model, tx, config, mesh, rng)
  ckpt = checkpoint.CheckpointManager(
    os.path.join(workdir, "checkpoints"),
    save_every=config.checkpoint_every,
    keep=config.keep_checkpoints,
  )
  with ckpt:
    if ckpt.latest_step() is not None:
      logging.info("Resuming from %s/%d.", ckpt.directory, ckpt.latest_step())
      state, _ = ckpt.restore(
        abstract, data_iterator=data_iterator, fallback=config.restore_fallback
      )
    else:
      state, _ = init_train_state(model, tx, config, mesh, rng)

    # ## Update step.
    step_fn = create_train_step(model, tx, schedule, config, shardings, vae=vae)
    with jax.set_mesh(mesh), nn.logical_axis_rules(mesh_lib.AXIS_RULES):
      # ## Evaluation: held-out batches drawn once, their loss inputs computed once.
      eval_fn = None
      if batches is not None and eval_batches is None:
        logging.info("Batches given without eval_batches: no evaluation.")
      elif evaluates(config, int(state.step)):
        if eval_batches is None:
          eval_batches = held_out_batches(config, workdir)
        held_out = list(global_batches(iter(eval_batches), config, mesh))
        eval_fn = create_eval_fn(model, config, held_out, vae_params, mesh, vae=vae)

      # ## Loop.
      return loop.run(
        lambda state, batch: step_fn(state, vae_params, batch),
        state,
        global_batches(it, config, mesh, first_step=int(state.step) + 1),
        ckpt=ckpt,
        total_steps=config.total_steps,
        log_every=config.log_every,
        workdir=workdir,
        config=config,
        data_iterator=data_iterator,
        tokens_per_example=functools.partial(tokens_per_example, config=config),
        eval_fn=eval_fn,
        eval_every=config.eval_every,
        profile_steps=config.profile_steps,
        desc="train J-DiT",
      )
