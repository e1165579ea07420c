"""Ahead-of-time compilation (parallel/aot.py): targets, and memory figures of sharded steps.

The compile runs this file as a script in a subprocess that gives itself 8 virtual CPU
devices (`aot.use_cpu_devices`, before the backend starts). XLA's per-device argument
and output bytes are checked against the bytes of each argument's shard computed here
from shapes and shardings alone.
"""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest

from lavin_jax.models import jdit
from lavin_jax.parallel import aot
from lavin_jax.parallel import mesh as mesh_lib
from lavin_jax.train import dit
from lavin_jax.train import state as state_lib


def test_parse_target():
  assert aot.parse_target("cpu:64") == ("cpu", "64")
  assert aot.parse_target("tpu:v5p:4x4x4") == ("tpu", "v5p:4x4x4")
  for bad in ("gpu:8", "cpu", "cpu:0", "cpu:x", "tpu:"):
    with pytest.raises(ValueError, match="cpu:N"):
      aot.parse_target(bad)


def test_cpu_target_needs_its_devices():
  with pytest.raises(ValueError, match=r"use_cpu_devices\(4096\)"):
    aot.target_devices("cpu:4096")


def test_abstract_compile_on_eight_devices():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run(
    [sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600, check=False
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result["devices"] == 8
  for name, (xla, shards) in result["argument_bytes"].items():
    assert xla == shards, name
  for name, (xla, shards) in result["output_bytes"].items():
    assert xla >= shards, name
  # The donated weight aliases its update; fsdp = 8 splits most of the J-DiT state (norm
  # scales and biases of 96 channels stay whole).
  assert result["alias_bytes"]["update"] == result["output_bytes"]["update"][1]
  assert result["jdit_state_bytes"][0] < result["jdit_state_bytes"][1] / 4
  assert result["jdit_temp_bytes"] > 0


def test_tpu_topology_compiles_without_a_tpu():
  pytest.importorskip("libtpu", reason="the TPU target needs libtpu (the tpu extra)")
  devices = aot.target_devices("tpu:v5e:2x2")
  assert len(devices) == 4 and {d.platform for d in devices} == {"tpu"}
  mesh = mesh_lib.create_mesh({"fsdp": 4}, devices)
  compiled, args, w = _update_step(mesh)
  figures = aot.memory_figures(compiled)
  assert figures["argument_bytes"] == _shard_bytes(args)  # the TPU compiler's own figures
  assert figures["output_bytes"] == _shard_bytes(w)


# ---------------------------------------------------------------------------------------
# Subprocess: 8 virtual CPU devices; compile only.


def _shard_bytes(tree, whole=False) -> int:
  """Bytes of one device's shard of every ShapeDtypeStruct (each carries its sharding)."""
  shape = lambda x: x.shape if whole else x.sharding.shard_shape(x.shape)
  return sum(int(np.prod(shape(x))) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def _update_step(mesh):
  """A donated (4096, 256) weight row-sharded over fsdp, updated by a batch."""
  P = jax.sharding.PartitionSpec
  w = jax.ShapeDtypeStruct(
    (4096, 256), np.float32, sharding=jax.sharding.NamedSharding(mesh, P("fsdp"))
  )
  x = jax.ShapeDtypeStruct(
    (64, 4096), np.float32, sharding=jax.sharding.NamedSharding(mesh, P("fsdp"))
  )
  step = jax.jit(lambda w, x: w - 0.1 * x.T @ (x @ w), out_shardings=w.sharding, donate_argnums=0)
  return aot.compile_abstract(step, w, x), (w, x), w


def _jdit_step(mesh, config):
  """The tiny J-DiT train step on `mesh`: (compiled, abstract args, abstract state)."""
  model = jdit.JDiT(config.model)
  tx, schedule = state_lib.create_optimizer(config.optimizer)
  state, shardings = dit.abstract_train_state(model, tx, config, mesh, jax.random.PRNGKey(0))
  step = dit.create_train_step(model, tx, schedule, config, shardings)
  sharding = mesh_lib.batch_sharding(mesh)
  clip = (1, 4, 4, 2 * config.model.in_channels)  # 32 px: 4 x 4 latents of moments
  batch = {
    "context_inputs": jax.ShapeDtypeStruct((8, 2) + clip, "bfloat16", sharding=sharding),
    "context_targets": jax.ShapeDtypeStruct((8, 2) + clip, "bfloat16", sharding=sharding),
    "query": jax.ShapeDtypeStruct((8,) + clip, "bfloat16", sharding=sharding),
    "target": jax.ShapeDtypeStruct((8,) + clip, "bfloat16", sharding=sharding),
    "num_pairs": jax.ShapeDtypeStruct((8,), "int32", sharding=sharding),
  }
  with jax.set_mesh(mesh), nn.logical_axis_rules(mesh_lib.AXIS_RULES):
    compiled = aot.compile_abstract(step, state, None, batch)
  return compiled, (state, batch), state


def _main():
  aot.use_cpu_devices(8)

  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import test_train_dit  # pylint: disable=g-import-not-at-top

  devices = aot.target_devices("cpu:8")
  config = test_train_dit.tiny_config(depth=2, scan_layers=True, num_kv_heads=2)
  config.input = "latents"
  mesh = mesh_lib.create_mesh({"fsdp": 8}, devices)
  runs = {"update": _update_step(mesh), "jdit": _jdit_step(mesh, config)}
  result = {"devices": len(devices), "argument_bytes": {}, "output_bytes": {}, "alias_bytes": {}}
  for name, (compiled, args, state) in runs.items():
    figures = aot.memory_figures(compiled)
    assert figures["total_bytes"] == (
      figures["argument_bytes"] + figures["output_bytes"] + figures["temp_bytes"]
    )
    result["argument_bytes"][name] = (figures["argument_bytes"], _shard_bytes(args))
    result["output_bytes"][name] = (figures["output_bytes"], _shard_bytes(state))
    result["alias_bytes"][name] = figures["alias_bytes"]
  state = runs["jdit"][2]
  result["jdit_state_bytes"] = (_shard_bytes(state), _shard_bytes(state, whole=True))
  result["jdit_temp_bytes"] = aot.memory_figures(runs["jdit"][0])["temp_bytes"]
  print(json.dumps(result))


if __name__ == "__main__":
  _main()
