"""The one attention function of lavin_jax: softmax(q k^T / sqrt(hd)) v, grouped-query.

Implementations (`implementation=`, the registry IMPLEMENTATIONS):
- 'auto': the fastest exact path of the platform (`resolve`, `platform`): 'cudnn' on GPU for 16-bit
  inputs and a head_dim cuDNN takes ('xla' otherwise: float32 keeps float32), 'splash'
  on TPU, 'chunked' on CPU.
- 'xla': `jax.nn.dot_product_attention` on XLA; materialises the (B, N, T, S) scores.
- 'cudnn': cuDNN flash attention through the same call; GPU only (ValueError elsewhere).
  Key padding reaches the kernel as key/value sequence lengths, never as a bias: each
  example's keys and values are gathered so its valid keys come first (a stable sort;
  attention does not depend on the order of the keys), and `key_value_seq_lengths`
  counts them. Queries keep their order: padded queries attend to the valid keys, as on
  the masked paths. float32 inputs are cast to bfloat16 for the kernel and the output
  back to float32 (cuDNN takes only 16-bit inputs).
- 'splash': the TPU Pallas flash kernel (`jax.experimental.pallas.ops.tpu.
  splash_attention`); TPU only. Key padding as segment ids; any head_dim (72 compiles
  as is); run in `jax.shard_map` over the current mesh's batch and head axes
  (`splash_attention`).
- 'chunked': pure JAX in the form XLA CPU runs near its matmul rate: heads first, the
  rows of one key/value head (its G query heads) in chunks whose float32 logits take
  about `chunk_bytes` (cache-sized), softmax normalised after the value matmul, and a
  custom VJP that keeps only the output and the row log-sum-exp (memory linear in the
  sequence length) and recomputes each chunk's probabilities in the backward pass.
- 'blockwise': pure JAX, memory linear in the sequence length: queries in blocks
  (`lax.map`), keys in blocks (`lax.scan`) with an online softmax, heads-first layout,
  normalised once after the value matmul; rematerialised per query block so the
  backward pass stays linear too. For long sequences where no fused kernel exists.

Grouped-query heads: query head n uses key/value head n // (N // K) (consecutive query
heads share one), without repeating K and V in memory. Logits and softmax are float32.
The output, and the chunked path's log-sum-exp, carry the checkpoint name 'attention'
(remat policy 'save_attention' keeps them).
"""

import functools
import math

import jax
from jax.ad_checkpoint import checkpoint_name
import jax.numpy as jnp
import numpy as np

# A large finite negative logit for masked keys (finite, so masked rows never give NaN).
_MASKED = -0.7 * float(np.finfo(np.float32).max)
# 'auto' by platform(); GPU takes cuDNN only for these input dtypes and head
# dims (a multiple of 8, at most 128 on every GPU cuDNN flash attention runs on).
_AUTO = {"cpu": "chunked", "gpu": "cudnn", "tpu": "splash"}
_CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)
_CUDNN_HEAD_DIM = 8, 128  # multiple of, at most
_ROW_MULTIPLE = 8  # chunk rows are a multiple of this
_SPLASH_LANES = 128  # splash kernel blocks are multiples of this


def resolve(implementation: str, dtype=jnp.float32, head_dim: int = 64) -> str:
  """The registry name `implementation` stands for ('auto' by platform, dtype, head_dim)."""
  if implementation not in IMPLEMENTATIONS and implementation != "auto":
    raise ValueError(
      f"Unknown attention implementation {implementation!r}; use one of "
      f"{('auto',) + tuple(IMPLEMENTATIONS)}."
    )
  if implementation != "auto":
    return implementation
  name = _AUTO.get(platform(), "xla")
  multiple, most = _CUDNN_HEAD_DIM
  if name == "cudnn" and (
    jnp.dtype(dtype) not in _CUDNN_DTYPES or head_dim % multiple or head_dim > most
  ):
    return "xla"
  return name


