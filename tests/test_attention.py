"""Every attention path gives numpy's softmax attention; the blockwise path is memory-linear."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lavin_jax.models import attention

# Jitted: one compile per case instead of op-by-op dispatch.
dot_product_attention = jax.jit(
  attention.dot_product_attention, static_argnames=("implementation", "block_size")
)


def numpy_attention(q, k, v, key_mask=None):
  """Independent reference: float64, K/V repeated per query head."""
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  group = q.shape[2] // k.shape[2]
  k, v = np.repeat(k, group, axis=2), np.repeat(v, group, axis=2)
  logits = np.einsum("btnd,bsnd->bnts", q, k) / np.sqrt(q.shape[-1])
  if key_mask is not None:
    logits = np.where(np.asarray(key_mask)[:, None, None, :], logits, -np.inf)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  return np.einsum("bnts,bsnd->btnd", p, v)


def _inputs(seed, b=2, t=37, s=37, heads=4, kv_heads=2, hd=8, masked=True):
  kq, kk, kv, km = jax.random.split(jax.random.key(seed), 4)
  q = jax.random.normal(kq, (b, t, heads, hd))
  k = jax.random.normal(kk, (b, s, kv_heads, hd)) * 2
  v = jax.random.normal(kv, (b, s, kv_heads, hd))
  mask = None
  if masked:
    mask = jax.random.bernoulli(km, 0.6, (b, s)).at[:, -1].set(True)
  return q, k, v, mask


@pytest.mark.parametrize("impl,block", [("xla", 512), ("blockwise", 8), ("blockwise", 512)])
@pytest.mark.parametrize("kv_heads,masked", [(4, False), (2, True), (1, True)])
def test_matches_numpy(impl, block, kv_heads, masked):
  # 37 tokens: blocks of 8 and 16 leave a padded last block.
  q, k, v, mask = _inputs(0, kv_heads=kv_heads, masked=masked)
  out = dot_product_attention(q, k, v, mask, implementation=impl, block_size=block)
  assert out.shape == q.shape and out.dtype == q.dtype
  np.testing.assert_allclose(out, numpy_attention(q, k, v, mask), atol=2e-5, rtol=1e-5)


def test_cross_attention_lengths_and_bfloat16():
  q, k, v, mask = _inputs(1, t=20, s=45)
  ref = numpy_attention(q, k, v, mask)
  for impl in ("xla", "blockwise"):
    out = dot_product_attention(q, k, v, mask, implementation=impl, block_size=16)
    np.testing.assert_allclose(out, ref, atol=2e-5, rtol=1e-5)
  low = dot_product_attention(
    *(a.astype(jnp.bfloat16) for a in (q, k, v)), mask, implementation="blockwise", block_size=16
  )
  assert low.dtype == jnp.bfloat16
  np.testing.assert_allclose(low.astype(np.float32), ref, atol=0.05)


def test_gradients_agree():
  q, k, v, mask = _inputs(2, t=24, s=24)
  w = jax.random.normal(jax.random.key(3), q.shape)

  def loss(impl, q, k, v):
    out = dot_product_attention(q, k, v, mask, implementation=impl, block_size=8)
    return jnp.sum(out * w)

  grad = lambda impl: jax.jit(jax.grad(lambda *a: loss(impl, *a), argnums=(0, 1, 2)))
  g_xla, g_blk = grad("xla")(q, k, v), grad("blockwise")(q, k, v)
  for a, b in zip(g_xla, g_blk):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def test_masked_keys_do_not_matter():
  q, k, v, mask = _inputs(4)
  noise = jax.random.normal(jax.random.key(5), k.shape) * 100
  k2 = jnp.where(mask[:, :, None, None], k, noise)
  v2 = jnp.where(mask[:, :, None, None], v, noise)
  for impl in ("xla", "blockwise"):
    a = dot_product_attention(q, k, v, mask, implementation=impl, block_size=8)
    b = dot_product_attention(q, k2, v2, mask, implementation=impl, block_size=8)
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="checks the non-GPU error")
def test_cudnn_needs_gpu():
  q, k, v, _ = _inputs(6)
  with pytest.raises(ValueError, match="cudnn.*GPU"):
    attention.dot_product_attention(q, k, v, implementation="cudnn")


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN needs a GPU")
def test_cudnn_matches_xla():
  q, k, v, mask = (None if a is None else a for a in _inputs(7, t=64, s=64, hd=64))
  q, k, v = (a.astype(jnp.bfloat16) for a in (q, k, v))
  out = dot_product_attention(q, k, v, mask, implementation="cudnn")
  ref = dot_product_attention(q, k, v, mask, implementation="xla")
  np.testing.assert_allclose(out.astype(np.float32), ref.astype(np.float32), atol=2e-2)


def test_bad_arguments():
  q, k, v, mask = _inputs(8)
  with pytest.raises(ValueError, match="Unknown attention implementation"):
    attention.dot_product_attention(q, k, v, implementation="flash")
  with pytest.raises(ValueError, match="multiple of key/value heads"):
    attention.dot_product_attention(q[:, :, :3], k, v)
  with pytest.raises(ValueError, match="key_mask"):
    attention.dot_product_attention(q, k, v, mask[:, :5])


def _temp_bytes(impl, tokens, heads=2, hd=64):
  shape = jax.ShapeDtypeStruct((1, tokens, heads, hd), jnp.float32)
  fn = lambda q, k, v: attention.dot_product_attention(q, k, v, implementation=impl, block_size=256)
  return jax.jit(fn).lower(shape, shape, shape).compile().memory_analysis().temp_size_in_bytes


def test_blockwise_memory_is_linear():
  # Compiled, not run: XLA holds the (heads, T, S) float32 scores; blockwise does not.
  tokens = 4096
  scores = 2 * tokens * tokens * 4
  assert _temp_bytes("xla", tokens) >= scores
  blockwise = [_temp_bytes("blockwise", n) for n in (tokens, 2 * tokens)]
  assert blockwise[0] < scores / 8
  assert blockwise[1] < 2.5 * blockwise[0]
