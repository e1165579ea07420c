"""J-DiT training-step throughput: steps/s, tokens/s, MFU and peak memory.

  python bench/train_step.py [--sizes=tiny,0.1b] [--batches=1,4] [--pairs=4]
      [--resolution=256] [--steps=3] [--dtype=float32]

Each figure trains on stored posterior moments (the ST-VAE is not in the step) with
`pairs` context pairs at `resolution` px (256 px -> 32 x 32 latents, 16 x 16 tokens a
frame), on all local devices (data parallel). MFU = model FLOPs / step time / the
machine's matmul peak, which is measured in the same run (a square matmul in the
compute dtype, best of several). Model FLOPs = 3 x the forward matmul FLOPs
(projections, SwiGLU, embedders, final layer, attention scores and values); rematerialised
recompute is not counted. Peak memory is XLA's compiled estimate (arguments + outputs +
temporaries), plus the allocator's peak where the backend reports one. One JSON line
per figure.
"""

import time

from absl import app
from absl import flags
import common
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lavin_jax import configs
from lavin_jax.configs import train_dit
from lavin_jax.models import jdit
from lavin_jax.models import layers
from lavin_jax.parallel import mesh as mesh_lib
from lavin_jax.train import dit
from lavin_jax.train import state as state_lib

_SIZES = common.define_choices("sizes", "tiny,0.1b", configs.JDIT_SIZES, "J-DiT sizes")
_BATCHES = common.define_integers("batches", "1,4", "Local batch sizes.")
_PAIRS = flags.DEFINE_integer("pairs", 4, "Context pairs per example.")
_RESOLUTION = flags.DEFINE_integer("resolution", 256, "Image side in pixels.")
_STEPS = flags.DEFINE_integer("steps", 3, "Timed steps per figure after a warm-up step.")
_DTYPE = flags.DEFINE_string(
  "dtype", None, "Compute dtype; default bfloat16 on accelerators, float32 on CPU."
)
_MATMUL_SIZE = flags.DEFINE_integer(
  "matmul_size", None, "Side of the peak-measuring matmul; default 8192 (CPU: 2048)."
)


def matmul_peak(dtype, size, repeats=5):
  """Best FLOP/s of a (size x size) @ (size x size) matmul on one device."""
  a = jnp.ones((size, size), dtype)
  f = jax.jit(lambda x: x @ x)
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


def bench(size, batch, dtype, peak):
  config = train_dit.get_config(size)
  config.input = "latents"
  config.model.dtype = dtype
  latent = _RESOLUTION.value // 8
  rng = np.random.default_rng(0)
  k = _PAIRS.value
  moments = 2 * config.model.in_channels  # stored posterior: mean | log-variance
  local = {
    "context_inputs": rng.standard_normal((batch, k, 1, latent, latent, moments), np.float32),
    "context_targets": rng.standard_normal((batch, k, 1, latent, latent, moments), np.float32),
    "query": rng.standard_normal((batch, 1, latent, latent, moments), np.float32),
    "target": rng.standard_normal((batch, 1, latent, latent, moments), np.float32),
    "num_pairs": np.full((batch,), k, np.int32),
  }
  model = jdit.JDiT(config.model)
  tx, schedule = state_lib.create_optimizer(config.optimizer)
  mesh = mesh_lib.create_mesh({"data": -1})
  state, shardings = dit.init_train_state(model, tx, config, mesh, jax.random.PRNGKey(0))
  step = dit.create_train_step(model, tx, schedule, config, shardings)
  with jax.set_mesh(mesh), nn.logical_axis_rules(mesh_lib.AXIS_RULES):
    global_batch = mesh_lib.global_batch(local, mesh)
    compiled = step.lower(state, None, global_batch).compile()
    memory = compiled.memory_analysis()
    state, metrics = compiled(state, None, global_batch)  # warm-up
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(_STEPS.value):
      state, metrics = compiled(state, None, global_batch)
    jax.block_until_ready((state, metrics))
    seconds = (time.perf_counter() - start) / _STEPS.value

  tokens_per_frame = (latent // config.model.patch_size) ** 2
  flops = 3 * forward_flops(config.model, batch, 2 * k + 1, 1, tokens_per_frame)
  tokens = batch * (2 * k + 2) * tokens_per_frame
  stats = jax.local_devices()[0].memory_stats() or {}
  allocator_peak = stats.get("peak_bytes_in_use")
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  return {
    "figure": "train_step",
    "size": size,
    "params_m": round(n_params / 1e6, 2),
    "batch": batch,
    "pairs": k,
    "resolution": _RESOLUTION.value,
    "tokens_per_example": tokens // batch,
    "dtype": dtype,
    "remat_policy": config.model.remat_policy,
    "devices": jax.device_count(),
    "backend": jax.default_backend(),
    "steps_per_sec": round(1 / seconds, 4),
    "examples_per_sec": round(batch / seconds, 3),
    "tokens_per_sec": round(tokens / seconds, 1),
    "model_tflop_per_step": round(flops / 1e12, 4),
    "mfu": round(flops / seconds / (peak * jax.device_count()), 4),
    "peak_memory_gib": round(
      (memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes)
      / 2**30,
      3,
    ),
    "allocator_peak_gib": None if allocator_peak is None else round(allocator_peak / 2**30, 3),
    "loss": round(float(metrics["loss"]), 4),
  }


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  on_cpu = jax.default_backend() == "cpu"
  dtype = _DTYPE.value or ("float32" if on_cpu else "bfloat16")
  size = _MATMUL_SIZE.value or (2048 if on_cpu else 8192)
  peak = matmul_peak(jnp.dtype(dtype), size)
  common.print_figure(
    {
      "figure": "matmul_peak",
      "backend": jax.default_backend(),
      "dtype": dtype,
      "matmul_size": size,
      "tflops_per_device": round(peak / 1e12, 4),
    }
  )
  for model_size in _SIZES.value:
    for batch in _BATCHES.value:
      common.print_figure(bench(model_size, batch, dtype, peak))


if __name__ == "__main__":
  app.run(main)
