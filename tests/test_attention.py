"""Every attention path gives numpy's softmax attention; chunked equals XLA in value and
gradient; 'auto' resolves per backend; the blockwise and chunked paths are memory-linear."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lavin_jax.models import attention

# Jitted: one compile per case instead of op-by-op dispatch.
dot_product_attention = jax.jit(
  attention.dot_product_attention, static_argnames=("implementation", "block_size", "chunk_bytes")
)
# 300 float32 logits a chunk: 8 query rows (the row multiple) at these lengths, so many
# chunks and a padded last one.
SMALL_CHUNK = 300 * 4
PATHS = [
  ("xla", {}),
  ("blockwise", dict(block_size=8)),
  ("blockwise", dict(block_size=512)),
  ("chunked", dict(chunk_bytes=SMALL_CHUNK)),
  ("chunked", {}),
]


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


@pytest.mark.parametrize("impl,options", PATHS)
@pytest.mark.parametrize("kv_heads,masked", [(4, False), (2, True), (1, True)])
def test_matches_numpy(impl, options, kv_heads, masked):
  # 37 tokens: blocks of 8 and chunks of 8 rows leave a padded last block.
  q, k, v, mask = _inputs(0, kv_heads=kv_heads, masked=masked)
  out = dot_product_attention(q, k, v, mask, implementation=impl, **options)
  assert out.shape == q.shape and out.dtype == q.dtype
  np.testing.assert_allclose(out, numpy_attention(q, k, v, mask), atol=2e-5, rtol=1e-5)


def test_cross_attention_lengths_and_bfloat16():
  q, k, v, mask = _inputs(1, t=20, s=45)
  ref = numpy_attention(q, k, v, mask)
  for impl, options in (
    ("xla", {}),
    ("blockwise", dict(block_size=16)),
    ("chunked", dict(chunk_bytes=SMALL_CHUNK)),
  ):
    out = dot_product_attention(q, k, v, mask, implementation=impl, **options)
    np.testing.assert_allclose(out, ref, atol=2e-5, rtol=1e-5)
    low = dot_product_attention(
      *(a.astype(jnp.bfloat16) for a in (q, k, v)), mask, implementation=impl, **options
    )
    assert low.dtype == jnp.bfloat16
    np.testing.assert_allclose(low.astype(np.float32), ref, atol=0.05)


# (batch, queries, keys, heads, kv heads, key padding): grouped-query heads, T != S,
# lengths no chunk divides, padding at the start, in the middle, at the end, or none.
CHUNKED_CASES = [
  (2, 37, 45, 4, 2, "random"),
  (1, 29, 29, 6, 3, "start"),
  (2, 45, 20, 4, 1, "middle"),
  (3, 13, 33, 2, 2, "end"),
  (1, 50, 50, 4, 4, None),
]


def _chunked_case(seed, b, t, s, heads, kv_heads, padding, dtype=jnp.float32):
  q, k, v, mask = _inputs(seed, b=b, t=t, s=s, heads=heads, kv_heads=kv_heads)
  span = {
    "start": slice(0, s // 3),
    "middle": slice(s // 3, 2 * s // 3),
    "end": slice(2 * s // 3, s),
  }
  if padding is None:
    mask = None
  elif padding != "random":
    mask = jnp.ones((b, s), bool).at[:, span[padding]].set(False)
  return (*(a.astype(dtype) for a in (q, k, v)), mask)


def _grads(impl, q, k, v, mask, weights, **options):
  def loss(q, k, v):
    out = attention.dot_product_attention(q, k, v, mask, implementation=impl, **options)
    return jnp.sum(out.astype(jnp.float32) * weights)

  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(q, k, v)


@pytest.mark.parametrize("case", CHUNKED_CASES)
def test_chunked_equals_xla_with_gradients(case):
  q, k, v, mask = _chunked_case(3, *case)
  weights = jax.random.normal(jax.random.key(4), q.shape)
  out_xla, grads_xla = _grads("xla", q, k, v, mask, weights)
  out, grads = _grads("chunked", q, k, v, mask, weights, chunk_bytes=SMALL_CHUNK)
  np.testing.assert_allclose(out, out_xla, rtol=1e-5, atol=1e-4)
  for name, a, b in zip("qkv", grads, grads_xla):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4, err_msg=f"d{name}")


@pytest.mark.parametrize("case", CHUNKED_CASES[:3])
def test_chunked_bfloat16_gradients(case):
  q, k, v, mask = _chunked_case(5, *case, dtype=jnp.bfloat16)
  weights = jax.random.normal(jax.random.key(6), q.shape)
  _, grads_ref = _grads("xla", *(a.astype(jnp.float32) for a in (q, k, v)), mask, weights)
  _, grads = _grads("chunked", q, k, v, mask, weights, chunk_bytes=SMALL_CHUNK)
  for name, a, b in zip("qkv", grads, grads_ref):
    assert a.dtype == jnp.bfloat16
    scale = float(jnp.abs(b).max())
    np.testing.assert_allclose(a.astype(np.float32), b, atol=0.02 * scale, err_msg=f"d{name}")


def test_gradients_agree():
  q, k, v, mask = _inputs(2, t=24, s=24)
  w = jax.random.normal(jax.random.key(3), q.shape)
  _, g_xla = _grads("xla", q, k, v, mask, w)
  _, g_blk = _grads("blockwise", q, k, v, mask, w, block_size=8)
  for a, b in zip(g_xla, g_blk):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("impl,options", PATHS[:2] + PATHS[3:4])
def test_masked_keys_do_not_matter(impl, options):
  q, k, v, mask = _inputs(4)
  noise = jax.random.normal(jax.random.key(5), k.shape) * 100
  k2 = jnp.where(mask[:, :, None, None], k, noise)
  v2 = jnp.where(mask[:, :, None, None], v, noise)
  a = dot_product_attention(q, k, v, mask, implementation=impl, **options)
  b = dot_product_attention(q, k2, v2, mask, implementation=impl, **options)
  np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize(
  "backend,dtype,head_dim,expected",
  [
    ("cpu", jnp.float32, 64, "chunked"),
    ("cpu", jnp.bfloat16, 64, "chunked"),
    ("gpu", jnp.bfloat16, 64, "cudnn"),
    ("gpu", jnp.bfloat16, 72, "cudnn"),
    ("gpu", jnp.float16, 128, "cudnn"),
    ("gpu", jnp.float32, 64, "xla"),
    ("gpu", jnp.bfloat16, 36, "xla"),
    ("gpu", jnp.bfloat16, 256, "xla"),
    ("tpu", jnp.bfloat16, 72, "splash"),
    ("tpu", jnp.float32, 64, "splash"),
  ],
)
def test_auto_resolves_per_backend(monkeypatch, backend, dtype, head_dim, expected):
  monkeypatch.setattr(jax, "default_backend", lambda: backend)
  assert attention.resolve("auto", dtype, head_dim) == expected
  assert attention.resolve("blockwise", dtype, head_dim) == "blockwise"


def test_auto_is_the_backend_path():
  q, k, v, mask = _inputs(9)
  expected = attention.resolve("auto", q.dtype)
  np.testing.assert_array_equal(
    dot_product_attention(q, k, v, mask),
    dot_product_attention(q, k, v, mask, implementation=expected),
  )


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="checks the non-GPU error")
def test_cudnn_needs_gpu():
  q, k, v, _ = _inputs(6)
  with pytest.raises(ValueError, match="cudnn.*GPU"):
    attention.dot_product_attention(q, k, v, implementation="cudnn")


def test_bad_arguments():
  q, k, v, mask = _inputs(8)
  with pytest.raises(
    ValueError,
    match="Unknown attention implementation 'flash'.*"
    "'auto', 'xla', 'cudnn', 'chunked', 'blockwise', 'splash'",
  ):
    attention.dot_product_attention(q, k, v, implementation="flash")
  with pytest.raises(ValueError, match="multiple of key/value heads"):
    attention.dot_product_attention(q[:, :, :3], k, v)
  with pytest.raises(ValueError, match="key_mask"):
    attention.dot_product_attention(q, k, v, mask[:, :5])


def _loops(policy):
  """Loops (lax.map and lax.scan) in the gradient of a rematerialised chunked attention."""
  q, k, v, mask = _inputs(10)
  f = lambda q, k, v: attention.dot_product_attention(
    q, k, v, mask, implementation="chunked", chunk_bytes=SMALL_CHUNK
  ).sum()
  grad = jax.grad(jax.checkpoint(f, policy=policy), argnums=(0, 1, 2))
  return str(jax.make_jaxpr(grad)(q, k, v)).count("scan[")


def test_save_attention_skips_the_forward_recompute():
  # Forward: a map over heads of a map over chunks; backward: a map of a scan.
  saved = _loops(jax.checkpoint_policies.save_only_these_names("attention"))
  assert saved == 4
  assert _loops(jax.checkpoint_policies.nothing_saveable) == saved + 2


def _temp_bytes(impl, tokens, heads=2, hd=64, backward=False):
  shape = jax.ShapeDtypeStruct((1, tokens, heads, hd), jnp.float32)
  fn = lambda q, k, v: attention.dot_product_attention(
    q, k, v, implementation=impl, block_size=256, chunk_bytes=2**20
  ).sum()
  if backward:
    fn = jax.grad(fn, argnums=(0, 1, 2))
  return jax.jit(fn).lower(shape, shape, shape).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize(
  "impl,backward", [("blockwise", False), ("chunked", False), ("chunked", True)]
)
def test_memory_is_linear(impl, backward):
  # Compiled, not run: XLA holds the (heads, T, S) float32 scores; these paths do not.
  tokens = 4096
  scores = 2 * tokens * tokens * 4
  assert _temp_bytes("xla", tokens) >= scores
  temp = [_temp_bytes(impl, n, backward=backward) for n in (tokens, 2 * tokens)]
  assert temp[0] < scores / 4
  assert temp[1] < 2.5 * temp[0]
