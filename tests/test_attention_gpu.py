"""On a GPU: cuDNN flash attention with padded keys equals XLA, alone (forward and dq, dk,
dv) and inside a bf16 J-DiT training step (loss and gradients). Skipped without a GPU;
`pytest -m gpu` selects these."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny_model

from lavin_jax.models import attention
from lavin_jax.models import jdit
from lavin_jax.train import dit

pytestmark = [
  pytest.mark.gpu,
  pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs a GPU"),
]


def _relative(a, b):
  """||a - b|| / ||b|| over all leaves."""
  flat = lambda tree: np.concatenate([np.ravel(np.asarray(x, np.float32)) for x in tree])
  a, b = flat(jax.tree.leaves(a)), flat(jax.tree.leaves(b))
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_auto_is_cudnn_for_bfloat16():
  assert attention.resolve("auto", jnp.bfloat16, 72) == "cudnn"


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
@pytest.mark.parametrize("hd,heads,kv_heads", [(64, 4, 4), (72, 8, 2), (24, 4, 1)])
def test_cudnn_equals_xla(dtype, hd, heads, kv_heads):
  b, t, s = 3, 70, 90
  kq, kk, kv, km, kw = jax.random.split(jax.random.key(0), 5)
  # Random padding anywhere, a different number of valid keys per example.
  keep = jnp.array([0.9, 0.6, 0.3])[:, None]
  mask = (jax.random.uniform(km, (b, s)) < keep).at[:, 0].set(True)
  q = jax.random.normal(kq, (b, t, heads, hd)).astype(dtype)
  k = jax.random.normal(kk, (b, s, kv_heads, hd)).astype(dtype)
  v = jax.random.normal(kv, (b, s, kv_heads, hd)).astype(dtype)
  weights = jax.random.normal(kw, q.shape)

  def run(impl, q, k, v):
    def loss(q, k, v):
      out = attention.dot_product_attention(q, k, v, mask, implementation=impl)
      return jnp.sum(out.astype(jnp.float32) * weights), out

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)

  (_, out), grads = run("cudnn", q, k, v)
  # Reference: XLA in float32 on the same (rounded) inputs.
  (_, ref), ref_grads = run("xla", *(x.astype(jnp.float32) for x in (q, k, v)))
  assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
  np.testing.assert_allclose(out.astype(np.float32), ref, atol=2e-2, rtol=2e-2)
  for name, g, r in zip("qkv", grads, ref_grads):
    assert _relative([g], [r]) < 2e-2, f"d{name}"


@pytest.mark.parametrize("hidden,heads,kv_heads", [(96, 4, 2), (288, 4, 2)])
def test_jdit_training_step_cudnn_equals_xla(hidden, heads, kv_heads):
  """bf16 J-DiT loss and gradients with padded context frames: cuDNN vs XLA attention.

  Head dims 24 (tiny) and 72 (the 3.4B's). On CPU two bf16 attention paths differ by
  about 0.4% in the gradient (relative L2) and ignoring the mask changes it by 28%.
  """
  config = tiny_model.tiny_model_config()
  config.jdit.update(dtype="bfloat16", hidden_size=hidden, num_heads=heads, num_kv_heads=kv_heads)
  params, _ = tiny_model.tiny_model_params(config)
  kx, kn, kc, kt = jax.random.split(jax.random.key(1), 4)
  x = jax.random.normal(kx, (2, 1, 8, 8, 16))
  noise = jax.random.normal(kn, x.shape)
  cond = jax.random.normal(kc, (2, 6, 8, 8, 16))  # 3 pairs of frames; padding is noise
  t = jax.random.uniform(kt, (2,))
  mask = jnp.array([[True, False, True, True, False, False], [True] * 4 + [False] * 2])

  def step(impl, mask):
    model_config = config.jdit.copy_and_resolve_references()
    model_config.attention_impl = impl
    model = jdit.JDiT(model_config)
    loss = lambda p: dit.velocity_loss(model, p, x, noise, t, cond, mask, 0.0)
    return jax.jit(jax.value_and_grad(loss))(params)

  loss_cudnn, grads_cudnn = step("cudnn", mask)
  loss_xla, grads_xla = step("xla", mask)
  assert abs(float(loss_cudnn) - float(loss_xla)) < 5e-3 * abs(float(loss_xla))
  assert _relative(grads_cudnn, grads_xla) < 3e-2
  # The tolerance is far below what ignoring the padding costs.
  _, grads_unmasked = step("xla", jnp.ones_like(mask))
  assert _relative(grads_unmasked, grads_xla) > 0.1
