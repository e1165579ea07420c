"""J-DiT training with the rectified-flow loss, sharded over devices and hosts.

Time convention: see `lavin_jax.flow` (t = 0 noise, t = 1 data).

Read top to bottom, like big_vision's trainers: inputs (pixels -> latents, the
in-context condition, context dropout), loss, update step, sharded init, then
`train(config, workdir)`: logging, mesh, input, model, shard, checkpoint, loop.

A batch (see lavin_jax.data.pipeline) holds 'context_inputs' and
'context_targets' (B, K, T, H, W, 3), 'query' and 'target' (B, T, H, W, 3) in
[-1, 1] and 'num_pairs' (B,); with config.input = 'latents' the same keys hold
ST-VAE latents (B, K, T', h, w, 16) etc. already normalised.
"""

import functools
import json
import os
import time

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from lavin_jax import flow
from lavin_jax.models import jdit
from lavin_jax.parallel import mesh as mesh_lib
from lavin_jax.train import state as state_lib

CLIP_KEYS = ("context_inputs", "context_targets", "query", "target")
INPUTS = ("pixels", "latents")


# ---------------------------------------------------------------------------------------
# Inputs: pixels -> latents, the condition sequence, context dropout.


def encode_clips(vae, vae_params, clips, key, vae_config):
  """Pixels (N, T, H, W, 3) -> normalised latents (N, T', H/8, W/8, 16).

  Frozen ST-VAE: a posterior sample (as the released inference does), then the
  J-DiT latent normalisation; no gradient flows back.
  """
  from lavin_jax.models import stvae  # pylint: disable=g-import-not-at-top
  mean, logvar = vae.apply({"params": vae_params}, clips, method="encode")
  z = stvae.sample_posterior(mean, logvar, key)
  return jax.lax.stop_gradient(stvae.normalize_latents(z, vae_config))


def encode_batch(vae, vae_params, batch, key, vae_config):
  """Encodes every clip of a pixel batch separately, in one ST-VAE call.

  Returns the batch's clip keys as latents: context_* (B, K, T', h, w, 16),
  query and target (B, T', h, w, 16).
  """
  b, k = batch["context_inputs"].shape[:2]
  clip_shape = batch["query"].shape[1:]
  clips = jnp.concatenate([
      batch["context_inputs"].reshape(b * k, *clip_shape),
      batch["context_targets"].reshape(b * k, *clip_shape),
      batch["query"], batch["target"]], axis=0)
  z = encode_clips(vae, vae_params, clips, key, vae_config)
  ins, tgts, query, target = jnp.split(z, [b * k, 2 * b * k, 2 * b * k + b], axis=0)
  return {"context_inputs": ins.reshape(b, k, *z.shape[1:]),
          "context_targets": tgts.reshape(b, k, *z.shape[1:]),
          "query": query, "target": target}


def build_condition(context_inputs, context_targets, query, num_pairs, drop):
  """The in-context condition [in_1, tgt_1, ..., in_K, tgt_K, query] and its mask.

  Pairs at index >= num_pairs are padding: masked (invisible to J-DiT). An
  example with drop=True keeps only [one zero frame, its query] visible, which is
  `jdit.null_condition(query)` padded with masked frames: the null condition
  guidance uses at sampling, with static shapes.

  Args:
    context_inputs, context_targets: latents (B, K, T', h, w, C).
    query: latents (B, T', h, w, C).
    num_pairs: (B,) int, valid pairs per example.
    drop: (B,) bool, context dropout.

  Returns:
    cond (B, (2K + 1) T', h, w, C) and cond_mask (B, (2K + 1) T') bool.
  """
  b, k, t = context_inputs.shape[:3]
  pairs = jnp.stack([context_inputs, context_targets], axis=2)  # (B, K, 2, T', h, w, C)
  pairs = pairs.reshape(b, 2 * k * t, *pairs.shape[4:])
  pair_mask = jnp.repeat(jnp.arange(k)[None] < num_pairs[:, None], 2 * t, axis=1)
  first = (jnp.arange(2 * k * t) == 0)[None]  # (1, 2KT')
  pair_mask = jnp.where(drop[:, None], first, pair_mask)
  zero_first = (drop[:, None] & first)[..., None, None, None]
  pairs = jnp.where(zero_first, jnp.zeros((), pairs.dtype), pairs)
  cond = jnp.concatenate([pairs, query.astype(pairs.dtype)], axis=1)
  cond_mask = jnp.concatenate([pair_mask, jnp.ones((b, t), bool)], axis=1)
  return cond, cond_mask


