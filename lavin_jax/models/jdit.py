"""J-DiT: the joint diffusion transformer of LaVin-DiT (SPEC.md, section J-DiT).

Two token streams, the condition (in-context pairs and the query) and the target, share
one joint attention per block but keep separate weights everywhere else. Latents are
channels-last (B, T, h, w, C); tokens are 2x2 patches ordered frame, row, column, with
patch features ordered (ph, pw, C) as released. Parameter names follow the released
checkpoint (lavin_jax/convert/jdit.py maps them).

Padding frames: `cond_mask` (B, Tc) marks condition frames that exist. Masked frames are
invisible to attention and RoPE frame indices count only valid frames, so an example
padded with masked frames gives the same velocity as the example alone.

`config.independent_condition` (default False: the released model) makes the condition
independent of the target and the time: condition tokens are modulated by the learned
`prompt_embed` alone (no time embedding), and attention is block-causal over the groups
[context pairs | query | target]: each group attends to itself and the groups before
it. The condition's keys and values are then the same at every sampling step, and the
context's the same for every query: `ConditionCache` keeps them. A call computes a
chunk of the sequence after a cached prefix: `cond` alone (x_t None) is one group, so
the context pairs and the query are computed as two chunks; `x_t` alone (cond None)
attends to the prefix. The released model may also run on a cached prefix (an
approximation: its condition changes with x_t and t).
"""

from typing import NamedTuple, Optional

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lavin_jax.models import attention
from lavin_jax.models import layers

STREAMS = ("cond", "x")
_ACTIVATION_AXES = ("batch", "length", "embed")

REMAT_POLICIES = {
  "none": None,  # no rematerialisation
  "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
  "everything_saveable": jax.checkpoint_policies.everything_saveable,
  "dots_saveable": jax.checkpoint_policies.dots_saveable,
  "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
  # Keep what attention.dot_product_attention names 'attention' (its output; the
  # chunked path's log-sum-exp too): the backward pass then recomputes projections and
  # MLPs but not the quadratic attention forward.
  "save_attention": jax.checkpoint_policies.save_only_these_names("attention"),
}


class ConditionCache(NamedTuple):
  """Keys and values of condition tokens in every layer, computed once, read by later chunks.

  kv: (k, v), each (depth, B, S, num_kv_heads, head_dim) with RoPE applied.
  key_mask: (B, S) bool, False for padding tokens; None when all are valid.
  frames: (B,) int32, the valid condition frames (the next frame's RoPE index).
  """

  kv: tuple
  key_mask: Optional[jax.Array]
  frames: jax.Array


def independent_condition(config: ml_collections.ConfigDict) -> bool:
  """Whether the condition ignores the target and the time (False for older configs)."""
  return config.get("independent_condition", False)


def null_condition(query_latents: jax.Array) -> jax.Array:
  """Guidance's unconditional condition: [one all-zero frame; the query's frames]."""
  zero = jnp.zeros_like(query_latents[:, :1])
  return jnp.concatenate([zero, query_latents], axis=1)


class PatchEmbedder(nn.Module):
  """Patch vectors (B, L, p*p*C) -> Linear -> LayerNorm (affine) -> (B, L, D) float32."""

  config: ml_collections.ConfigDict

  @nn.compact
  def __call__(self, tokens):
    c = self.config
    h = layers.dense(c, c.hidden_size, ("patch", "embed"), use_bias=True, name="proj")(tokens)
    norm_init = lambda init: nn.with_logical_partitioning(init, ("norm",))
    return nn.LayerNorm(
      epsilon=c.embed_norm_eps,
      dtype=jnp.float32,
      param_dtype=jnp.dtype(c.param_dtype),
      scale_init=norm_init(nn.initializers.ones),
      bias_init=norm_init(nn.initializers.zeros),
      name="norm",
    )(h)


