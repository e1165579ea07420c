"""Sharding: mesh sizes, the logical-axis rules, and 8-device training == 1-device training.

The 8-device comparison runs this file as a script in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (the device count is fixed when
the backend starts). Tolerance: float32 compute; sharded matmuls and all-reduces sum in
another order, so the loss agrees to rtol 1e-5, gradients to 1e-5 of each tensor's
largest entry, and the new params to 1e-6 absolute (one AdamW step moves a
parameter by about lr = 1e-3) where the gradient is at least 1e-6: the first step,
lr * g / (|g| + eps), turns a gradient within summation noise of 0 (eps = 1e-8) into
a step anywhere up to lr. The step starts from random params, the same on both meshes:
J-DiT's zero-initialised modulations would hide examples mixed between devices.
"""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest

from lavin_jax.parallel import mesh as mesh_lib

P = jax.sharding.PartitionSpec


def test_mesh_shape_resolves_and_rejects():
  assert mesh_lib.mesh_shape({"data": -1, "fsdp": 2, "tensor": 2}, 8) == (2, 2, 2)
  assert mesh_lib.mesh_shape({"fsdp": -1}, 8) == (1, 8, 1)
  with pytest.raises(ValueError, match="needs 4 devices but 8"):
    mesh_lib.mesh_shape({"data": 2, "fsdp": 2}, 8)
  with pytest.raises(ValueError, match="At most one"):
    mesh_lib.mesh_shape({"data": -1, "fsdp": -1}, 8)
  with pytest.raises(ValueError, match="do not divide"):
    mesh_lib.mesh_shape({"data": -1, "tensor": 3}, 8)
  with pytest.raises(ValueError, match="Unknown mesh axes"):
    mesh_lib.mesh_shape({"model": 2}, 8)


def test_rules_table():
  to_mesh = lambda names: nn.logical_to_mesh_axes(names, mesh_lib.AXIS_RULES)
  assert to_mesh(("batch", "length", "embed")) == P(("data", "fsdp"), None, None)
  assert to_mesh(("embed", "mlp")) == P("fsdp", "tensor")
  assert to_mesh(("layers", "heads", "embed")) == P(None, "tensor", "fsdp")
  assert to_mesh(("embed", "kv")) == P("fsdp", "tensor")
  assert to_mesh(("patch", "embed")) == P(None, "fsdp")
  assert to_mesh(("freq", "norm")) == P(None, None)


def test_initialize_distributed_single_process_and_missing_values(monkeypatch):
  for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    monkeypatch.delenv(name, raising=False)
  assert mesh_lib.initialize_distributed() is False
  with pytest.raises(ValueError, match=r"missing \['num_processes', 'process_id'\]"):
    mesh_lib.initialize_distributed("127.0.0.1:1234")


def test_eight_devices_match_one_device():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  proc = subprocess.run(
    [sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600, check=False
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result["devices"] == 8
  assert result["sharded_specs"], "no parameter was sharded"
  # Every parameter shard holds 1/(fsdp*tensor) of a ('embed', 'mlp') kernel.
  assert result["mlp_kernel_shard_fraction"] == 0.25
  np.testing.assert_allclose(result["loss"][1], result["loss"][0], rtol=1e-5)
  for name, rel in result["grad_rel_err"].items():
    assert rel < 1e-5, (name, rel)
  assert result["param_max_abs_diff"] < 1e-6
  assert result["param_max_abs_update"] > 1e-4  # the step did move the params


# ---------------------------------------------------------------------------------------
# Subprocess: one update on a 1-device mesh and on a data=2, fsdp=2, tensor=2 mesh.


_CONDITIONED_GRAD = 1e-6  # 100 x AdamW's eps: the step no longer amplifies summation noise


def _one_step(config, mesh, local_batch):
  from lavin_jax.models import jdit  # pylint: disable=g-import-not-at-top
  from lavin_jax.train import dit  # pylint: disable=g-import-not-at-top
  from lavin_jax.train import state as state_lib  # pylint: disable=g-import-not-at-top

  model = jdit.JDiT(config.model)
  tx, schedule = state_lib.create_optimizer(config.optimizer)
  state, shardings = dit.init_train_state(model, tx, config, mesh, jax.random.PRNGKey(0))
  rng = np.random.default_rng(1)
  params = jax.tree.map(lambda x: rng.normal(0, 0.1, x.shape).astype(x.dtype), state.params)
  state = state.replace(params=mesh_lib.put_global(params, shardings.params))
  step = dit.create_train_step(model, tx, schedule, config, shardings)

  def grads_fn(state, batch):  # the gradient the step takes
    inputs, k_dropout = dit.step_inputs(state, None, batch, config=config)
    return jax.grad(
      lambda p: dit.velocity_loss(model, p, *inputs, config.flow.l1_weight, dropout_key=k_dropout)
    )(state.params)

  with jax.set_mesh(mesh), nn.logical_axis_rules(mesh_lib.AXIS_RULES):
    batch = mesh_lib.global_batch(local_batch, mesh)
    grads = jax.jit(grads_fn, out_shardings=shardings.params)(state, batch)
    old_params = jax.device_get(state.params)
    specs = {
      jax.tree_util.keystr(p): str(x.sharding.spec)
      for p, x in jax.tree_util.tree_leaves_with_path(state.params)
      if any(axis is not None for axis in x.sharding.spec)
    }
    kernel = state.params["blocks"]["x_mlp"]["gate_proj"]["kernel"]
    fraction = kernel.addressable_shards[0].data.size / kernel.size
    new_state, metrics = step(state, None, batch)
  return (
    float(metrics["loss"]),
    jax.device_get(grads),
    old_params,
    jax.device_get(new_state.params),
    specs,
    fraction,
  )


def _main():
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import test_train_dit  # pylint: disable=g-import-not-at-top

  config = test_train_dit.tiny_config(depth=2, scan_layers=True, num_kv_heads=2)
  config.optimizer.lr = 1e-3
  local_batch = test_train_dit.latent_batch(
    np.random.default_rng(0), batch=4, pairs=3, num_pairs=np.array([1, 3, 2, 3])
  )
  one = _one_step(config, mesh_lib.create_mesh({"data": 1}, jax.devices()[:1]), local_batch)
  eight = _one_step(config, mesh_lib.create_mesh({"data": 2, "fsdp": 2, "tensor": 2}), local_batch)
  flat = lambda tree: {
    jax.tree_util.keystr(p): np.asarray(x, np.float64)
    for p, x in jax.tree_util.tree_leaves_with_path(tree)
  }
  g1, g8 = flat(one[1]), flat(eight[1])
  p0, p1, p8 = flat(one[2]), flat(one[3]), flat(eight[3])
  print(
    json.dumps(
      {
        "devices": jax.device_count(),
        "loss": [one[0], eight[0]],
        "grad_rel_err": {
          k: float(np.abs(g8[k] - g1[k]).max() / max(np.abs(g1[k]).max(), 1e-12)) for k in g1
        },
        "param_max_abs_diff": max(
          float(np.abs(p8[k] - p1[k])[np.abs(g1[k]) >= _CONDITIONED_GRAD].max(initial=0))
          for k in p1
        ),
        "param_max_abs_update": max(float(np.abs(p1[k] - p0[k]).max()) for k in p1),
        "sharded_specs": sorted(set(eight[4].values())),
        "mlp_kernel_shard_fraction": eight[5],
      }
    )
  )


if __name__ == "__main__":
  _main()
