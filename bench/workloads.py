"""The J-DiT computations the benches time: forward, guided sampling and a train step.

Each builder compiles one computation on random weights and random latents (batch
examples of `pairs` context pairs at `resolution` px; 256 px -> 32 x 32 latents) and
returns a Workload: `run()` executes it once (a train step advances its own state).
"""

from typing import Any, Callable, NamedTuple

import common
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lavin_jax import configs
from lavin_jax import flow
from lavin_jax.configs import sampling as sampling_configs
from lavin_jax.configs import train_dit
from lavin_jax.models import jdit
from lavin_jax.models import layers
from lavin_jax.parallel import mesh as mesh_lib
from lavin_jax.train import dit
from lavin_jax.train import state as state_lib

VAE_FACTOR = 8  # pixels per latent cell


class Workload(NamedTuple):
  run: Callable[[], Any]  # one execution; returns its outputs
  config: ml_collections.ConfigDict  # the J-DiT config
  compiled: jax.stages.Compiled
  compile_seconds: float
  flops: float  # model matmul FLOPs of one run (recompute not counted)
  tokens: int  # tokens of the sequences through J-DiT per run
  params: int  # J-DiT parameters
  # Train steps only: () -> (step_fn(state, batch) -> (state, metrics), current state,
  # batch); the state is donated to the next step, after which `run` no longer works.
  train_inputs: Callable[[], tuple] | None = None


def model_config(size: str, dtype: str, overrides=()) -> ml_collections.ConfigDict:
  """configs.jdit(size) in `dtype`, with 'field=value' overrides (e.g. 'depth=2')."""
  config = configs.jdit(size)
  config.dtype = dtype
  for item in overrides:
    field, _, value = item.partition("=")
    if field not in config:
      raise ValueError(f"No J-DiT config field {field!r} (override {item!r}).")
    kind = type(config[field])
    config[field] = value.lower() == "true" if kind is bool else kind(value)
  return config


def matmul_peak(dtype, size: int, repeats: int = 10) -> float:
  """Best FLOP/s of a (size x size) @ (size x size) matmul on one device.

  Summed in float32 like J-DiT's dense layers (models.layers._matmul): XLA CPU runs a
  bfloat16 dot natively only when asked for a float32 result.
  """
  a = jnp.ones((size, size), dtype)
  f = jax.jit(lambda x: jnp.dot(x, x, preferred_element_type=jnp.float32))
  f(a).block_until_ready()
  return 2 * size**3 / min(common.repeat_seconds(lambda: f(a), repeats))


def forward_flops(c, batch, cond_frames, x_frames, tokens_per_frame):
  """Matmul FLOPs of one J-DiT forward pass on a batch."""
  hd = c.hidden_size // c.num_heads
  d, inner = c.hidden_size, layers.mlp_hidden_size(c)
  per_token = (
    d * c.num_heads * hd + 2 * d * c.num_kv_heads * hd + c.num_heads * hd * d + 3 * d * inner
  )
  tokens = (cond_frames + x_frames) * tokens_per_frame
  patch = c.patch_size**2 * c.in_channels
  attention = 4 * tokens**2 * c.num_heads * hd
  blocks = c.depth * (2 * per_token * tokens + attention)
  io = 2 * patch * d * tokens + 2 * d * patch * x_frames * tokens_per_frame
  return batch * (blocks + io)