class JointAttention(nn.Module):
  """Per-stream q/k/v with QK-norm, 3D RoPE, one attention over [cond; x], per-stream out.

  Either stream may be None (not computed). `prefix` (k, v) of cached condition tokens is
  put before the keys; key_mask covers [prefix; cond; x]. With independent_condition the
  queries attend block-causally: `cond_groups` are the ends of the groups within cond.
  Returns (cond out, x out, the (k, v) of the cond tokens).
  """

  config: ml_collections.ConfigDict
  cond_groups: tuple[int, ...] = ()

  @nn.compact
  def __call__(self, hc, hx, rope, key_mask, prefix=None):
    c = self.config
    head_dim = c.hidden_size // c.num_heads
    streams = [(stream, h) for stream, h in zip(STREAMS, (hc, hx)) if h is not None]
    qs, ks, vs = [], [], []
    for stream, h in streams:
      q = layers.dense(c, c.num_heads * head_dim, ("embed", "heads"), name=f"{stream}_q")(h)
      k = layers.dense(c, c.num_kv_heads * head_dim, ("embed", "kv"), name=f"{stream}_k")(h)
      v = layers.dense(c, c.num_kv_heads * head_dim, ("embed", "kv"), name=f"{stream}_v")(h)
      # QK-norm over the whole projected vector, before splitting into heads.
      q = layers.rms_norm(c, use_scale=True, name=f"{stream}_qnorm")(q)
      k = layers.rms_norm(c, use_scale=True, name=f"{stream}_knorm")(k)
      qs.append(q.reshape(*q.shape[:2], c.num_heads, head_dim))
      ks.append(k.reshape(*k.shape[:2], c.num_kv_heads, head_dim))
      vs.append(v.reshape(*v.shape[:2], c.num_kv_heads, head_dim))
    dtype = jnp.dtype(c.dtype)
    q = layers.apply_rope(jnp.concatenate(qs, axis=1), *rope).astype(dtype)
    k = layers.apply_rope(jnp.concatenate(ks, axis=1), *rope).astype(dtype)
    v = jnp.concatenate(vs, axis=1).astype(dtype)
    num_cond = 0 if hc is None else hc.shape[1]
    cond_kv = (k[:, :num_cond], v[:, :num_cond])
    offset = 0
    if prefix is not None:
      offset = prefix[0].shape[1]
      k, v = (jnp.concatenate([p, x], axis=1) for p, x in zip(prefix, (k, v)))
    ends = [q.shape[1]]
    if independent_condition(c):
      ends = sorted({e for e in (*self.cond_groups, num_cond, q.shape[1]) if e > 0})
    outs, start = [], 0
    for end in ends:  # each group of queries sees the keys up to its own end
      mask = None if key_mask is None else key_mask[:, : offset + end]
      outs.append(
        attention.dot_product_attention(
          q[:, start:end],
          k[:, : offset + end],
          v[:, : offset + end],
          mask,
          implementation=c.attention_impl,
          block_size=c.attention_block_size,
          chunk_bytes=c.attention_chunk_bytes,
        )
      )
      start = end
    out = jnp.concatenate(outs, axis=1)
    out = out.reshape(*out.shape[:2], -1)
    outs = dict(zip(STREAMS, (out[:, :num_cond], out[:, num_cond:])))
    return tuple(
      None
      if h is None
      else layers.dense(c, c.hidden_size, ("heads", "embed"), name=f"{stream}_proj")(outs[stream])
      for stream, h in zip(STREAMS, (hc, hx))
    ) + (cond_kv,)


