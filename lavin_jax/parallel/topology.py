"""Meshes of a real TPU topology's devices, for ahead-of-time compiles from any host.

With the `tpu` extra (libtpu) installed, `topology_mesh('v5p:4x4x4', {'fsdp': -1})` is
a ('data', 'fsdp', 'tensor') mesh of 64 compile-only TPU v5p devices, no TPU attached:
`jax.jit(f).lower(...).compile()` under it runs the TPU compiler, and the compiled
program's `memory_analysis()` gives its per-chip figures. Nothing runs on these devices.
"""

from collections.abc import Mapping
import importlib.util
import os

import jax
from jax.experimental import mesh_utils
from jax.experimental import topologies

from lavin_jax.parallel import mesh as mesh_lib


def available() -> bool:
  """Whether libtpu (the TPU compiler) is installed: `pip install -e '.[tpu]'`."""
  return importlib.util.find_spec("libtpu") is not None


def topology_devices(topology: str) -> list:
  """The compile-only devices of `topology`, '<chip>:<shape>' as TPU names it:
  'v5e:2x2' (4 chips), 'v5p:4x4x4' (64), 'v5e:16x16' (256), 'v6e:4x4' (16)."""
  if not available():
    raise ValueError(
      f"Compiling for TPU topology {topology!r} needs libtpu; install the tpu extra: "
      f"pip install -e '.[tpu]'."
    )
  # libtpu admits one process per host (a lockfile) unless told otherwise; that guards
  # the chips, and compile-only devices open none, so AOT compiles may run side by side.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  try:
    return list(topologies.get_topology_desc(topology_name=topology, platform="tpu").devices)
  except jax.errors.JaxRuntimeError as e:
    raise ValueError(
      f"Unknown TPU topology {topology!r} ({str(e).splitlines()[0]}); name one as "
      f"'<chip>:<shape>', e.g. 'v5e:2x2' or 'v5p:4x4x4'."
    ) from None


def topology_mesh(topology: str, axis_sizes: Mapping[str, int]) -> jax.sharding.Mesh:
  """A ('data', 'fsdp', 'tensor') mesh of `topology`'s compile-only devices, axis sizes
  as `mesh.create_mesh` takes them. A mesh axis may split a physical one where it must
  (tensor 2 on a 4x4x4 torus)."""
  devices = topology_devices(topology)
  shape = mesh_lib.mesh_shape(axis_sizes, len(devices))
  grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
  auto = (jax.sharding.AxisType.Auto,) * len(mesh_lib.MESH_AXES)
  return jax.sharding.Mesh(grid, mesh_lib.MESH_AXES, axis_types=auto)
