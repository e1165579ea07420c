"""Ahead-of-time TPU compiles from a host without a TPU (the `tpu` extra's libtpu): a
J-DiT training step with splash attention (head_dim 72) compiles for a v5e 2x2 slice,
data and tensor parallel. Skipped where libtpu is not installed."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lavin_jax.configs import train_dit as train_dit_config
from lavin_jax.models import jdit
from lavin_jax.parallel import mesh as mesh_lib
from lavin_jax.parallel import topology
from lavin_jax.train import dit
from lavin_jax.train import state as state_lib

pytestmark = pytest.mark.skipif(
  not topology.available(), reason="needs libtpu: pip install -e '.[tpu]'"
)


def _abstract_batch(mesh, batch=4, pairs=2, size=8):
  """ShapeDtypeStructs of a latent-moments batch (the trainer's input='latents')."""
  sharding = mesh_lib.batch_sharding(mesh)
  clip = (batch, pairs, 1, size, size, 32)
  shapes = {
    "context_inputs": (clip, jnp.float32),
    "context_targets": (clip, jnp.float32),
    "query": (clip[:1] + clip[2:], jnp.float32),
    "target": (clip[:1] + clip[2:], jnp.float32),
    "num_pairs": ((batch,), jnp.int32),
  }
  return {k: jax.ShapeDtypeStruct(s, d, sharding=sharding) for k, (s, d) in shapes.items()}


def test_jdit_train_step_with_splash_compiles_for_v5e():
  config = train_dit_config.get_config("tiny,runlocal")
  config.input = "latents"
  # The 3.4B's head_dim 72 (hidden 288 over 4 heads), 2 key/value heads.
  config.model.update(attention_impl="splash", dtype="bfloat16", hidden_size=288)
  mesh = topology.topology_mesh("v5e:2x2", {"data": 2, "tensor": 2})
  assert mesh.devices.size == 4 and mesh.devices.flat[0].platform == "tpu"
  tx, schedule = state_lib.create_optimizer(config.optimizer)
  # Parameter shapes do not depend on the attention; init is traced on the host.
  shapes_config = config.model.copy_and_resolve_references()
  shapes_config.attention_impl = "xla"
  state, shardings = dit.abstract_train_state(
    jdit.JDiT(shapes_config), tx, config, mesh, jax.random.key(0)
  )
  step = dit.create_train_step(jdit.JDiT(config.model), tx, schedule, config, shardings)
  # Under the mesh: its devices, not the host's CPU, are the platform attention sees.
  with jax.set_mesh(mesh), nn.logical_axis_rules(mesh_lib.AXIS_RULES):
    compiled = step.lower(state, None, _abstract_batch(mesh)).compile()
  text = compiled.as_text()
  # Each layer's attention is the Mosaic kernel (forward, dq, dkv), no XLA softmax.
  assert text.count('custom_call_target="tpu_custom_call"') >= 3
  # Per chip: params, EMA and two Adam moments in float32, split at most 2 ways (tensor
  # 2 splits the head and MLP weights, fsdp 1), plus a batch well under 1 MiB.
  memory = compiled.memory_analysis()
  params = sum(np.prod(p.shape) * 4 for p in jax.tree.leaves(state.params))
  assert 2 * params <= memory.argument_size_in_bytes <= 4 * params + 2**20
  assert memory.alias_size_in_bytes > 0 and memory.temp_size_in_bytes > 0  # state donated


def test_topology_meshes():
  mesh = topology.topology_mesh("v5p:4x4x4", {"fsdp": -1, "tensor": 2})
  assert dict(mesh.shape) == {"data": 1, "fsdp": 32, "tensor": 2}
  assert len({d.id for d in mesh.devices.flat}) == 64
  assert mesh.devices.flat[0].device_kind == "TPU v5"
  assert topology.topology_mesh("v6e:4x4", {"data": -1}).devices.size == 16


def test_unknown_topology_is_one_line():
  with pytest.raises(ValueError, match="Unknown TPU topology 'v9x:2x2'.*'v5e:2x2'"):
    topology.topology_devices("v9x:2x2")
