"""Ahead-of-time compilation for devices this machine need not have, and its memory figures.

A target names the devices a computation is compiled for:
  'cpu:N'          N virtual CPU devices of this process: a stand-in for N GPUs (same
                   sharding and collectives; XLA's GPU fusion, layouts and memory differ).
                   `use_cpu_devices(N)` must run before jax starts its backend.
  'tpu:TOPOLOGY'   the chips of a Cloud TPU topology, e.g. 'tpu:v5p:4x4x4' (64 chips),
                   compiled by libtpu on a machine without a TPU (parallel/topology.py).

`compile_abstract` lowers a jitted function on ShapeDtypeStructs that carry their
shardings and compiles it, allocating nothing; `memory_figures` reads XLA's per-device
memory analysis of the result.
"""

import jax

from lavin_jax.parallel import topology

PLATFORMS = ("cpu", "tpu")


def parse_target(target: str) -> tuple[str, str]:
  """'cpu:64' -> ('cpu', '64'); 'tpu:v5p:4x4x4' -> ('tpu', 'v5p:4x4x4')."""
  platform, _, arg = target.partition(":")
  if platform not in PLATFORMS or not arg:
    raise ValueError(
      f"Unknown compile target {target!r}; use 'cpu:N' (N virtual CPU devices) or "
      "'tpu:TOPOLOGY' (e.g. 'tpu:v5p:4x4x4')."
    )
  if platform == "cpu" and not (arg.isdigit() and int(arg) > 0):
    raise ValueError(f"Target {target!r}: 'cpu:N' needs a positive device count N.")
  return platform, arg


def use_cpu_devices(count: int) -> None:
  """Gives this process `count` virtual CPU devices; call before any jax computation."""
  jax.config.update("jax_num_cpu_devices", count)


def target_devices(target: str) -> list:
  """The devices of `target` (see the module docstring), in the topology's order."""
  platform, arg = parse_target(target)
  if platform == "cpu":
    devices = jax.devices("cpu")
    if len(devices) < int(arg):
      raise ValueError(
        f"Target {target!r} needs {arg} CPU devices but this process has "
        f"{len(devices)}; call aot.use_cpu_devices({arg}) before jax starts its backend."
      )
    return devices[: int(arg)]
  return topology.topology_devices(arg)


def compile_abstract(fn, *args) -> jax.stages.Compiled:
  """`fn` (jitted) lowered on abstract args (ShapeDtypeStructs with shardings), compiled."""
  return fn.lower(*args).compile()


def memory_figures(compiled: jax.stages.Compiled) -> dict:
  """Per-device bytes of a compiled computation from XLA's memory analysis.

  total = arguments + outputs + temporaries: an upper bound of the peak, which counts a
  donated argument twice (alias_bytes is that overlap).
  """
  m = compiled.memory_analysis()
  figures = {
    "argument_bytes": m.argument_size_in_bytes,
    "output_bytes": m.output_size_in_bytes,
    "temp_bytes": m.temp_size_in_bytes,
    "alias_bytes": m.alias_size_in_bytes,
    "generated_code_bytes": m.generated_code_size_in_bytes,
  }
  figures["total_bytes"] = (
    figures["argument_bytes"] + figures["output_bytes"] + figures["temp_bytes"]
  )
  return figures