def platform() -> str:
  """The platform being compiled for: the current mesh's devices' ('tpu' for an
  ahead-of-time compile on a TPU topology's devices), else the default backend."""
  mesh = jax.sharding.get_abstract_mesh()
  device = None if mesh.empty else mesh.abstract_device
  return jax.default_backend() if device is None else device.platform


def dot_product_attention(
  q: jax.Array,
  k: jax.Array,
  v: jax.Array,
  key_mask: jax.Array | None = None,
  *,
  implementation: str = "auto",
  block_size: int = 512,
  chunk_bytes: int = 8 * 2**20,
) -> jax.Array:
  """Scaled dot-product attention with grouped-query heads.

  Args:
    q: queries (B, T, N, hd).
    k: keys (B, S, K, hd), N a multiple of K.
    v: values (B, S, K, hd).
    key_mask: optional (B, S) bool, False marks keys no query may attend to. Every query
      must keep at least one valid key.
    implementation: a key of IMPLEMENTATIONS or 'auto' (see the module docstring).
    block_size: query and key block length of the blockwise path.
    chunk_bytes: float32 logits per query chunk of the chunked path.

  Returns:
    (B, T, N, hd) in q's dtype.
  """
  _check_shapes(q, k, v, key_mask)
  fn = IMPLEMENTATIONS[resolve(implementation, q.dtype, q.shape[-1])]
  out = fn(q, k, v, key_mask, block_size=block_size, chunk_bytes=chunk_bytes)
  return checkpoint_name(out, "attention")


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


def _xla(q, k, v, key_mask):
  """jax.nn.dot_product_attention on XLA, the key mask as a (B, 1, 1, S) mask."""
  mask = None if key_mask is None else key_mask[:, None, None, :]
  return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla")


def _cudnn(q, k, v, key_mask):
  """cuDNN flash attention: 16-bit inputs, key padding as sequence lengths."""
  if platform() != "gpu":
    raise ValueError(
      f"attention implementation 'cudnn' needs a GPU, but the platform is "
      f"{platform()!r}; use 'auto', 'xla', 'chunked' or 'blockwise'."
    )
  low = q.dtype if q.dtype in _CUDNN_DTYPES else jnp.bfloat16
  q_low, k_low, v_low = (x.astype(low) for x in (q, k, v))
  return seq_lengths_attention(q_low, k_low, v_low, key_mask, "cudnn").astype(q.dtype)


def _splash(q, k, v, key_mask, *, block_size):
  """Splash attention; TPU only (the module docstring)."""
  if platform() != "tpu":
    raise ValueError(
      f"attention implementation 'splash' needs a TPU, but the platform is "
      f"{platform()!r}; use 'auto', 'xla', 'chunked' or 'blockwise'."
    )
  return splash_attention(q, k, v, key_mask, block_size=block_size)


def seq_lengths_attention(q, k, v, key_mask, implementation):
  """jax.nn.dot_product_attention (`implementation` 'xla' or 'cudnn') with the key padding
  given as key/value sequence lengths: valid keys first in each example (`valid_first`)."""
  lengths = None
  if key_mask is not None:
    k, v, lengths = valid_first(k, v, key_mask)
  return jax.nn.dot_product_attention(
    q, k, v, key_value_seq_lengths=lengths, implementation=implementation
  )


def valid_first(k, v, key_mask):
  """k, v (B, S, K, hd) with each example's valid keys first, in their order; and the
  number of valid keys (B,) int32."""
  order = jnp.argsort((~key_mask).astype(jnp.int32), axis=1, stable=True)  # (B, S)
  k, v = (jnp.take_along_axis(x, order[:, :, None, None], axis=1) for x in (k, v))
  return k, v, key_mask.sum(-1, dtype=jnp.int32)


# ---------------------------------------------------------------------------------------
# Chunked: heads first, cache-sized query chunks, custom VJP.