class JointBlock(nn.Module):
  """One J-DiT layer on both streams: modulated joint attention, then per-stream SwiGLU.

  A stream given as None is skipped; `prefix` is this layer's cached (k, v). Returns the
  streams and, with emit_kv, the (k, v) of the cond tokens (the scan's per-layer output).
  """

  config: ml_collections.ConfigDict
  cond_groups: tuple[int, ...] = ()
  emit_kv: bool = False

  @nn.compact
  def __call__(self, streams, layer, t_cond, t_x, rope, key_mask, deterministic, prefix=None):
    c = self.config
    # Drop path rises linearly from 0 at the first layer to config.drop_path at the last.
    rate = c.drop_path * layer / max(c.depth - 1, 1)
    modulations = []
    for stream, temb, s in zip(STREAMS, (t_cond, t_x), streams):
      if s is None:
        modulations.append(None)
        continue
      mod = layers.dense(
        c,
        4 * c.hidden_size,
        ("embed", "mlp"),
        use_bias=True,
        kernel_init=nn.initializers.zeros,
        name=f"{stream}_modulation",
      )(nn.silu(temb))
      scale_attn, gate_attn, scale_mlp, gate_mlp = jnp.split(mod.astype(jnp.float32), 4, -1)
      modulations.append((scale_attn, jnp.tanh(gate_attn), scale_mlp, jnp.tanh(gate_mlp)))

    norm = layers.rms_norm(c)  # shared by both streams, no weight
    attn_in = [
      None if s is None else layers.modulate(norm(s), m[0]) for s, m in zip(streams, modulations)
    ]
    *attn_out, cond_kv = JointAttention(c, self.cond_groups, name="joint_attn")(
      *attn_in, rope, key_mask, prefix
    )
    streams = [
      None if s is None else self._residual(s, m[1], o, rate, deterministic)
      for s, m, o in zip(streams, modulations, attn_out)
    ]

    out = []
    for stream, s, m in zip(STREAMS, streams, modulations):
      if s is None:
        out.append(None)
        continue
      h = layers.SwiGLU(c, name=f"{stream}_mlp")(layers.modulate(norm(s), m[2]))
      s = self._residual(s, m[3], h, rate, deterministic)
      out.append(nn.with_logical_constraint(s, _ACTIVATION_AXES))
    return tuple(out), (cond_kv if self.emit_kv else None)

  def _residual(self, s, gate, h, rate, deterministic):
    """s + drop_path(gate * post_norm(h)); the post norm only with sandwich_norm."""
    if self.config.sandwich_norm:
      h = layers.rms_norm(self.config)(h)
    h = layers.scale_channels(h.astype(jnp.float32), gate)
    if not deterministic and self.config.drop_path > 0:
      h = layers.drop_path(h, rate, self.make_rng("dropout"))
    return s + h


class FinalLayer(nn.Module):
  """Target stream only: RMSNorm, (1 + Linear(SiLU(t_x))) scale, Linear(D -> p*p*C)."""

  config: ml_collections.ConfigDict

  @nn.compact
  def __call__(self, x, t_x):
    c = self.config
    zeros = nn.initializers.zeros
    scale = layers.dense(
      c, c.hidden_size, ("embed", "mlp"), use_bias=True, kernel_init=zeros, name="modulation"
    )(nn.silu(t_x))
    h = layers.modulate(layers.rms_norm(c)(x), scale.astype(jnp.float32))
    patch_dim = c.patch_size**2 * c.in_channels
    return layers.dense(
      c, patch_dim, ("embed", "patch"), use_bias=True, kernel_init=zeros, name="linear"
    )(h)


