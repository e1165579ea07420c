"""The memory plan of a J-DiT training run: the train step compiled for a mesh, never run.

  python bench/aot_plan.py --size=3.4b --devices=64 --batch=640 \
      [--layouts=1x64x1,8x8x1,1x16x4,2x32x1] [--remat_policies=save_attention]
      [--pairs=8] [--resolution=256] [--topology=v5p:4x4x4] [--grad_accum=1,4]

Each layout (data x fsdp x tensor) compiles the J-DiT update step
(lavin_jax.train.dit.create_train_step) ahead of time on abstract arguments (state and
batch as ShapeDtypeStructs with their shardings; nothing is allocated) and prints one
JSON line: XLA's per-device memory (arguments, outputs, temporaries; per_device_gib is
their sum, an upper bound of the peak that counts the donated state twice), the model
FLOPs of one step (3 x the forward matmul FLOPs, bench/workloads.py) and whether it
fits an 80 GB GPU (per_device_gib <= 0.92 x 81,559 MiB = 73.3 GiB: an H100's memory, the
share launch/slurm_train_dit.sh gives XLA).

The step trains on stored latents (config.input = 'latents'): the frozen ST-VAE is not
in it. Every example has `pairs` context pairs (the padded maximum) at `resolution` px.

Targets (lavin_jax.parallel.aot): by default `devices` virtual CPU devices, a stand-in
for as many GPUs: the sharding, collectives and state are the GPU's, but XLA:GPU
fuses differently and its flash attention (cuDNN) differs from the CPU path compiled here
('chunked': memory linear in the sequence, as flash attention), so GPU temporaries
differ. --topology compiles for the chips of a Cloud TPU topology with libtpu (exact
per-chip figures; `hbm_gb` and `fits_hbm` compare them with the chip's memory).
"""

import os
import time

from absl import app
from absl import flags
import common
import flax.linen as nn
import jax
import workloads

from lavin_jax import configs
from lavin_jax.configs import train_dit
from lavin_jax.models import attention
from lavin_jax.models import jdit
from lavin_jax.parallel import aot
from lavin_jax.parallel import mesh as mesh_lib
from lavin_jax.train import dit
from lavin_jax.train import state as state_lib

GB = 1e9
# What XLA may use of an 80 GB GPU: an H100's 81,559 MiB as CUDA reports it, times the
# XLA_PYTHON_CLIENT_MEM_FRACTION of launch/slurm_train_dit.sh.
FIT_80GB_BYTES = 0.92 * 81_559 * 2**20
TPU_HBM_GB = {"v4": 32, "v5e": 16, "v5litepod": 16, "v5p": 95, "v6e": 32}

_SIZE = flags.DEFINE_enum("size", "3.4b", configs.JDIT_SIZES, "J-DiT size.")
_DEVICES = flags.DEFINE_integer("devices", 64, "Virtual CPU devices (without --topology).")
_BATCH = flags.DEFINE_integer("batch", 640, "Global batch (examples per step).")
_LAYOUTS = flags.DEFINE_list(
  "layouts",
  ["1x64x1", "8x8x1", "1x16x4", "2x32x1"],
  "Meshes as DATAxFSDPxTENSOR; their product must be the device count.",
)
_REMAT_POLICIES = common.define_choices(
  "remat_policies",
  [],
  tuple(jdit.REMAT_POLICIES),
  "Remat policies to plan (default: the size's configured one)",
)
_PAIRS = flags.DEFINE_integer("pairs", 8, "Context pairs per example (all slots full).")
_RESOLUTION = flags.DEFINE_integer("resolution", 256, "Image side in pixels.")
_DTYPE = flags.DEFINE_string("dtype", "bfloat16", "J-DiT compute dtype.")
_ATTENTION = flags.DEFINE_string(
  "attention_impl",
  None,
  "Attention implementation; default 'chunked' on CPU devices, 'splash' (else 'xla') on TPU.",
)
_TOPOLOGY = flags.DEFINE_string(
  "topology", None, "A Cloud TPU topology, e.g. v5p:4x4x4 (needs libtpu); else CPU devices."
)
_GRAD_ACCUM = common.define_integers(
  "grad_accum", "1", "Microbatches per update to plan (config.grad_accum_steps)."
)


def parse_layout(text: str) -> dict:
  """'8x8x1' -> {'data': 8, 'fsdp': 8, 'tensor': 1}."""
  sizes = text.split("x")
  if len(sizes) != 3 or not all(s.isdigit() and int(s) > 0 for s in sizes):
    raise ValueError(f"Layout {text!r} is not DATAxFSDPxTENSOR, e.g. 8x8x1.")
  return dict(zip(mesh_lib.MESH_AXES, map(int, sizes)))


def default_attention() -> str:
  """The target's memory-linear attention: 'chunked' on CPU, splash (else XLA) on TPU.

  Named, not 'auto': 'auto' follows the backend of this process, which is the CPU.
  """
  if not _TOPOLOGY.value:
    return "chunked"
  return "splash" if "splash" in attention.IMPLEMENTATIONS else "xla"


