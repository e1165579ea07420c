"""Device mesh, the logical-to-mesh sharding rules, and the multi-host start.

Layers name logical axes only (`nn.with_logical_partitioning`,
`nn.with_logical_constraint`); `AXIS_RULES` below is the one place that maps
them onto the mesh axes ('data', 'fsdp', 'tensor'):

  batch             -> ('data', 'fsdp')   data parallel over both axes
  embed             -> 'fsdp'             parameters and optimizer state (FSDP)
  heads, kv, mlp    -> 'tensor'           tensor parallel
  conv_out          -> 'fsdp'             ST-VAE conv output channels (FSDP)
  disc_in, disc_out -> replicated         the PatchGAN discriminator: a few MB
  everything else   -> replicated

A rule never splits a dimension its mesh axes do not divide where `fit_shardings`
is applied (the ST-VAE's 3-channel output conv stays whole).

An activation annotated ('batch', 'length', 'embed') resolves to
P(('data', 'fsdp'), None, None): flax assigns each mesh axis at most once per
array, so 'embed' stays unsharded once 'batch' took 'fsdp'.
"""

from collections.abc import Mapping
import contextlib
import math
import os
import socket
import sys
import threading

from absl import logging
import flax.linen as nn
import jax
import numpy as np

MESH_AXES = ("data", "fsdp", "tensor")

AXIS_RULES = (
  ("batch", ("data", "fsdp")),
  ("embed", "fsdp"),
  ("heads", "tensor"),
  ("kv", "tensor"),
  ("mlp", "tensor"),
  ("length", None),
  ("patch", None),
  ("freq", None),
  ("layers", None),
  ("norm", None),
  ("conv_in", None),
  ("conv_out", "fsdp"),
  ("disc_in", None),
  ("disc_out", None),
)

DEFAULT_START_TIMEOUT_S = 300  # jax.distributed's own default initialization timeout
# XLA aborts the process (no Python exception) when its own start timeout expires; ours
# fires this much earlier, so the user reads a one-line error instead of a native abort.
_XLA_START_GRACE_S = 30


def mesh_shape(axis_sizes: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
  """Resolves sizes for ('data', 'fsdp', 'tensor'); one of them may be -1 (= the rest)."""
  unknown = set(axis_sizes) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"Unknown mesh axes {sorted(unknown)}; the axes are {MESH_AXES}.")
  sizes = [int(axis_sizes.get(name, 1)) for name in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(
      f"At most one mesh axis may be -1 (the rest), got {dict(zip(MESH_AXES, sizes))}."
    )
  if any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"Mesh axis sizes must be positive or -1, got {dict(zip(MESH_AXES, sizes))}.")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(
        f"{num_devices} devices do not divide by the fixed mesh axes "
        f"{dict(zip(MESH_AXES, sizes))} (product {known})."
      )
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(
      f"Mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices but "
      f"{num_devices} are available; set one axis to -1 to use the rest."
    )
  return tuple(sizes)


def create_mesh(axis_sizes: Mapping[str, int], devices=None) -> jax.sharding.Mesh:
  """A ('data', 'fsdp', 'tensor') mesh over all (global) devices.

  Args:
    axis_sizes: e.g. config.mesh = {'data': -1, 'fsdp': 1, 'tensor': 1}.
    devices: defaults to `jax.devices()`. Devices are ordered by process, so with
      fsdp * tensor = devices per host the 'data' axis runs across hosts.
  """
  devices = jax.devices() if devices is None else list(devices)
  shape = mesh_shape(axis_sizes, len(devices))
  # Auto axes: shardings come from annotations and XLA's propagation (GSPMD).
  return jax.make_mesh(
    shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES), devices=devices
  )


def logical_shardings(mesh: jax.sharding.Mesh, tree, rules=AXIS_RULES):
  """NamedShardings for a pytree holding `nn.LogicallyPartitioned` boxes.

  `tree` is usually abstract (`jax.eval_shape` of an init); unboxed leaves with a
  shape are replicated. The result has the structure of `nn.unbox(tree)`.
  """
  specs = nn.get_partition_spec(tree)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def _devices_along(mesh: jax.sharding.Mesh, axes) -> int:
  """Devices along one PartitionSpec entry: None, a mesh axis or a tuple of them."""
  names = () if axes is None else axes if isinstance(axes, tuple) else (axes,)
  return math.prod(mesh.shape[name] for name in names)


def fit_shardings(shardings, tree):
  """`shardings` with every mesh axis dropped from a dimension it does not divide.

  Rules name axes without knowing sizes: the ST-VAE's 3-channel output conv cannot
  split over fsdp = 2, so that dimension stays whole. `tree` holds the arrays (or
  ShapeDtypeStructs) the shardings are for, in the same structure.
  """

  def fit(sharding, x):
    spec = tuple(sharding.spec) + (None,) * (len(x.shape) - len(sharding.spec))
    fitted = [
      axes if dim % _devices_along(sharding.mesh, axes) == 0 else None
      for axes, dim in zip(spec, x.shape, strict=True)
    ]
    return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(*fitted))

  return jax.tree.map(fit, shardings, tree)