class JDiT(nn.Module):
  """The J-DiT velocity model. See the module docstring for shapes and padding."""

  config: ml_collections.ConfigDict

  @nn.compact
  def __call__(
    self, x_t, t, cond, cond_mask=None, *, deterministic=True, prefix=None, emit_kv=False
  ):
    """Velocity (B, Tx, h, w, C) float32 of x_t (B, Tx, h, w, C) at t (B,) given cond.

    Args:
      x_t: noisy target latents (B, Tx, h, w, C); None computes only `cond`'s keys and
        values (independent_condition).
      t: (B,) flow time in [0, 1] (0 noise, 1 data); None with x_t.
      cond: condition latents (B, Tc, h, w, C): context pairs then the query; None runs
        the target on `prefix` alone.
      cond_mask: optional (B, Tc) bool, False for padding frames.
      deterministic: False turns drop path on (draws from the 'dropout' rng).
      prefix: a ConditionCache of condition tokens before `cond`.
      emit_kv: also return the ConditionCache of prefix + cond (always, without x_t).

    Returns:
      The velocity; with emit_kv (velocity, cache); without x_t the cache.
    """
    c = self.config
    if x_t is None and not independent_condition(c):
      raise ValueError("J-DiT computes the condition alone only with independent_condition.")
    if x_t is not None and cond is not None:
      check_inputs(c, x_t, jnp.asarray(t), cond, cond_mask)
    some = cond if x_t is None else x_t
    b, height, width = some.shape[0], some.shape[2], some.shape[3]
    tx = 0 if x_t is None else x_t.shape[1]
    tc = 0 if cond is None else cond.shape[1]
    gh, gw = height // c.patch_size, width // c.patch_size

    param_dtype = jnp.dtype(c.param_dtype)
    embed_init = nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "embed"))
    prompt = self.param("prompt_embed", embed_init, (1, c.hidden_size), param_dtype)
    t_cond, t_x, cond_tokens, x_tokens = None, None, None, None
    if x_t is not None:
      temb = layers.TimestepEmbedder(c, name="t_embedder")(jnp.asarray(t))
      t_x = temb + self.param("answer_embed", embed_init, (1, c.hidden_size), param_dtype)
      x_tokens = PatchEmbedder(c, name="x_embedder")(self._patchify(x_t))
    if cond is not None:
      cond_tokens = PatchEmbedder(c, name="cond_embedder")(self._patchify(cond))
      t_cond = (
        jnp.broadcast_to(prompt, (b, c.hidden_size)) if independent_condition(c) else temb + prompt
      )

    if cond_mask is not None:
      cond_mask = jnp.asarray(cond_mask).astype(bool)
    valid = jnp.ones((b, tc), bool) if cond_mask is None else cond_mask
    # Frame indices over the joint sequence, counting valid condition frames only.
    start = jnp.zeros((b,), jnp.int32) if prefix is None else prefix.frames
    cond_frames = start[:, None] + jnp.cumsum(valid, axis=1) - 1
    frames = start + valid.sum(axis=1)
    x_frames = frames[:, None] + jnp.arange(tx)[None]
    positions = layers.token_positions(jnp.concatenate([cond_frames, x_frames], axis=1), gh, gw)
    rope = layers.rope_tables(positions, c.hidden_size // c.num_heads, c.rope_theta)
    key_mask = None
    prefix_mask = None if prefix is None else prefix.key_mask
    if cond_mask is not None or prefix_mask is not None:
      if prefix is not None and prefix_mask is None:
        prefix_mask = jnp.ones((b, prefix.kv[0].shape[2]), bool)
      key_mask = jnp.concatenate(
        ([] if prefix_mask is None else [prefix_mask])
        + [jnp.repeat(valid, gh * gw, axis=1), jnp.ones((b, tx * gh * gw), bool)],
        axis=1,
      )

    # The released layout [pairs, query] with a target: pairs and query are two groups.
    groups = ((tc - tx) * gh * gw,) if cond is not None and x_t is not None else ()
    streams = tuple(
      None if s is None else nn.with_logical_constraint(s, _ACTIVATION_AXES)
      for s in (cond_tokens, x_tokens)
    )
    (_, x_tokens), kv = self._blocks(
      streams,
      t_cond,
      t_x,
      rope,
      key_mask,
      deterministic,
      None if prefix is None else prefix.kv,
      groups,
      emit_kv or x_t is None,
    )
    cache = None
    if emit_kv or x_t is None:
      if prefix is not None:
        kv = tuple(jnp.concatenate([p, k], axis=2) for p, k in zip(prefix.kv, kv))
      cache_mask = None if key_mask is None else key_mask[:, : kv[0].shape[2]]
      cache = ConditionCache(kv, cache_mask, frames.astype(jnp.int32))
    if x_t is None:
      return cache
    out = FinalLayer(c, name="final_layer")(x_tokens, t_x)
    v = einops.rearrange(
      out.astype(jnp.float32),
      "b (t h w) (ph pw c) -> b t (h ph) (w pw) c",
      t=tx,
      h=gh,
      w=gw,
      ph=c.patch_size,
      pw=c.patch_size,
    )
    return (v, cache) if emit_kv else v

  def forward_with_cfg(self, x_t, t, cond, cond_null, cfg_scale, cond_mask=None, *, x_null=None):
    """Guided velocity v_null + cfg_scale * (v_cond - v_null), (B, Tx, h, w, C) float32.

    cond_null is usually `null_condition(query_latents)`; cond_mask applies to cond only.
    The unconditional branch sees x_null (default x_t): the released function takes the
    two branches' states as the two halves of its batch, equal during sampling.
    """
    v_cond = self(x_t, t, cond, cond_mask)
    v_null = self(x_t if x_null is None else x_null, t, cond_null)
    return v_null + cfg_scale * (v_cond - v_null)

  def _patchify(self, latents):
    p = self.config.patch_size
    return einops.rearrange(latents, "b t (h ph) (w pw) c -> b (t h w) (ph pw c)", ph=p, pw=p)

  def _blocks(
    self, streams, t_cond, t_x, rope, key_mask, deterministic, prefix_kv, groups, emit_kv
  ):
    """The `depth` joint blocks: scanned ('blocks', leading layer axis) or 'blocks_<i>'.

    Returns the streams and, with emit_kv, the cond tokens' (k, v) (depth, B, S, K, hd).
    """
    c = self.config
    if c.remat_policy not in REMAT_POLICIES:
      raise ValueError(
        f"Unknown remat_policy {c.remat_policy!r}; choose one of {sorted(REMAT_POLICIES)}."
      )
    block = JointBlock
    if c.remat_policy != "none":
      # Argument 7 (deterministic) is a Python bool: static.
      block = nn.remat(
        block,
        policy=REMAT_POLICIES[c.remat_policy],
        prevent_cse=not c.scan_layers,
        static_argnums=(7,),
      )
    if c.scan_layers:
      block = nn.scan(
        block,
        variable_axes={"params": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=(0,) + (nn.broadcast,) * 5 + (0,),
        length=c.depth,
        metadata_params={nn.PARTITION_NAME: "layers"},
      )
      return block(c, groups, emit_kv, name="blocks")(
        streams, jnp.arange(c.depth), t_cond, t_x, rope, key_mask, deterministic, prefix_kv
      )
    kvs = []
    for i in range(c.depth):
      prefix = None if prefix_kv is None else tuple(p[i] for p in prefix_kv)
      streams, kv = block(c, groups, emit_kv, name=f"blocks_{i}")(
        streams, i, t_cond, t_x, rope, key_mask, deterministic, prefix
      )
      kvs.append(kv)
    return streams, (jax.tree.map(lambda *x: jnp.stack(x), *kvs) if emit_kv else None)


def check_inputs(config, x_t, t, cond, cond_mask=None):
  """Raises ValueError naming the shapes when J-DiT inputs do not fit together."""
  ch, p = config.in_channels, config.patch_size
  for name, a in (("x_t", x_t), ("cond", cond)):
    if a.ndim != 5 or a.shape[-1] != ch:
      raise ValueError(f"J-DiT {name} must be latents (B, T, h, w, {ch}); got shape {a.shape}.")
    if a.shape[2] % p or a.shape[3] % p:
      raise ValueError(
        f"J-DiT {name} latent height and width must be multiples of the patch size {p}; "
        f"got shape {a.shape} (crop or pad the images to a multiple of {8 * p} px)."
      )
  if cond.shape[0] != x_t.shape[0] or cond.shape[2:4] != x_t.shape[2:4]:
    raise ValueError(
      f"J-DiT cond {cond.shape} and x_t {x_t.shape} need the same batch size and "
      f"latent height and width."
    )
  if t.shape != (x_t.shape[0],):
    raise ValueError(f"J-DiT t must have shape (B,) = ({x_t.shape[0]},); got {t.shape}.")
  if cond_mask is not None and cond_mask.shape != cond.shape[:2]:
    raise ValueError(
      f"J-DiT cond_mask must be (B, Tc) = {cond.shape[:2]} for cond {cond.shape}; "
      f"got {cond_mask.shape}."
    )


def scan_params(params, depth: int):
  """Unscanned params ('blocks_<i>') -> scanned ('blocks' with a leading layer axis)."""
  params = dict(params)
  blocks = [params.pop(f"blocks_{i}") for i in range(depth)]
  params["blocks"] = jax.tree.map(lambda *xs: np.stack(xs), *blocks)
  return params


def unscan_params(params):
  """Scanned params ('blocks') -> unscanned ('blocks_<i>')."""
  params = dict(params)
  blocks = params.pop("blocks")
  depth = jax.tree.leaves(blocks)[0].shape[0]
  for i in range(depth):
    params[f"blocks_{i}"] = jax.tree.map(lambda x, i=i: x[i], blocks)
  return params


def unrolled(config: ml_collections.ConfigDict, params=None):
  """(config, params) with the layers unrolled (scan_layers False, 'blocks_<i>').

  What sampling runs: every Euler step of a scanned stack slices (copies) each layer's
  weights out of the stack, which costs as much as the step itself when few tokens pass.
  """
  config = config.copy_and_resolve_references()
  config.scan_layers = False
  if params is not None and "blocks" in params:
    params = unscan_params(params)
  return config, params