def train_config(remat_policy: str, layout: dict, grad_accum: int):
  """The size's train_dit config on stored latents, with this plan's settings."""
  config = train_dit.get_config(_SIZE.value)
  config.input = "latents"
  overrides = [f"remat_policy={remat_policy}"]
  overrides.append(f"attention_impl={_ATTENTION.value or default_attention()}")
  config.model = workloads.model_config(_SIZE.value, _DTYPE.value, overrides)
  config.mesh.update(layout)
  config.data.batch_size = _BATCH.value
  if grad_accum != 1:
    if "grad_accum_steps" not in config:
      raise ValueError("This trainer has no config.grad_accum_steps; use --grad_accum=1.")
    config.grad_accum_steps = grad_accum
  return config


def abstract_batch(config, mesh):
  """ShapeDtypeStructs of one global batch of stored moments, sharded over the batch."""
  b, k = config.data.batch_size, _PAIRS.value
  side = _RESOLUTION.value // workloads.VAE_FACTOR
  clip = (1, side, side, 2 * config.model.in_channels)  # (T', h, w, mean | logvar)
  sharding = mesh_lib.batch_sharding(mesh)
  moments = lambda shape: jax.ShapeDtypeStruct(shape, "bfloat16", sharding=sharding)
  return {
    "context_inputs": moments((b, k) + clip),
    "context_targets": moments((b, k) + clip),
    "query": moments((b,) + clip),
    "target": moments((b,) + clip),
    "num_pairs": jax.ShapeDtypeStruct((b,), "int32", sharding=sharding),
  }


def check_layout(layout: dict, devices: int, batch: int, grad_accum: int) -> None:
  """Raises ValueError, before any compile, on a layout that cannot hold this batch."""
  shape = mesh_lib.mesh_shape(layout, devices)
  if batch % (shape[0] * shape[1] * grad_accum):
    raise ValueError(
      f"Global batch {batch} does not divide over data x fsdp = {shape[0] * shape[1]} "
      f"devices x {grad_accum} microbatches; change --batch, --layouts or --grad_accum."
    )


def plan(target: str, devices: list, layout: dict, remat_policy: str, grad_accum: int) -> dict:
  config = train_config(remat_policy, layout, grad_accum)
  mesh = mesh_lib.create_mesh(config.mesh, devices)
  model = jdit.JDiT(config.model)
  tx, schedule = state_lib.create_optimizer(config.optimizer)
  state, shardings = dit.abstract_train_state(model, tx, config, mesh, jax.random.key(0))
  step = dit.create_train_step(model, tx, schedule, config, shardings)
  start = time.perf_counter()
  with jax.set_mesh(mesh), nn.logical_axis_rules(mesh_lib.AXIS_RULES):
    compiled = aot.compile_abstract(step, state, None, abstract_batch(config, mesh))
  seconds = time.perf_counter() - start
  memory = aot.memory_figures(compiled)
  gib = lambda name: round(memory[name] / 2**30, 3)
  per_frame = (_RESOLUTION.value // workloads.VAE_FACTOR // config.model.patch_size) ** 2
  flops = 3 * workloads.forward_flops(
    config.model, _BATCH.value, 2 * _PAIRS.value + 1, 1, per_frame
  )
  figure = {
    "figure": "aot_plan",
    "size": _SIZE.value,
    "params_b": round(sum(x.size for x in jax.tree.leaves(state.params)) / 1e9, 3),
    "target": target,
    "mesh": dict(mesh.shape),
    "global_batch": _BATCH.value,
    "grad_accum_steps": grad_accum,
    "pairs": _PAIRS.value,
    "resolution": _RESOLUTION.value,
    "tokens_per_example": (2 * _PAIRS.value + 2) * per_frame,
    "dtype": _DTYPE.value,
    "remat_policy": remat_policy,
    "attention_impl": config.model.attention_impl,
    "argument_gib": gib("argument_bytes"),
    "output_gib": gib("output_bytes"),
    "temp_gib": gib("temp_bytes"),
    "alias_gib": gib("alias_bytes"),
    "per_device_gib": gib("total_bytes"),
    "model_tflops_per_step": round(flops / 1e12, 3),
    "fits_80gb": memory["total_bytes"] <= FIT_80GB_BYTES,
    "compile_seconds": round(seconds, 1),
  }
  if target.startswith("tpu:"):
    hbm = TPU_HBM_GB.get(_TOPOLOGY.value.split(":")[0])
    figure["hbm_gb"] = hbm
    figure["fits_hbm"] = None if hbm is None else memory["total_bytes"] <= hbm * GB
  return figure


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  target = f"tpu:{_TOPOLOGY.value}" if _TOPOLOGY.value else f"cpu:{_DEVICES.value}"
  layouts = [parse_layout(text) for text in _LAYOUTS.value]
  if not _TOPOLOGY.value:
    aot.use_cpu_devices(_DEVICES.value)
  devices = aot.target_devices(target)
  for layout in layouts:
    for accum in _GRAD_ACCUM.value:
      check_layout(layout, len(devices), _BATCH.value, accum)
  policies = _REMAT_POLICIES.value or [configs.jdit(_SIZE.value).remat_policy]
  for layout in layouts:
    for policy in policies:
      for accum in _GRAD_ACCUM.value:
        common.print_figure(plan(target, devices, layout, policy, accum))


if __name__ == "__main__":
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  app.run(main)