def chunked_attention(q, k, v, key_mask=None, *, chunk_bytes=8 * 2**20):
  """Exact attention in cache-sized query chunks, heads first (module docstring)."""
  b, t, n, hd = q.shape
  s, kv = k.shape[1], k.shape[2]
  rows = n // kv * t  # query rows of one key/value head
  chunks = max(1, -(-rows * s * 4 // chunk_bytes))
  size = -(-rows // chunks)
  size += -size % _ROW_MULTIPLE
  # q (B*K, chunks, size, hd), rows ordered (group head, position); k, v (B*K, S, hd);
  # one additive key bias per (B*K, S).
  q = (q * jnp.asarray(hd**-0.5, q.dtype)).reshape(b, t, kv, n // kv, hd)
  q = q.transpose(0, 2, 3, 1, 4).reshape(b * kv, rows, hd)
  q = jnp.pad(q, ((0, 0), (0, chunks * size - rows), (0, 0)))
  q = q.reshape(b * kv, chunks, size, hd)
  k, v = (x.transpose(0, 2, 1, 3).reshape(b * kv, s, hd) for x in (k, v))
  bias = None
  if key_mask is not None:
    bias = jnp.repeat(jnp.where(key_mask, 0.0, _MASKED).astype(jnp.float32), kv, axis=0)
  out = _chunked(q, k, v, bias).reshape(b * kv, chunks * size, hd)[:, :rows]
  out = out.reshape(b, kv, n // kv, t, hd).transpose(0, 3, 1, 2, 4)
  return out.reshape(b, t, n, hd)


def _logits(q, k, bias):
  """float32 logits (rows, S) of one chunk, masked keys pushed to _MASKED."""
  logits = jax.lax.dot_general(q, k, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
  return logits if bias is None else logits + bias


def _chunked_forward(q, k, v, bias):
  """(out (B*K, chunks, size, hd), log-sum-exp (B*K, chunks, size) float32)."""

  def head(args):
    q_h, k_h, v_h, bias_h = args

    def chunk(q_c):
      logits = _logits(q_c, k_h, bias_h)
      peak = logits.max(-1, keepdims=True)
      # Rounded once to the value matmul's dtype; the normaliser sums the same numbers.
      p = jnp.exp(logits - peak).astype(v_h.dtype)
      total = p.sum(-1, keepdims=True, dtype=jnp.float32)
      out = jnp.dot(p, v_h, preferred_element_type=jnp.float32) / total
      return out.astype(q_c.dtype), (peak + jnp.log(total))[:, 0]

    return jax.lax.map(chunk, q_h)

  return jax.lax.map(head, (q, k, v, bias))


@jax.custom_vjp
def _chunked(q, k, v, bias):
  return _chunked_forward(q, k, v, bias)[0]


def _chunked_fwd(q, k, v, bias):
  out, lse = _chunked_forward(q, k, v, bias)
  out, lse = checkpoint_name(out, "attention"), checkpoint_name(lse, "attention")
  return out, (q, k, v, bias, out, lse)


def _chunked_bwd(residuals, d_out):
  """Per head, a scan over query chunks: recompute p, accumulate dK and dV.

  A chunk's probabilities are recomputed transposed, (S, rows): then dV, dP and dK are
  matmuls in the layouts XLA CPU runs at its matmul rate, and only dQ contracts the
  leading axes of both operands (slower there); untransposed, dV and dK would.
  """
  q, k, v, bias, out, lse = residuals
  f32 = jnp.float32
  delta = jnp.sum(d_out.astype(f32) * out.astype(f32), axis=-1)  # rowsum(dO * O)
  dot = functools.partial(jax.lax.dot_general, preferred_element_type=f32)

  def head(args):
    q_h, k_h, v_h, bias_h, do_h, lse_h, delta_h = args

    def chunk(carry, xs):
      dk, dv = carry
      q_c, do_c, lse_c, delta_c = xs
      logits_t = dot(k_h, q_c, (((1,), (1,)), ((), ())))  # (S, rows)
      if bias_h is not None:
        logits_t = logits_t + bias_h[:, None]
      p_t = jnp.exp(logits_t - lse_c)
      dv = dv + dot(p_t.astype(v_h.dtype), do_c, (((1,), (0,)), ((), ())))  # (S, hd)
      dp_t = dot(v_h, do_c, (((1,), (1,)), ((), ())))  # (S, rows)
      ds_t = (p_t * (dp_t - delta_c)).astype(q_h.dtype)
      dk = dk + dot(ds_t, q_c, (((1,), (0,)), ((), ())))  # (S, hd)
      dq = dot(ds_t, k_h, (((0,), (0,)), ((), ())))  # (rows, hd)
      return (dk, dv), dq.astype(q_h.dtype)

    init = (jnp.zeros(k_h.shape, f32), jnp.zeros(v_h.shape, f32))
    (dk, dv), dq = jax.lax.scan(chunk, init, (q_h, do_h, lse_h, delta_h))
    return dq, dk.astype(k_h.dtype), dv.astype(v_h.dtype)

  dq, dk, dv = jax.lax.map(head, (q, k, v, bias, d_out, lse, delta))
  return dq, dk, dv, None


_chunked.defvjp(_chunked_fwd, _chunked_bwd)


# ---------------------------------------------------------------------------------------
# Blockwise: online softmax over key blocks.


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
    m, row_sum, acc = carry
    k_j, v_j, mask_j = kv_block
    logits = jnp.einsum("bkgqd,bksd->bkgqs", q, k_j, preferred_element_type=jnp.float32)
    if mask_j is not None:
      logits = jnp.where(mask_j[:, None, None, None, :], logits, _MASKED)
    m_new = jnp.maximum(m, logits.max(-1))
    p = jnp.exp(logits - m_new[..., None])
    correction = jnp.exp(m - m_new)
    row_sum = row_sum * correction + p.sum(-1)
    pv = jnp.einsum(
      "bkgqs,bksd->bkgqd", p.astype(v_j.dtype), v_j, preferred_element_type=jnp.float32
    )
    return (m_new, row_sum, acc * correction[..., None] + pv), None

  stats_shape = q.shape[:-1]
  init = (
    jnp.full(stats_shape, _MASKED, jnp.float32),
    jnp.zeros(stats_shape, jnp.float32),
    jnp.zeros(q.shape, jnp.float32),
  )
  (_, row_sum, acc), _ = jax.lax.scan(step, init, (k, v, key_mask))
  return (acc / row_sum[..., None]).astype(q.dtype)


# ---------------------------------------------------------------------------------------
# Splash: the TPU Pallas flash kernel, one call per shard of the mesh.


def splash_attention(q, k, v, key_mask=None, *, block_size=512, interpret=False):
  """Splash attention (TPU): key padding as segment ids, run per shard of the mesh.

  Queries have segment id 1 and keys 1 if valid, else 0, so no query sees a padded key.
  Lengths are padded to a multiple of the kernel block (`block_size` or the length, the
  smaller, rounded up to a multiple of 128), the added keys padding too. Under a mesh
  (`jax.set_mesh`) the kernel runs in `jax.shard_map` over the axes the logical rules
  give 'batch' and 'heads' (heads only where both N and K divide), since the compiler
  cannot partition a Mosaic kernel. `interpret` runs the kernel in Pallas' interpreter
  (CPU tests).
  """
  b, t, n, hd = q.shape
  s = k.shape[1]
  block = _round_up(block_size, _SPLASH_LANES)
  block_q, block_kv = (min(block, _round_up(x, _SPLASH_LANES)) for x in (t, s))
  pad_t, pad_s = _round_up(t, block_q) - t, _round_up(s, block_kv) - s
  if key_mask is None:
    key_mask = jnp.ones((b, s), bool)
  # Heads first: q (B, N, T', hd); k, v (B, K, S', hd); segment ids (B, T'), (B, S').
  q = jnp.pad(q * jnp.asarray(hd**-0.5, q.dtype), ((0, 0), (0, pad_t), (0, 0), (0, 0)))
  q = q.transpose(0, 2, 1, 3)
  k, v = (jnp.pad(x, ((0, 0), (0, pad_s), (0, 0), (0, 0))).transpose(0, 2, 1, 3) for x in (k, v))
  q_ids = jnp.ones((b, t + pad_t), jnp.int32)
  kv_ids = jnp.pad(key_mask, ((0, 0), (0, pad_s))).astype(jnp.int32)
  attend = functools.partial(_splash_shard, block_q=block_q, block_kv=block_kv, interpret=interpret)
  mesh = jax.sharding.get_abstract_mesh()
  if not mesh.empty:
    batch, heads = _splash_specs(mesh, b, n, k.shape[1])
    head_spec = jax.sharding.PartitionSpec(batch, heads)
    id_spec = jax.sharding.PartitionSpec(batch)
    attend = jax.shard_map(
      attend,
      mesh=mesh,
      in_specs=(head_spec, head_spec, head_spec, id_spec, id_spec),
      out_specs=head_spec,
      check_vma=False,
    )
  out = attend(q, k, v, q_ids, kv_ids)  # (B, N, T', hd)
  return out[:, :, :t].transpose(0, 2, 1, 3)


def _round_up(x, multiple):
  return -(-x // multiple) * multiple


def _splash_specs(mesh, b, n, kv):
  """Mesh axes of the batch and of the heads, each dropped where it does not divide."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top

  batch, heads = nn.logical_to_mesh_axes(("batch", "heads"))
  size = lambda axes: math.prod(
    mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes or ())
  )
  batch = batch if b % size(batch) == 0 else None
  heads = heads if n % size(heads) == 0 and kv % size(heads) == 0 else None
  return batch, heads


def _splash_shard(q, k, v, q_ids, kv_ids, *, block_q, block_kv, interpret):
  """The splash kernel on one shard: q (B, N, T, hd), k, v (B, K, S, hd) -> (B, N, T, hd)."""
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash  # pylint: disable=g-import-not-at-top
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as splash_mask  # pylint: disable=g-import-not-at-top

  n, t, s = q.shape[1], q.shape[2], k.shape[2]
  blocks = dict(block_q=block_q, block_kv=block_kv, block_kv_compute=block_kv)
  kernel = splash.make_splash_mha(
    splash_mask.MultiHeadMask([splash_mask.FullMask((t, s))] * n),
    block_sizes=splash.BlockSizes(
      **blocks,
      block_q_dkv=block_q,
      block_kv_dkv=block_kv,
      block_kv_dkv_compute=block_kv,
      block_q_dq=block_q,
      block_kv_dq=block_kv,
    ),
    head_shards=1,
    q_seq_shards=1,
    residual_checkpoint_name="attention",
    interpret=interpret,
  )
  ids = splash.SegmentIds(q_ids, kv_ids)
  return jax.vmap(kernel)(q, k, v, segment_ids=ids)


def _with_options(fn, *options):
  """fn(q, k, v, key_mask, **options it takes), ignoring the other paths' options."""

  def call(q, k, v, key_mask, **kwargs):
    return fn(q, k, v, key_mask, **{name: kwargs[name] for name in options})

  return call


IMPLEMENTATIONS = {
  "xla": _with_options(_xla),
  "cudnn": _with_options(_cudnn),
  "chunked": _with_options(chunked_attention, "chunk_bytes"),
  "blockwise": _with_options(blockwise_attention, "block_size"),
  "splash": _with_options(_splash, "block_size"),
}
