"""J-DiT training-step throughput: steps/s, tokens/s, MFU and peak memory.

  python bench/train_step.py [--sizes=tiny,0.1b] [--batches=1,4] [--pairs=4]
      [--resolution=256] [--steps=3] [--dtype=float32] [--remat_policies=none,nothing_saveable]
      [--peak_tflops=989] [--loop_overhead_steps=10]

Each figure trains on stored posterior moments (the ST-VAE is not in the step) with
`pairs` context pairs at `resolution` px (256 px -> 32 x 32 latents, 16 x 16 tokens a
frame), on all local devices (data parallel); bench/workloads.py builds the step.
Several remat policies (default: the size's configured one) are timed in one run,
their steps interleaved, best of `steps`. MFU = model FLOPs / step time / the
machine's matmul peak, which is measured in the same run (a square matmul in the
compute dtype, best of several). Model FLOPs = 3 x the forward matmul FLOPs
(projections, SwiGLU, embedders, final layer, attention scores and values); rematerialised
recompute is not counted. `mfu_chip` divides by the chip's bf16 dense peak instead
(--peak_tflops, else `CHIP_PEAK_TFLOPS` by device kind; absent on other chips). Peak
memory is XLA's compiled estimate (arguments + outputs + temporaries), plus the
allocator's peak where the backend reports one.

`loop_overhead` (first size and batch): steps/s of the training loop
(lavin_jax.train.loop.run for --loop_overhead_steps steps, log_every the same: one
interval, its throughput from metrics.jsonl) over steps/s of the same compiled step
called bare on the same batch for as many steps (until the device is done), best of 5
intervals each, the two alternating. One JSON line per figure.
"""

import itertools
import json
import os
import tempfile
import time

from absl import app
from absl import flags
import common
import jax
import jax.numpy as jnp
import ml_collections
import workloads

from lavin_jax import configs
from lavin_jax.models import jdit
from lavin_jax.train import checkpoint
from lavin_jax.train import loop

# bf16 dense tensor-core peak per chip, TFLOP/s, by a piece of jax's device_kind (first
# match): the vendors' data sheets (SXM parts; H100 PCIe apart).
CHIP_PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0))

_SIZES = common.define_choices("sizes", "tiny,0.1b", configs.JDIT_SIZES, "J-DiT sizes")
_BATCHES = common.define_integers("batches", "1,4", "Local batch sizes.")
_PAIRS = flags.DEFINE_integer("pairs", 4, "Context pairs per example.")
_RESOLUTION = flags.DEFINE_integer("resolution", 256, "Image side in pixels.")
_STEPS = flags.DEFINE_integer("steps", 3, "Timed steps per figure (best) after a warm-up.")
_DTYPE = flags.DEFINE_string(
  "dtype", None, "Compute dtype; default bfloat16 on accelerators, float32 on CPU."
)
_REMAT_POLICIES = common.define_choices(
  "remat_policies",
  [],
  tuple(jdit.REMAT_POLICIES),
  "Remat policies to compare (default: each size's configured one)",
)
_MATMUL_SIZE = flags.DEFINE_integer(
  "matmul_size", None, "Side of the peak-measuring matmul; default 8192 (CPU: 2048)."
)
_PEAK_TFLOPS = flags.DEFINE_float(
  "peak_tflops", None, "The chip's bf16 dense peak, TFLOP/s; default CHIP_PEAK_TFLOPS."
)
_LOOP_STEPS = flags.DEFINE_integer(
  "loop_overhead_steps", 10, "Steps per timed interval of loop_overhead (0: no figure)."
)
_LOOP_ROUNDS = 5  # intervals of each, bare and loop alternating


def chip_peak() -> float | None:
  """The chip's bf16 dense peak, FLOP/s a device: --peak_tflops, else by device kind."""
  if _PEAK_TFLOPS.value:
    return _PEAK_TFLOPS.value * 1e12
  kind = jax.devices()[0].device_kind
  return next((tflops * 1e12 for name, tflops in CHIP_PEAK_TFLOPS if name in kind), None)


