"""The one attention function of lavin_jax: softmax(q k^T / sqrt(hd)) v, grouped-query.

Implementations (`implementation=`):
- 'xla': `jax.nn.dot_product_attention` on XLA; materialises the (B, N, T, S) scores.
- 'cudnn': the same call with cuDNN flash attention; GPU only (ValueError elsewhere).
- 'blockwise': pure JAX, memory linear in the sequence length: queries in blocks
  (`lax.map`), keys in blocks (`lax.scan`) with an online softmax, heads-first layout,
  normalised once after the value matmul; rematerialised per query block so the
  backward pass stays linear too. For long sequences where no fused kernel exists.

Grouped-query heads: query head n uses key/value head n // (N // K) (consecutive query
heads share one), without repeating K and V in memory. Logits and softmax are float32.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

IMPLEMENTATIONS = ("xla", "cudnn", "blockwise")

# A large finite negative logit for masked keys (finite, so masked rows never give NaN).
_MASKED = -0.7 * float(np.finfo(np.float32).max)


def dot_product_attention(
  q: jax.Array,
  k: jax.Array,
  v: jax.Array,
  key_mask: jax.Array | None = None,
  *,
  implementation: str = "xla",
  block_size: int = 512,
) -> jax.Array:
  """Scaled dot-product attention with grouped-query heads.

  Args:
    q: queries (B, T, N, hd).
    k: keys (B, S, K, hd), N a multiple of K.
    v: values (B, S, K, hd).
    key_mask: optional (B, S) bool, False marks keys no query may attend to. Every query
      must keep at least one valid key.
    implementation: 'xla', 'cudnn' or 'blockwise' (see the module docstring).
    block_size: query and key block length of the blockwise path.

  Returns:
    (B, T, N, hd) in q's dtype.
  """
  _check_shapes(q, k, v, key_mask)
  if implementation == "blockwise":
    return blockwise_attention(q, k, v, key_mask, block_size=block_size)
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(
      f"Unknown attention implementation {implementation!r}; use one of {IMPLEMENTATIONS}."
    )
  if implementation == "cudnn" and jax.default_backend() != "gpu":
    raise ValueError(
      f"attention implementation 'cudnn' needs a GPU, but the backend is "
      f"{jax.default_backend()!r}; use 'xla' or 'blockwise'."
    )
  mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, S)
  return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=implementation)


def _check_shapes(q, k, v, key_mask):
  if q.ndim != 4 or k.shape != v.shape or k.ndim != 4:
    raise ValueError(
      f"attention wants q (B, T, N, hd) and k, v (B, S, K, hd); got q {q.shape}, "
      f"k {k.shape}, v {v.shape}."
    )
  (b, _, n, hd), (bk, s, kv, hdk) = q.shape, k.shape
  if b != bk or hd != hdk or n % kv:
    raise ValueError(
      f"attention: q {q.shape} and k {k.shape} need the same batch and head_dim, and "
      f"query heads a multiple of key/value heads."
    )
  if key_mask is not None and key_mask.shape != (b, s):
    raise ValueError(f"key_mask must be (B, S) = {(b, s)}, got {key_mask.shape}.")


def blockwise_attention(q, k, v, key_mask=None, *, block_size=512):
  """Memory-linear attention: online softmax over key blocks, one query block at a time."""
  b, t, n, hd = q.shape
  s, kv = k.shape[1], k.shape[2]
  g = n // kv
  bq, bk = min(block_size, t), min(block_size, s)
  pad_t, pad_s = -t % bq, -s % bk
  if pad_s and key_mask is None:
    key_mask = jnp.ones((b, s), bool)
  # Heads first: q (nq, B, K, G, bq, hd); k, v (nk, B, K, bk, hd); mask (nk, B, bk).
  q = q * jnp.asarray(hd**-0.5, q.dtype)
  q = jnp.pad(q, ((0, 0), (0, pad_t), (0, 0), (0, 0)))
  q = q.reshape(b, (t + pad_t) // bq, bq, kv, g, hd).transpose(1, 0, 3, 4, 2, 5)
  k, v = (
    jnp.pad(x, ((0, 0), (0, pad_s), (0, 0), (0, 0)))
    .reshape(b, (s + pad_s) // bk, bk, kv, hd)
    .transpose(1, 0, 3, 2, 4)
    for x in (k, v)
  )
  if key_mask is not None:
    key_mask = jnp.pad(key_mask, ((0, 0), (0, pad_s))).reshape(b, -1, bk).transpose(1, 0, 2)
  attend = functools.partial(_query_block, k=k, v=v, key_mask=key_mask)
  out = jax.lax.map(jax.checkpoint(attend), q)  # (nq, B, K, G, bq, hd)
  out = out.transpose(1, 0, 4, 2, 3, 5).reshape(b, t + pad_t, n, hd)
  return out[:, :t]


def _query_block(q, k, v, key_mask):
  """One query block (B, K, G, bq, hd) against all key blocks, online softmax."""

  def step(carry, kv_block):
    m, l, acc = carry
    k_j, v_j, mask_j = kv_block
    logits = jnp.einsum("bkgqd,bksd->bkgqs", q, k_j, preferred_element_type=jnp.float32)
    if mask_j is not None:
      logits = jnp.where(mask_j[:, None, None, None, :], logits, _MASKED)
    m_new = jnp.maximum(m, logits.max(-1))
    p = jnp.exp(logits - m_new[..., None])
    correction = jnp.exp(m - m_new)
    l = l * correction + p.sum(-1)
    pv = jnp.einsum(
      "bkgqs,bksd->bkgqd", p.astype(v_j.dtype), v_j, preferred_element_type=jnp.float32
    )
    return (m_new, l, acc * correction[..., None] + pv), None

  stats_shape = q.shape[:-1]
  init = (
    jnp.full(stats_shape, _MASKED, jnp.float32),
    jnp.zeros(stats_shape, jnp.float32),
    jnp.zeros(q.shape, jnp.float32),
  )
  (_, l, acc), _ = jax.lax.scan(step, init, (k, v, key_mask))
  return (acc / l[..., None]).astype(q.dtype)
