"""Peak memory of the attention paths at 8 pairs, 512 px: 18,432 tokens, 8 heads of 64.

  python bench/attention.py [--tokens=18432] [--block_size=512] [--chunk_bytes=8388608]
      [--dtype=bfloat16]

8 context pairs + the query = 17 condition frames and 1 target frame of 32 x 32 tokens
(512 px / 8 (VAE) / 2 (patch)); the 0.1B head layout. Figures come from XLA's compiled
memory analysis (nothing is run, so the XLA path's 10+ GB need not fit in RAM): the
temporary bytes and temp + arguments + outputs, for the forward pass and for forward +
backward, with a key-validity mask as in padded training batches. One JSON line each.
"""

from absl import app
from absl import flags
import common
import jax
import jax.numpy as jnp

from lavin_jax import configs
from lavin_jax.models import attention

_LAYOUT = configs.jdit("0.1b")
_TOKENS = flags.DEFINE_integer("tokens", 18_432, "Sequence length.")
_HEADS = flags.DEFINE_integer("heads", _LAYOUT.num_heads, "Attention heads.")
_HEAD_DIM = flags.DEFINE_integer(
  "head_dim", _LAYOUT.hidden_size // _LAYOUT.num_heads, "Channels per head."
)
_BLOCK_SIZE = flags.DEFINE_integer(
  "block_size", _LAYOUT.attention_block_size, "Query/key block of the blockwise path."
)
_CHUNK_BYTES = flags.DEFINE_integer(
  "chunk_bytes",
  _LAYOUT.attention_chunk_bytes,
  "float32 logits per query chunk of the chunked path.",
)
_DTYPE = flags.DEFINE_string("dtype", "bfloat16", "Compute dtype.")


def memory(implementation, tokens, heads, head_dim, dtype, backward):
  qkv = jax.ShapeDtypeStruct((1, tokens, heads, head_dim), dtype)
  mask = jax.ShapeDtypeStruct((1, tokens), jnp.bool_)

  def forward(q, k, v, key_mask):
    return attention.dot_product_attention(
      q,
      k,
      v,
      key_mask,
      implementation=implementation,
      block_size=_BLOCK_SIZE.value,
      chunk_bytes=_CHUNK_BYTES.value,
    )

  fn = forward
  if backward:
    fn = jax.grad(lambda *a: forward(*a).astype(jnp.float32).sum(), argnums=(0, 1, 2))
  stats = jax.jit(fn).lower(qkv, qkv, qkv, mask).compile().memory_analysis()
  return stats.temp_size_in_bytes, (
    stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes
  )


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  implementations = ["xla", "blockwise", "chunked"] + (
    ["cudnn"] if jax.default_backend() == "gpu" else []
  )
  for backward in (False, True):
    for impl in implementations:
      temp, total = memory(
        impl, _TOKENS.value, _HEADS.value, _HEAD_DIM.value, jnp.dtype(_DTYPE.value), backward
      )
      common.print_figure(
        {
          "figure": "attention_memory",
          "implementation": impl,
          "pass": "forward_backward" if backward else "forward",
          "tokens": _TOKENS.value,
          "heads": _HEADS.value,
          "head_dim": _HEAD_DIM.value,
          "dtype": _DTYPE.value,
          "block_size": _BLOCK_SIZE.value if impl == "blockwise" else None,
          "chunk_bytes": _CHUNK_BYTES.value if impl == "chunked" else None,
          "backend": jax.default_backend(),
          "temp_gib": round(temp / 2**30, 3),
          "peak_gib": round(total / 2**30, 3),
        }
      )


if __name__ == "__main__":
  app.run(main)
