"""Train state, optimizer and EMA for J-DiT training; the optimizer of every trainer.

J-DiT's optimizer is the paper's: global-norm clipping, then AdamW (lr 1e-4, betas
(0.9, 0.95), weight decay 0.01, no warmup), all numbers from `config.optimizer`; the
ST-VAE and its discriminator use the same factory on their own `config.optimizer`.
Parameters, EMA and optimizer state are float32 (master weights); the model
casts to its compute dtype itself. `accumulated_gradients` computes a large batch's
gradient as the float32 mean over microbatches (gradient accumulation).
"""

from typing import Any

from flax import struct
import jax
import jax.numpy as jnp
import ml_collections
import optax


class TrainState(struct.PyTreeNode):
  """Everything a training step reads and writes; a plain pytree (checkpointable)."""

  step: jax.Array  # int32 scalar: number of updates applied
  params: Any
  ema_params: Any
  opt_state: Any
  rng: jax.Array  # raw uint32 key; the step key is fold_in(rng, step)


def create_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Learning-rate schedule from config.optimizer: 'constant' (default) or 'cosine'.

  Both take `warmup_steps` (default 0: no warmup); 'cosine' decays to
  `lr * end_lr_factor` at `decay_steps`.
  """
  lr, warmup = config.lr, config.get("warmup_steps", 0)
  if config.schedule == "constant":
    if warmup:
      return optax.warmup_constant_schedule(0.0, lr, warmup)
    return optax.constant_schedule(lr)
  if config.schedule == "cosine":
    if config.decay_steps <= warmup:
      raise ValueError(
        f"optimizer.decay_steps ({config.decay_steps}) must exceed warmup_steps ({warmup})."
      )
    return optax.warmup_cosine_decay_schedule(
      0.0, lr, warmup, config.decay_steps, end_value=lr * config.get("end_lr_factor", 0.0)
    )
  raise ValueError(f"Unknown optimizer.schedule {config.schedule!r}; use 'constant' or 'cosine'.")


def create_optimizer(config: ml_collections.ConfigDict):
  """(optax transformation, lr schedule) from an optimizer config (`config.optimizer`).

  Reads lr, b1, b2, eps, weight_decay, clip_norm and the schedule fields; J-DiT's
  ema_decay belongs to its train step, not to the optimizer.
  """
  schedule = create_schedule(config)
  tx = optax.chain(
    optax.clip_by_global_norm(config.clip_norm),
    optax.adamw(
      schedule, b1=config.b1, b2=config.b2, eps=config.eps, weight_decay=config.weight_decay
    ),
  )
  return tx, schedule


def split_microbatches(x: jax.Array, steps: int) -> jax.Array:
  """(B, ...) -> (steps, B / steps, ...); microbatch i holds rows i, steps + i, ...

  Interleaved, so that a batch sharded over its leading axis (into blocks of rows that
  `steps` divides) gives microbatches sharded the same way, with no data movement.
  """
  return jnp.swapaxes(x.reshape((x.shape[0] // steps, steps) + x.shape[1:]), 0, 1)


def accumulated_gradients(loss_fn, params, inputs, key, steps: int):
  """(loss, gradient) of the mean loss over a batch, from `steps` microbatches.

  loss_fn(params, microbatch inputs, key) -> mean loss of those examples. `inputs` is a
  pytree of arrays leading with the batch (B a multiple of steps). With steps > 1 a
  lax.scan runs loss_fn on each microbatch (`split_microbatches`) with key
  fold_in(key, i) and averages losses and gradients in float32: the gradient of the
  large batch, with the activation memory of one microbatch. steps = 1 is one call
  with `key`.
  """
  grad_fn = jax.value_and_grad(loss_fn)
  if steps == 1:
    return grad_fn(params, inputs, key)

  def accumulate(carry, xs):
    loss_sum, grad_sum = carry
    i, micro = xs
    loss, grads = grad_fn(params, micro, jax.random.fold_in(key, i))
    grad_sum = jax.tree.map(lambda a, g: a + g.astype(jnp.float32), grad_sum, grads)
    return (loss_sum + loss.astype(jnp.float32), grad_sum), None

  zeros = jax.tree.map(lambda p: jnp.zeros_like(p, jnp.float32), params)
  micro = jax.tree.map(lambda x: split_microbatches(x, steps), inputs)
  (loss_sum, grad_sum), _ = jax.lax.scan(
    accumulate, (jnp.zeros((), jnp.float32), zeros), (jnp.arange(steps), micro)
  )
  return loss_sum / steps, jax.tree.map(lambda g: g / steps, grad_sum)


def ema_update(ema_params, params, decay: float):
  """ema <- decay * ema + (1 - decay) * params."""
  return optax.incremental_update(params, ema_params, step_size=1.0 - decay)


def create_train_state(params, tx: optax.GradientTransformation, rng) -> TrainState:
  """Step 0; the EMA starts as a copy of the parameters."""
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    ema_params=jax.tree.map(jnp.copy, params),
    opt_state=tx.init(params),
    rng=rng,
  )


def apply_gradients(state: TrainState, grads, tx: optax.GradientTransformation, ema_decay: float):
  """One optimizer + EMA update. Returns (new state, the applied updates)."""
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(
    step=state.step + 1,
    params=params,
    opt_state=opt_state,
    ema_params=ema_update(state.ema_params, params, ema_decay),
  )
  return new_state, updates
