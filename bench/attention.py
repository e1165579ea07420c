"""Peak memory of the attention paths at 8 pairs, 512 px: 18,432 tokens, 8 heads of 64.

  python bench/attention.py [--tokens=18432] [--block_size=512] [--dtype=bfloat16]

8 context pairs + the query = 17 condition frames and 1 target frame of 32 x 32 tokens
(512 px / 8 (VAE) / 2 (patch)); the 0.1B head layout. Figures come from XLA's compiled
memory analysis (nothing is run, so the XLA path's 10+ GB need not fit in RAM): the
temporary bytes and temp + arguments + outputs, for the forward pass and for forward +
backward, with a key-validity mask as in padded training batches. One JSON line each.
"""

import argparse
import json

import jax
import jax.numpy as jnp

from lavin_jax.models import attention


def memory(implementation, tokens, heads, head_dim, dtype, block_size, backward):
  qkv = jax.ShapeDtypeStruct((1, tokens, heads, head_dim), dtype)
  mask = jax.ShapeDtypeStruct((1, tokens), jnp.bool_)

  def forward(q, k, v, key_mask):
    return attention.dot_product_attention(
        q, k, v, key_mask, implementation=implementation, block_size=block_size)

  fn = forward
  if backward:
    fn = jax.grad(lambda *a: forward(*a).astype(jnp.float32).sum(), argnums=(0, 1, 2))
  stats = jax.jit(fn).lower(qkv, qkv, qkv, mask).compile().memory_analysis()
  return stats.temp_size_in_bytes, (stats.temp_size_in_bytes + stats.argument_size_in_bytes
                                    + stats.output_size_in_bytes)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tokens", type=int, default=18_432)
  parser.add_argument("--heads", type=int, default=8)
  parser.add_argument("--head_dim", type=int, default=64)
  parser.add_argument("--block_size", type=int, default=512)
  parser.add_argument("--dtype", default="bfloat16")
  args = parser.parse_args()
  implementations = ["xla", "blockwise"] + (["cudnn"] if jax.default_backend() == "gpu" else [])
  for backward in (False, True):
    for impl in implementations:
      temp, total = memory(impl, args.tokens, args.heads, args.head_dim,
                           jnp.dtype(args.dtype), args.block_size, backward)
      print(json.dumps({
          "figure": "attention_memory", "implementation": impl,
          "pass": "forward_backward" if backward else "forward",
          "tokens": args.tokens, "heads": args.heads, "head_dim": args.head_dim,
          "dtype": args.dtype, "block_size": args.block_size if impl == "blockwise" else None,
          "backend": jax.default_backend(), "temp_gib": round(temp / 2**30, 3),
          "peak_gib": round(total / 2**30, 3)}), flush=True)


if __name__ == "__main__":
  main()