def _tokens_per_frame(c, resolution):
  return (resolution // VAE_FACTOR // c.patch_size) ** 2


def _latents(rng, batch, frames, resolution, channels):
  side = resolution // VAE_FACTOR
  return rng.standard_normal((batch, frames, side, side, channels)).astype(np.float32)


def random_params(model, x, cond, rng):
  """N(0, 0.02^2) J-DiT weights of the shapes `model.init` gives (nothing compiled)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), x, jnp.zeros(x.shape[:1]), cond)
  return jax.tree.map(
    lambda s: jnp.asarray(0.02 * rng.standard_normal(s.shape), s.dtype), nn.unbox(shapes["params"])
  )


def random_stvae_params(module, rng):
  """ST-VAE weights: fan-in scaled Gaussian kernels, unit scales, zero biases (activations
  keep their size through the network: no denormals, which are slow on CPU)."""
  video = jax.ShapeDtypeStruct((1, 1, 8, 8, 3), jnp.float32)
  shapes = jax.eval_shape(module.init, jax.random.key(0), video)["params"]

  def draw(path, leaf):
    name = path[-1].key
    if name == "scale":
      return jnp.ones(leaf.shape)
    if name == "bias":
      return jnp.zeros(leaf.shape)
    fan_in = np.prod(leaf.shape[:-1])
    return jnp.asarray(rng.standard_normal(leaf.shape, np.float32) / np.sqrt(fan_in))

  return jax.tree_util.tree_map_with_path(draw, nn.unbox(shapes))


def _compile(fn, *args):
  return common.timed(lambda: fn.lower(*args).compile())


def _count(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))


def interleaved(runs, repeats: int) -> tuple[list[float], list]:
  """(best seconds of each run, its last outputs) over `repeats` rounds of one call each.

  Interleaving exposes every run to the same machine load (shared CPUs).
  """
  best, outputs = [float("inf")] * len(runs), [None] * len(runs)
  for _ in range(repeats):
    for i, run in enumerate(runs):
      outputs[i], seconds = common.timed(run)
      best[i] = min(best[i], seconds)
  return best, outputs


def forward(config, batch: int, pairs: int, resolution: int) -> Workload:
  """One J-DiT velocity evaluation on the conditional sequence."""
  model = jdit.JDiT(config)
  rng = np.random.default_rng(0)
  x = jnp.asarray(_latents(rng, batch, 1, resolution, config.in_channels))
  cond = jnp.asarray(_latents(rng, batch, 2 * pairs + 1, resolution, config.in_channels))
  params = random_params(model, x, cond, rng)
  t = jnp.full((batch,), 0.5)
  fn = jax.jit(model.apply)
  compiled, compile_s = _compile(fn, {"params": params}, x, t, cond)
  per_frame = _tokens_per_frame(config, resolution)
  return Workload(
    run=lambda: compiled({"params": params}, x, t, cond),
    config=config,
    compiled=compiled,
    compile_seconds=compile_s,
    flops=forward_flops(config, batch, 2 * pairs + 1, 1, per_frame),
    tokens=batch * (2 * pairs + 2) * per_frame,
    params=_count(params),
  )


def sampling(
  config,
  pairs: int,
  resolution: int,
  num_steps: int,
  make_sampler: Callable = flow.make_guided_sampler,
  params=None,
) -> Workload:
  """The whole guided Euler loop (released settings) on one example, in one jit.

  make_sampler(model) gives the sampler (default the released one; FLOPs count that
  one); params default to random weights. The layers run unrolled, as in the pipeline.
  """
  config, params = jdit.unrolled(config, params)
  released = sampling_configs.released()
  model = jdit.JDiT(config)
  rng = np.random.default_rng(0)
  noise = jnp.asarray(_latents(rng, 1, 1, resolution, config.in_channels))
  cond = jnp.asarray(_latents(rng, 1, 2 * pairs + 1, resolution, config.in_channels))
  cond_null = jdit.null_condition(cond[:, -1:])
  params = random_params(model, noise, cond, rng) if params is None else params
  grid = jnp.asarray(flow.time_grid(num_steps))
  args = (params, noise, cond, cond_null, grid, released.cfg_scale)
  compiled, compile_s = _compile(make_sampler(model), *args)
  per_frame = _tokens_per_frame(config, resolution)
  evaluations = num_steps - 1
  flops = evaluations * (
    forward_flops(config, 1, 2 * pairs + 1, 1, per_frame)
    + forward_flops(config, 1, 2, 1, per_frame)
  )
  return Workload(
    run=lambda: compiled(*args),
    config=config,
    compiled=compiled,
    compile_seconds=compile_s,
    flops=flops,
    tokens=evaluations * (2 * pairs + 5) * per_frame,
    params=_count(params),
  )


def train_step(
  size: str, model_config_: ml_collections.ConfigDict, batch: int, pairs: int, resolution: int
) -> Workload:
  """One AdamW update on precomputed latents (train_dit config of `size`), all devices."""
  config = train_dit.get_config(size)
  config.input = "latents"
  config.model = model_config_
  rng = np.random.default_rng(0)
  moments = 2 * config.model.in_channels  # stored posterior: mean | log-variance
  clips = lambda: _latents(rng, batch, pairs, resolution, moments)[:, :, None]
  local = {
    "context_inputs": clips(),
    "context_targets": clips(),
    "query": _latents(rng, batch, 1, resolution, moments),
    "target": _latents(rng, batch, 1, resolution, moments),
    "num_pairs": np.full((batch,), pairs, np.int32),
  }
  model = jdit.JDiT(config.model)
  tx, schedule = state_lib.create_optimizer(config.optimizer)
  mesh = mesh_lib.create_mesh({"data": -1})
  state, shardings = dit.init_train_state(model, tx, config, mesh, jax.random.PRNGKey(0))
  step = dit.create_train_step(model, tx, schedule, config, shardings)
  with jax.set_mesh(mesh), nn.logical_axis_rules(mesh_lib.AXIS_RULES):
    global_batch = mesh_lib.global_batch(local, mesh)
    compiled, compile_s = _compile(step, state, None, global_batch)
  holder = {"state": state}

  def run():
    with jax.set_mesh(mesh), nn.logical_axis_rules(mesh_lib.AXIS_RULES):
      holder["state"], metrics = compiled(holder["state"], None, global_batch)
    return holder["state"], metrics

  per_frame = _tokens_per_frame(config.model, resolution)
  return Workload(
    run=run,
    config=config.model,
    compiled=compiled,
    compile_seconds=compile_s,
    flops=3 * forward_flops(config.model, batch, 2 * pairs + 1, 1, per_frame),
    tokens=batch * (2 * pairs + 2) * per_frame,
    params=_count(state.params),
    train_inputs=lambda: (lambda s, b: compiled(s, None, b), holder["state"], global_batch),
  )
