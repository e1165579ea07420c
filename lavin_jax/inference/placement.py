"""Where a pipeline's parameters live: on the device(s) once, reused by every call.

Parameters that fit one device (`ONE_DEVICE_FRACTION` of its memory; any size where the
backend reports no limit, as on CPU) go to the first local device. Larger ones are
sharded over all local devices by the training rules (`lavin_jax.parallel.mesh`):
tensor parallel over as many devices as the key/value heads divide, FSDP over the
rest. Given mesh axis sizes override the choice. Either way there is one mesh, and a
batch is padded to a multiple of its data x fsdp size.
"""

import math
from typing import Mapping, Optional

import flax.linen as nn
import jax
import numpy as np

from lavin_jax.configs import sampling as sampling_configs
from lavin_jax.parallel import mesh as mesh_lib


def tree_bytes(*trees) -> int:
  """Bytes of every array leaf of `trees`."""
  return sum(int(np.prod(np.shape(x))) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(trees))


def device_limit(device) -> Optional[int]:
  """The device's memory in bytes, or None where the backend does not say (CPU)."""
  stats = device.memory_stats()
  return None if not stats else stats.get("bytes_limit")


def choose_mesh(
  param_bytes: int, num_kv_heads: int, axis_sizes: Optional[Mapping[str, int]] = None
) -> jax.sharding.Mesh:
  """The mesh a pipeline runs on (see the module docstring)."""
  if axis_sizes:
    return mesh_lib.create_mesh(axis_sizes, jax.local_devices())
  devices = jax.local_devices()
  limit = device_limit(devices[0])
  if limit is None or param_bytes <= sampling_configs.ONE_DEVICE_FRACTION * limit:
    return mesh_lib.create_mesh({}, devices[:1])
  tensor = math.gcd(len(devices), num_kv_heads)
  return mesh_lib.create_mesh({"tensor": tensor, "fsdp": -1}, devices)


def batch_multiple(mesh: jax.sharding.Mesh) -> int:
  """Batches on `mesh` are split over data x fsdp: their size is a multiple of this."""
  return mesh.shape["data"] * mesh.shape["fsdp"]


def logical(module: nn.Module, mesh: jax.sharding.Mesh, *init_inputs):
  """Shardings of `module`'s params on `mesh` from their logical axis names."""
  boxed = jax.eval_shape(module.init, jax.random.key(0), *init_inputs)["params"]
  return mesh_lib.logical_shardings(mesh, boxed)


def replicated(mesh: jax.sharding.Mesh, params):
  """Every leaf of `params` whole on every device of `mesh`."""
  return jax.tree.map(lambda _: mesh_lib.replicated(mesh), params)


def put(params, shardings):
  """Host params -> device arrays on `shardings`, one leaf at a time (host peak: a leaf)."""
  leaves, treedef = jax.tree.flatten(params)
  targets = treedef.flatten_up_to(shardings)
  for i, sharding in enumerate(targets):
    leaves[i] = jax.device_put(leaves[i], sharding)
  return jax.tree.unflatten(treedef, leaves)