def figure(size, batch, dtype, work, seconds, metrics, peak, chip):
  memory = work.compiled.memory_analysis()
  stats = jax.local_devices()[0].memory_stats() or {}
  allocator_peak = stats.get("peak_bytes_in_use")
  return {
    "figure": "train_step",
    "size": size,
    "params_m": round(work.params / 1e6, 2),
    "batch": batch,
    "pairs": _PAIRS.value,
    "resolution": _RESOLUTION.value,
    "tokens_per_example": work.tokens // batch,
    "dtype": dtype,
    "remat_policy": work.config.remat_policy,
    "attention_impl": work.config.attention_impl,
    "devices": jax.device_count(),
    "backend": jax.default_backend(),
    "seconds_per_step": round(seconds, 3),
    "steps_per_sec": round(1 / seconds, 4),
    "examples_per_sec": round(batch / seconds, 3),
    "tokens_per_sec": round(work.tokens / seconds, 1),
    "model_tflop_per_step": round(work.flops / 1e12, 4),
    "mfu": round(work.flops / seconds / (peak * jax.device_count()), 4),
    "device_kind": jax.devices()[0].device_kind,
    "chip_peak_tflops": None if chip is None else chip / 1e12,
    "mfu_chip": None
    if chip is None
    else round(work.flops / seconds / (chip * jax.device_count()), 4),
    "peak_memory_gib": round(
      (memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes)
      / 2**30,
      3,
    ),
    "allocator_peak_gib": None if allocator_peak is None else round(allocator_peak / 2**30, 3),
    "loss": round(float(metrics["loss"]), 4),
  }


def loop_overhead(size, batch, work):
  """The loop_overhead figure of a train-step workload (its state moves on)."""
  step_fn, state, global_batch = work.train_inputs()
  n = _LOOP_STEPS.value
  for _ in range(-int(state.step) % n):  # align: the loop syncs at multiples of n
    state, _ = step_fn(state, global_batch)
  bare_seconds = []
  with tempfile.TemporaryDirectory() as workdir:
    ckpt = checkpoint.CheckpointManager(os.path.join(workdir, "ckpt"), save_every=10**9, keep=1)
    with ckpt:
      for _ in range(_LOOP_ROUNDS):
        start = time.perf_counter()
        for _ in range(n):
          state, metrics = step_fn(state, global_batch)
        jax.block_until_ready((state, metrics))
        bare_seconds.append(time.perf_counter() - start)
        # One interval of n steps; the save forced at its last step follows its metrics.
        state = loop.run(
          step_fn,
          state,
          itertools.repeat(global_batch),
          ckpt=ckpt,
          total_steps=int(state.step) + n,
          log_every=n,
          workdir=workdir,
          config=ml_collections.ConfigDict(),
          desc="loop overhead",
        )
        ckpt.wait_until_finished()
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      loop_seconds = [n * batch / json.loads(line)["examples_per_sec"] for line in f]
  return {
    "figure": "loop_overhead",
    "size": size,
    "batch": batch,
    "steps_per_interval": n,
    "backend": jax.default_backend(),
    "bare_seconds": [round(s, 4) for s in bare_seconds],
    "loop_seconds": [round(s, 4) for s in loop_seconds],
    "bare_steps_per_sec": round(n / min(bare_seconds), 3),
    "loop_steps_per_sec": round(n / min(loop_seconds), 3),
    "loop_overhead": round(min(bare_seconds) / min(loop_seconds), 4),
  }


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  on_cpu = jax.default_backend() == "cpu"
  dtype = _DTYPE.value or ("float32" if on_cpu else "bfloat16")
  size = _MATMUL_SIZE.value or (2048 if on_cpu else 8192)
  peak = workloads.matmul_peak(jnp.dtype(dtype), size)
  chip = chip_peak()
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
      overrides = [[f"remat_policy={p}"] for p in _REMAT_POLICIES.value] or [[]]
      works = [
        workloads.train_step(
          model_size,
          workloads.model_config(model_size, dtype, o),
          batch,
          _PAIRS.value,
          _RESOLUTION.value,
        )
        for o in overrides
      ]
      for work in works:
        jax.block_until_ready(work.run())  # warm-up
      seconds, outputs = workloads.interleaved([w.run for w in works], _STEPS.value)
      for work, best, (_, metrics) in zip(works, seconds, outputs):
        common.print_figure(figure(model_size, batch, dtype, work, best, metrics, peak, chip))
      if _LOOP_STEPS.value and (model_size, batch) == (_SIZES.value[0], _BATCHES.value[0]):
        common.print_figure(loop_overhead(model_size, batch, works[0]))


if __name__ == "__main__":
  app.run(main)
