"""The splash path checked on CPU, its kernel in Pallas' interpreter: key padding as
segment ids, grouped-query heads, head_dim 72 and lengths no block divides give the
masked XLA attention's output and gradients, on one device and sharded over a mesh."""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lavin_jax.models import attention
from lavin_jax.parallel import mesh as mesh_lib
from lavin_jax.parallel import topology


def _case(seed, b, t, s, heads, kv_heads, hd):
  """Inputs and a key mask with a different number of valid keys per example."""
  kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
  q = jax.random.normal(kq, (b, t, heads, hd))
  k = jax.random.normal(kk, (b, s, kv_heads, hd)) * 2
  v = jax.random.normal(kv, (b, s, kv_heads, hd))
  rng = np.random.default_rng(seed)
  mask = np.zeros((b, s), bool)
  for i in range(b):
    mask[i, rng.permutation(s)[: s * (b + 1 - i) // (b + 2)]] = True
  return q, k, v, jnp.asarray(mask)


def _value_and_grads(impl, q, k, v, mask, weights):
  def loss(q, k, v):
    if impl == "splash":
      out = attention.splash_attention(q, k, v, mask, block_size=128, interpret=True)
    else:
      out = attention.dot_product_attention(q, k, v, mask, implementation=impl)
    return jnp.sum(out * weights), out

  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)


def _splash_errors(q, k, v, mask):
  """Largest |splash - XLA| of the output and of dq, dk, dv."""
  weights = jax.random.normal(jax.random.key(7), q.shape)
  (_, out), grads = _value_and_grads("splash", q, k, v, mask, weights)
  (_, ref), ref_grads = _value_and_grads("xla", q, k, v, mask, weights)
  assert out.shape == ref.shape
  return [float(jnp.abs(a - b).max()) for a, b in zip((out, *grads), (ref, *ref_grads))]


# (batch, queries, keys, heads, kv heads, head_dim): the 3.4B's head_dim 72 and grouped
# heads; one block per length padded up to 128; several query and key blocks.
@pytest.mark.parametrize("case", [(2, 40, 70, 4, 2, 72), (1, 130, 200, 2, 1, 64)])
def test_splash_equals_xla(case):
  errors = _splash_errors(*_case(0, *case))
  assert max(errors) < 1e-5, dict(zip(["out", "dq", "dk", "dv"], errors))


def test_splash_sharded_over_batch_and_heads():
  """Under a (data 2, tensor 2) mesh of 4 CPU devices: shard_map over batch and heads."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
  proc = subprocess.run(
    [sys.executable, __file__],
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result["devices"] == 4 and "P(('data', 'fsdp'), 'tensor')" in result["jaxpr"]
  assert max(result["errors"]) < 1e-5, result["errors"]


def _sharded_main():
  mesh = mesh_lib.create_mesh({"data": 2, "tensor": 2})
  q, k, v, mask = _case(1, 4, 40, 50, 4, 2, 16)
  with jax.set_mesh(mesh), nn.logical_axis_rules(mesh_lib.AXIS_RULES):
    jaxpr = str(jax.make_jaxpr(attention.splash_attention)(q, k, v, mask))
    errors = _splash_errors(q, k, v, mask)
  print(json.dumps({"devices": jax.device_count(), "errors": errors, "jaxpr": jaxpr[:20000]}))


@pytest.mark.skipif(jax.default_backend() == "tpu", reason="checks the non-TPU error")
def test_splash_needs_tpu():
  q, k, v, mask = _case(2, 1, 8, 8, 2, 2, 8)
  with pytest.raises(ValueError, match="'splash' needs a TPU.*'auto'"):
    attention.dot_product_attention(q, k, v, mask, implementation="splash")


@pytest.mark.skipif(topology.available(), reason="libtpu is installed (test_attention_tpu.py)")
def test_topology_without_libtpu_names_the_extra():
  with pytest.raises(ValueError, match=r"needs libtpu.*pip install -e '\.\[tpu\]'"):
    topology.topology_mesh("v5e:2x2", {"data": -1})


if __name__ == "__main__":
  _sharded_main()
