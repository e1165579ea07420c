"""Seconds of one attention layer, forward and forward + backward, per implementation.

  python bench/attention_speed.py [--shapes=tiny192,0.1b] [--tokens=2560]
      [--implementations=chunked,blockwise,xla] [--masked] [--dtype=float32] [--repeats=5]

The J-DiT's attention at 4 context pairs, 256 px (2,560 tokens, batch 1): `tiny192` is
4 heads of 48 over 2 key/value heads, `0.1b` 8 heads of 64. --masked pads the first 256
keys as a padded training batch does (the key mask), the train step's case. The
implementations of a shape are timed interleaved, best of `repeats` rounds, next to a
square float32 matmul of the same process; one JSON line each with its TFLOP/s (4 matmul
FLOPs of T x S x hd per head forward, 10 forward + backward: the backward's 5 matmuls,
the recomputed logits among them).
"""

import functools

from absl import app
from absl import flags
import common
import jax
import jax.numpy as jnp
import numpy as np
import workloads

from lavin_jax.models import attention

# name: (query heads, key/value heads, head_dim)
_SHAPES = {"tiny192": (4, 2, 48), "0.1b": (8, 8, 64)}
_PADDED = 256  # keys padded by --masked: one 256 px frame of tokens
_SHAPE_NAMES = common.define_choices("shapes", list(_SHAPES), list(_SHAPES), "Head layouts")
_TOKENS = flags.DEFINE_integer("tokens", 2560, "Sequence length (queries = keys).")
_IMPLEMENTATIONS = common.define_choices(
  "implementations", ["chunked", "blockwise", "xla"], list(attention.IMPLEMENTATIONS), "Paths"
)
_MASKED = flags.DEFINE_bool("masked", True, f"Pad the first {_PADDED} keys (a key mask).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Input dtype.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Interleaved rounds.")


def _compiled(implementation, q, k, v, key_mask, backward):
  def forward(q, k, v):
    return attention.dot_product_attention(q, k, v, key_mask, implementation=implementation)

  fn = forward
  if backward:
    fn = jax.grad(lambda *a: forward(*a).astype(jnp.float32).sum(), argnums=(0, 1, 2))
  return jax.jit(fn).lower(q, k, v).compile()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _MASKED.value and _TOKENS.value <= _PADDED:
    raise app.UsageError(
      f"--masked pads the first {_PADDED} keys: --tokens must exceed {_PADDED} "
      "(or pass --nomasked)."
    )
  dtype, t = jnp.dtype(_DTYPE.value), _TOKENS.value
  peak = workloads.matmul_peak(jnp.float32, 2048)
  rng = np.random.default_rng(0)
  for name in _SHAPE_NAMES.value:
    heads, kv_heads, hd = _SHAPES[name]
    q, k, v = (
      jnp.asarray(rng.standard_normal((1, t, n, hd)), dtype) for n in (heads, kv_heads, kv_heads)
    )
    key_mask = jnp.arange(t)[None] >= _PADDED if _MASKED.value else None
    cases = [(impl, b) for impl in _IMPLEMENTATIONS.value for b in (False, True)]
    runs = [functools.partial(_compiled(impl, q, k, v, key_mask, b), q, k, v) for impl, b in cases]
    for run in runs:
      jax.block_until_ready(run())
    seconds, _ = workloads.interleaved(runs, _REPEATS.value)
    for (impl, backward), best in zip(cases, seconds):
      flops = (10 if backward else 4) * heads * t * t * hd
      common.print_figure(
        {
          "figure": "attention_speed",
          "shape": name,
          "implementation": impl,
          "pass": "forward_backward" if backward else "forward",
          "tokens": t,
          "heads": heads,
          "kv_heads": kv_heads,
          "head_dim": hd,
          "masked": _MASKED.value,
          "dtype": _DTYPE.value,
          "backend": jax.default_backend(),
          "ms": round(best * 1e3, 2),
          "tflops_per_sec": round(flops / best / 1e12, 4),
          "matmul_peak_tflops": round(peak / 1e12, 4),
        }
      )


if __name__ == "__main__":
  app.run(main)