def batch_sharding(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  """Leading (batch) axis over ('data', 'fsdp'); other axes replicated."""
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))


def replicated(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def put_global(tree, shardings):
  """Host arrays (identical on every process) -> global arrays on `shardings`."""
  return jax.tree.map(
    lambda x, s: jax.make_array_from_callback(np.shape(x), s, lambda i: np.asarray(x)[i]),
    tree,
    shardings,
  )


def global_batch(local_batch, mesh: jax.sharding.Mesh):
  """Process-local numpy batch (this process's rows) -> global jax.Arrays.

  Each process passes its own shard of the global batch (leading axis); the
  global batch is the concatenation in process order.
  """
  batch_size = {int(np.shape(x)[0]) for x in jax.tree.leaves(local_batch)}
  if len(batch_size) != 1:
    raise ValueError(f"Batch arrays disagree on the leading (batch) size: {sorted(batch_size)}.")
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  global_size = batch_size.pop() * jax.process_count()
  if global_size % shards:
    raise ValueError(
      f"Global batch {global_size} does not divide over data x fsdp = {shards} "
      "devices; change the batch size or the mesh."
    )
  return jax.make_array_from_process_local_data(batch_sharding(mesh), local_batch)


def _env_int(name):
  value = os.environ.get(name)
  return None if value in (None, "") else int(value)


def initialize_distributed(
  coordinator: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  *,
  auto_detect: bool = False,
  timeout_s: float = DEFAULT_START_TIMEOUT_S,
) -> bool:
  """Starts `jax.distributed` for a multi-process run; returns whether it did.

  Values come from the arguments (flags), else from the environment variables
  JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID. With
  `auto_detect`, whatever is still missing comes from jax's own cluster
  detection (SLURM, Open MPI, Cloud TPU pods, Kubernetes). With nothing given and
  no auto detection this is a single-process run and a no-op. Must run before any
  other jax call.

  The start waits at most `timeout_s` for every process to connect. Past that the
  process prints one line, `error: ...`, naming who did not arrive (the coordinator,
  process 0, when it cannot be reached; else the processes that did not register
  with it) and exits with status 1: XLA would otherwise abort it with a native stack.
  """
  coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
  num_processes = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
  process_id = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
  given = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
  if not auto_detect:
    if all(v is None for v in given.values()):
      return False
    missing = [k for k, v in given.items() if v is None]
    if missing:
      raise ValueError(
        f"Multi-process start needs coordinator, num_processes and process_id; "
        f"missing {missing}. Pass them (flags or JAX_* environment variables) or "
        "enable cluster auto-detection."
      )
  if not timeout_s > 0:
    raise ValueError(f"The distributed start timeout must be > 0 seconds, got {timeout_s}.")
  with _start_deadline(timeout_s, coordinator, num_processes, process_id):
    jax.distributed.initialize(
      coordinator_address=coordinator,
      num_processes=num_processes,
      process_id=process_id,
      initialization_timeout=int(timeout_s) + _XLA_START_GRACE_S,
    )
  logging.info(
    "jax.distributed: process %d of %d, %d local / %d global devices.",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )
  return True


def _reachable(address: str | None) -> bool:
  """Whether something accepts TCP connections at host:port."""
  if not address or ":" not in address:
    return False
  host, port = address.rsplit(":", 1)
  try:
    with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
      return True
  except (OSError, ValueError):
    return False


def _start_failure(timeout_s, coordinator, num_processes, process_id) -> str:
  """The one-line reason a distributed start did not finish within timeout_s."""
  waited = f"waited {timeout_s:.0f} s for jax.distributed to start"
  if process_id == 0:
    others = {None: "the other processes did not all", 2: "process 1 did not"}.get(
      num_processes, f"processes 1..{num_processes - 1} did not all"
    )
    return (
      f"process 0 (the coordinator, {coordinator}) {waited}; {others} "
      "connect: check that each was started, with the same --coordinator_address and "
      "--num_processes, and can reach this host."
    )
  who = "this process" if process_id is None else f"process {process_id}"
  if not _reachable(coordinator):
    return (
      f"{who} {waited}: process 0, the coordinator at {coordinator}, did not arrive "
      "(nothing accepts connections there); start process 0 or fix --coordinator_address."
    )
  return (
    f"{who} {waited}: the coordinator at {coordinator} answers but not every one of the "
    f"{num_processes} processes connected; see the other processes' logs."
  )


@contextlib.contextmanager
def _start_deadline(timeout_s, coordinator, num_processes, process_id):
  """Exits the process with a one-line error if the block runs past timeout_s."""

  def expire():
    message = _start_failure(timeout_s, coordinator, num_processes, process_id)
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    os._exit(1)

  timer = threading.Timer(timeout_s, expire)
  timer.daemon = True
  timer.start()
  try:
    yield
  finally:
    timer.cancel()
