"""The in-context layout J-DiT reads: clip packing for one ST-VAE call, the condition.

An episode holds K (input, target) context pairs (B, K, T, ...) and single clips
(query, and in training the target) (B, T, ...). The ST-VAE codes every clip on its
own, so training and inference pack all clips of a batch into one (N, T, ...) array,
code it in one call and unpack the result; J-DiT then reads the condition sequence
[in_1, tgt_1, ..., in_K, tgt_K, query] along time.
"""

import jax
import jax.numpy as jnp


def pack_clips(context_inputs, context_targets, *singles):
  """(B, K, T, ...) x 2 and (B, T, ...) clips -> (2 B K + B len(singles), T, ...)."""
  b, k = context_inputs.shape[:2]
  clip_shape = context_inputs.shape[2:]
  return jnp.concatenate(
    [
      context_inputs.reshape(b * k, *clip_shape),
      context_targets.reshape(b * k, *clip_shape),
      *singles,
    ],
    axis=0,
  )


def unpack_clips(coded, batch: int, num_pairs: int):
  """Inverse of `pack_clips` on coded clips (N, T', ...).

  Returns (context_inputs (B, K, T', ...), context_targets (B, K, T', ...), [single
  (B, T', ...) for each single packed]).
  """
  bk = batch * num_pairs
  num_singles = (coded.shape[0] - 2 * bk) // batch
  parts = jnp.split(
    coded, [bk, 2 * bk] + [2 * bk + batch * (i + 1) for i in range(num_singles - 1)], axis=0
  )
  shape = (batch, num_pairs) + coded.shape[1:]
  return parts[0].reshape(shape), parts[1].reshape(shape), parts[2:]


def build_condition(context_inputs, context_targets, query, num_pairs, drop):
  """The in-context condition [in_1, tgt_1, ..., in_K, tgt_K, query] and its mask.

  Pairs at index >= num_pairs are padding: masked (invisible to J-DiT). An example with
  drop=True keeps only [one zero frame, its query] visible, which is
  `jdit.null_condition(query)` padded with masked frames: the null condition guidance
  uses at sampling, with static shapes.

  Args:
    context_inputs, context_targets: latents (B, K, T', h, w, C).
    query: latents (B, T', h, w, C).
    num_pairs: (B,) int, valid pairs per example.
    drop: (B,) bool, context dropout.

  Returns:
    cond (B, (2K + 1) T', h, w, C) and cond_mask (B, (2K + 1) T') bool.
  """
  b, k, t = context_inputs.shape[:3]
  pairs = jnp.stack([context_inputs, context_targets], axis=2)  # (B, K, 2, T', h, w, C)
  pairs = pairs.reshape(b, 2 * k * t, *pairs.shape[4:])
  pair_mask = jnp.repeat(jnp.arange(k)[None] < num_pairs[:, None], 2 * t, axis=1)
  first = (jnp.arange(2 * k * t) == 0)[None]  # (1, 2KT')
  pair_mask = jnp.where(drop[:, None], first, pair_mask)
  zero_first = (drop[:, None] & first)[..., None, None, None]
  pairs = jnp.where(zero_first, jnp.zeros((), pairs.dtype), pairs)
  cond = jnp.concatenate([pairs, query.astype(pairs.dtype)], axis=1)
  cond_mask = jnp.concatenate([pair_mask, jnp.ones((b, t), bool)], axis=1)
  return cond, cond_mask


def full_condition(context_inputs, context_targets, query) -> jax.Array:
  """The condition of K valid pairs, no dropout: (B, (2K + 1) T', h, w, C)."""
  b, k = context_inputs.shape[:2]
  cond, _ = build_condition(
    context_inputs, context_targets, query, jnp.full((b,), k), jnp.zeros((b,), bool)
  )
  return cond