def tokens_per_example(latent_shapes, patch_size: int) -> int:
  """Joint sequence length (condition + target tokens) of one example."""
  k, t, h, w = latent_shapes["context_inputs"][1:5]
  return (2 * k + 2) * t * (h // patch_size) * (w // patch_size)


# ---------------------------------------------------------------------------------------
# Loss.


def velocity_loss(model, params, x_data, noise, t, cond, cond_mask, l1_weight,
                  dropout_key=None):
  """Flow loss of J-DiT's velocity at x_t against u = x_data - noise.

  The loss covers the target only; padding lives in the condition, where
  cond_mask hides it. dropout_key=None runs deterministically (no drop path).
  """
  x_t = flow.interpolate(x_data, noise, t)
  rngs = None if dropout_key is None else {"dropout": dropout_key}
  v = model.apply({"params": params}, x_t, t, cond, cond_mask,
                  deterministic=dropout_key is None, rngs=rngs)
  return flow.flow_loss(v, flow.velocity_target(x_data, noise), l1_weight)


def sample_training_inputs(latents, num_pairs, key, flow_config):
  """Random draws of one step: context dropout, times, noise -> the loss inputs.

  Returns (x_data, noise, t, cond, cond_mask).
  """
  k_drop, k_time, k_noise = jax.random.split(key, 3)
  x_data = latents["target"].astype(jnp.float32)
  b = x_data.shape[0]
  drop = jax.random.bernoulli(k_drop, flow_config.uncond_ratio, (b,))
  cond, cond_mask = build_condition(
      latents["context_inputs"], latents["context_targets"], latents["query"],
      num_pairs, drop)
  t = flow.sample_time(k_time, (b,), flow_config)
  noise = jax.random.normal(k_noise, x_data.shape, jnp.float32)
  return x_data, noise, t, cond, cond_mask


# ---------------------------------------------------------------------------------------
# Update step.


def train_step(state, vae_params, batch, *, model, tx, schedule, config, vae=None):
  """One AdamW + EMA update on a global batch. Returns (new state, metrics).

  The step's key is fold_in(state.rng, state.step): the same state and batch
  always give the same update.
  """
  key = jax.random.fold_in(state.rng, state.step)
  k_vae, k_inputs, k_dropout = jax.random.split(key, 3)
  if config.input == "pixels":
    latents = encode_batch(vae, vae_params, batch, k_vae, config.vae)
  else:
    latents = {k: batch[k] for k in CLIP_KEYS}
  x_data, noise, t, cond, cond_mask = sample_training_inputs(
      latents, batch["num_pairs"], k_inputs, config.flow)

  def loss_fn(params):
    return velocity_loss(model, params, x_data, noise, t, cond, cond_mask,
                         config.flow.l1_weight, dropout_key=k_dropout)

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  new_state, updates = state_lib.apply_gradients(
      state, grads, tx, config.optimizer.ema_decay)
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
  step = functools.partial(train_step, model=model, tx=tx, schedule=schedule,
                           config=config, vae=vae)
  replicated = jax.sharding.NamedSharding(
      jax.tree.leaves(state_shardings)[0].mesh, jax.sharding.PartitionSpec())
  return jax.jit(step, out_shardings=(state_shardings, replicated), donate_argnums=(0,))


# ---------------------------------------------------------------------------------------
# Sharded init.


def init_train_state(model, tx, config, mesh, rng):
  """A TrainState created directly in its sharded layout.

  Shapes come from `jax.eval_shape`, shardings from the logical axis names of
  the parameters (mesh_lib.AXIS_RULES), and `jax.jit(init, out_shardings=...)`
  makes every device create only its own shard.

  Returns:
    (state, state_shardings).
  """
  c = config.model
  size = 2 * c.patch_size  # parameters do not depend on the input size
  x = jnp.zeros((1, 1, size, size, c.in_channels), jnp.float32)

  def init(rng):
    k_params, k_state = jax.random.split(rng)
    params = model.init({"params": k_params}, x, jnp.zeros((1,)), x)["params"]
    return state_lib.create_train_state(params, tx, k_state)

  abstract = jax.eval_shape(init, rng)
  shardings = mesh_lib.logical_shardings(mesh, abstract)
  state = jax.jit(lambda r: nn.unbox(init(r)), out_shardings=shardings)(rng)
  return state, shardings
