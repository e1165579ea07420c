"""J-DiT: sizes, logical axes, RoPE split, scan/unscan, padding frames, guidance, bad input."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lavin_jax import configs
from lavin_jax.models import jdit
from lavin_jax.models import layers

LOGICAL_AXES = {"embed", "heads", "kv", "mlp", "patch", "freq", "layers", "norm", None}


def _config(**overrides):
  c = configs.jdit("tiny")
  c.dtype = "float32"
  c.update(overrides)
  return c


def _latents(key, t, h=4, w=4, b=2):
  return jax.random.normal(key, (b, t, h, w, 16))


def _random_params(config, seed=0):
  """Random weights like the released fixtures: N(0, 0.05^2), norm scales 1 + N(0, 0.05^2).

  Drawn with numpy from the eval_shape of init: no compile, and zero-init layers matter.
  """
  x = jax.ShapeDtypeStruct((1, 1, 2, 2, 16), jnp.float32)
  t = jax.ShapeDtypeStruct((1,), jnp.float32)
  shapes = nn.unbox(jax.eval_shape(jdit.JDiT(config).init, jax.random.key(0), x, t, x))
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map_with_path(
    lambda path, a: (path[-1].key == "scale") + rng.normal(0, 0.05, a.shape).astype(a.dtype),
    shapes["params"],
  )


@pytest.fixture(scope="module")
def tiny():
  config = _config()
  return jdit.JDiT(config), _random_params(config)


def _inputs(seed=0, tc=3, tx=1):
  kx, kc, kt = jax.random.split(jax.random.key(seed), 3)
  return _latents(kx, tx), jax.random.uniform(kt, (2,)), _latents(kc, tc)


@pytest.mark.parametrize(
  "size,count", [("0.1b", 100_709_952), ("1b", 935_095_360), ("3.4b", 3_398_976_064)]
)
def test_parameter_counts(size, count):
  x = jax.ShapeDtypeStruct((1, 1, 2, 2, 16), jnp.float32)
  t = jax.ShapeDtypeStruct((1,), jnp.float32)
  shapes = jax.eval_shape(jdit.JDiT(configs.jdit(size)).init, jax.random.key(0), x, t, x)
  assert sum(a.size for a in jax.tree.leaves(nn.unbox(shapes["params"]))) == count


@pytest.mark.parametrize("scan", [True, False])
def test_every_parameter_has_logical_axes(scan):
  x = jax.ShapeDtypeStruct((1, 1, 2, 2, 16), jnp.float32)
  t = jax.ShapeDtypeStruct((1,), jnp.float32)
  shapes = jax.eval_shape(jdit.JDiT(_config(scan_layers=scan)).init, jax.random.key(0), x, t, x)
  boxed = jax.tree_util.tree_flatten_with_path(
    shapes["params"], is_leaf=lambda a: isinstance(a, nn.LogicallyPartitioned)
  )[0]
  for path, leaf in boxed:
    assert isinstance(leaf, nn.LogicallyPartitioned), path
    assert len(leaf.names) == leaf.value.ndim and set(leaf.names) <= LOGICAL_AXES, path
    assert (leaf.names[0] == "layers") == (scan and path[0].key == "blocks"), path


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-6), ("bfloat16", 2e-2)])
def test_dense_matches_flax_dense(dtype, tol):
  """layers.dense (one 2D matmul, own VJP) gives nn.Dense's outputs and gradients."""
  config = _config(dtype=dtype)
  ours = layers.dense(config, 24, ("embed", "mlp"), use_bias=True)
  plain = nn.Dense(24, dtype=jnp.dtype(dtype))
  x = jax.random.normal(jax.random.key(0), (2, 5, 16))
  params = nn.unbox(ours.init(jax.random.key(1), x))
  params["params"]["bias"] = jax.random.normal(jax.random.key(2), (24,))
  w = jax.random.normal(jax.random.key(3), (2, 5, 24))

  def loss(module, p, x):
    return jnp.sum(module.apply(p, x).astype(jnp.float32) * w)

  (l_ours, g_ours), (l_plain, g_plain) = (
    jax.jit(jax.value_and_grad(lambda p, x, m=m: loss(m, p, x), argnums=(0, 1)))(params, x)
    for m in (ours, plain)
  )
  assert ours.apply(params, x).dtype == jnp.dtype(dtype)
  np.testing.assert_allclose(l_ours, l_plain, rtol=tol)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=tol, atol=tol * 10), g_ours, g_plain
  )


def test_norm_and_channel_scales_match_plain_autodiff():
  """RMSNorm, modulate and scale_channels (own VJPs): values and gradients of the formulas."""
  rng = np.random.default_rng(0)
  x, g = (jnp.asarray(rng.standard_normal((2, 7, 12)), jnp.float32) for _ in range(2))
  per_example = jnp.asarray(rng.standard_normal((2, 12)), jnp.float32)
  shared = jnp.asarray(1 + 0.1 * rng.standard_normal(12), jnp.float32)
  norm = layers.RMSNorm(eps=1e-6, use_scale=True)

  def ours(x, s, w):
    y = norm.apply({"params": {"scale": w}}, x)
    return layers.scale_channels(layers.modulate(y, s), s)

  def plain(x, s, w):
    y = x / jnp.sqrt(jnp.mean(x * x, axis=-1, keepdims=True) + 1e-6) * w
    return y * (1 + s[:, None]) * s[:, None]

  out, vjp = jax.vjp(jax.jit(ours), x, per_example, shared)
  out_plain, vjp_plain = jax.vjp(plain, x, per_example, shared)
  np.testing.assert_allclose(out, out_plain, rtol=1e-5, atol=1e-6)
  for a, b in zip(vjp(g), vjp_plain(g)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_rope_split_rule():
  assert layers.rope_split(72) == (24, 24, 24)  # released
  assert layers.rope_split(24) == (8, 8, 8)
  assert layers.rope_split(64) == (24, 20, 20)  # 0.1B and 1.0B
  for head_dim in range(2, 258, 2):
    parts = layers.rope_split(head_dim)
    assert sum(parts) == head_dim and all(p % 2 == 0 for p in parts)
    assert parts[1] == parts[2] <= parts[0]
  with pytest.raises(ValueError, match="even head_dim"):
    layers.rope_split(63)


def _numpy_rope(x, pos, split, theta=10000.0):
  """Per axis: half-split rotation by angles pos * theta^(-2i/d), float64."""
  out, start = [], 0
  for axis, d in enumerate(split):
    part = x[..., start : start + d]
    angle = pos[axis] * theta ** (-np.arange(0, d, 2) / d)
    cos, sin = np.cos(angle), np.sin(angle)
    a, b = part[..., : d // 2], part[..., d // 2 :]
    out.append(np.concatenate([a * cos - b * sin, b * cos + a * sin], -1))
    start += d
  return np.concatenate(out, -1)


def test_rope_head_dim_64():
  positions = jnp.array([[[0, 0, 0], [3, 1, 2], [7, 5, 0], [10, 2, 3]]])  # (1, 4, 3)
  x = jax.random.normal(jax.random.key(0), (1, 4, 2, 64))
  out = layers.apply_rope(x, *layers.rope_tables(positions, 64, 10000.0))
  for i in range(4):
    np.testing.assert_allclose(
      out[0, i],
      _numpy_rope(np.asarray(x[0, i], np.float64), positions[0, i], (24, 20, 20)),
      atol=1e-5,
    )
  # Scores depend on position differences only: shift every axis, dot products stay.
  shifted = layers.apply_rope(x, *layers.rope_tables(positions + jnp.array([5, 3, 9]), 64, 10000.0))
  scores = lambda y: jnp.einsum("bqnd,bknd->bnqk", y, y[:, ::-1])
  np.testing.assert_allclose(scores(out), scores(shifted), atol=1e-4)


def test_head_dim_64_model_runs():
  # 0.1B/1.0B head layout (head_dim 64), shrunk: hidden 128, 2 heads.
  config = _config(hidden_size=128, num_heads=2, num_kv_heads=2)
  x, t, cond = _inputs()
  v = jax.jit(jdit.JDiT(config).apply)({"params": _random_params(config)}, x, t, cond)
  assert v.shape == x.shape and np.isfinite(v).all()


def test_scanned_and_unscanned_agree(tiny):
  """Same weights, both layouts (and remat on/off): same outputs and same gradients."""
  _, params = tiny
  module = jdit.JDiT(_config(remat_policy="save_attention"))
  flat_config, flat_params = jdit.unrolled(_config(remat_policy="none"), params)
  flat = jdit.JDiT(flat_config)
  assert not flat_config.scan_layers and jdit.JDiT(_config()).config.scan_layers
  assert set(flat_params) - set(params) == {"blocks_0", "blocks_1"}
  assert jdit.unrolled(flat_config, flat_params)[1] is flat_params  # already unrolled
  jax.tree.map(np.testing.assert_array_equal, jdit.scan_params(flat_params, 2), params)
  x, t, cond = _inputs()

  def loss(m, p):
    return jnp.sum(m.apply({"params": p}, x, t, cond) ** 2)

  l_scan, g_scan = jax.jit(jax.value_and_grad(lambda p: loss(module, p)))(params)
  l_flat, g_flat = jax.jit(jax.value_and_grad(lambda p: loss(flat, p)))(flat_params)
  np.testing.assert_allclose(l_scan, l_flat, rtol=1e-5)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
    jdit.unscan_params(g_scan),
    g_flat,
  )


@pytest.mark.parametrize("impl", ["xla", "blockwise", "chunked"])
def test_padding_frames_change_nothing(tiny, impl):
  """An example padded with masked frames gives the velocity of the example alone."""
  _, params = tiny
  module = jdit.JDiT(
    _config(attention_impl=impl, attention_block_size=16, attention_chunk_bytes=1024)
  )
  x, t, cond = _inputs(tc=3)
  noise = 10 * _latents(jax.random.key(9), 3)
  # Example 0: frames [c0, pad, c1, pad, c2, pad]; example 1: [c0, c1, c2, pad, pad, pad].
  padded = jnp.stack(
    [
      jnp.stack([cond[0, 0], noise[0, 0], cond[0, 1], noise[0, 1], cond[0, 2], noise[0, 2]]),
      jnp.concatenate([cond[1], noise[1]]),
    ]
  )
  mask = jnp.array([[True, False, True, False, True, False], [True] * 3 + [False] * 3])
  apply = jax.jit(module.apply)
  alone = apply({"params": params}, x, t, cond)
  np.testing.assert_allclose(apply({"params": params}, x, t, padded, mask), alone, atol=1e-5)
  if impl == "xla":  # without the mask the padding is really seen
    assert np.abs(apply({"params": params}, x, t, padded) - alone).max() > 1e-2


def test_auto_attention_equals_xla(tiny):
  """The default attention ('auto': chunked on CPU) gives XLA's loss and gradients."""
  _, params = tiny
  x, t, cond = _inputs(tc=3)
  mask = jnp.array([[True, False, True], [True, True, True]])

  def loss(impl):
    module = jdit.JDiT(_config(attention_impl=impl, attention_chunk_bytes=1024))
    f = lambda p: jnp.sum(module.apply({"params": p}, x, t, cond, mask) ** 2)
    return jax.jit(jax.value_and_grad(f))(params)

  (l_auto, g_auto), (l_xla, g_xla) = loss("auto"), loss("xla")
  np.testing.assert_allclose(l_auto, l_xla, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), g_auto, g_xla)


def test_guidance(tiny):
  module, params = tiny
  x, t, cond = _inputs(tc=3)
  cond_null = jdit.null_condition(cond[:, -1:])
  assert cond_null.shape == (2, 2, 4, 4, 16)
  np.testing.assert_array_equal(cond_null[:, 0], 0)
  np.testing.assert_array_equal(cond_null[:, 1], cond[:, -1])
  v = lambda c: jax.jit(module.apply)({"params": params}, x, t, c)
  guided = jax.jit(module.apply, static_argnames="method")(
    {"params": params}, x, t, cond, cond_null, 1.5, method="forward_with_cfg"
  )
  v_cond, v_null = v(cond), v(cond_null)
  np.testing.assert_allclose(guided, v_null + 1.5 * (v_cond - v_null), atol=1e-5)


def test_drop_path(tiny):
  _, params = tiny
  module = jdit.JDiT(_config(drop_path=0.5))
  x, t, cond = _inputs()
  apply = jax.jit(module.apply, static_argnames="deterministic")
  train = [
    apply({"params": params}, x, t, cond, deterministic=False, rngs={"dropout": jax.random.key(i)})
    for i in range(2)
  ]
  det = apply({"params": params}, x, t, cond)
  np.testing.assert_allclose(
    det, jax.jit(jdit.JDiT(_config()).apply)({"params": params}, x, t, cond), atol=1e-5
  )
  assert np.abs(train[0] - train[1]).max() > 1e-3 and np.abs(train[0] - det).max() > 1e-3
  # The layer-level rule: examples dropped with probability rate, the rest rescaled.
  h = jnp.ones((4000, 1, 1))
  dropped = layers.drop_path(h, 0.25, jax.random.key(0))
  np.testing.assert_allclose(np.unique(dropped), [0.0, 1 / 0.75])
  assert abs(float((dropped == 0).mean()) - 0.25) < 0.03
  np.testing.assert_array_equal(layers.drop_path(h, 0.0, jax.random.key(0)), h)


def test_bfloat16_compute_outputs_float32(tiny):
  _, params = tiny
  x, t, cond = _inputs()
  ref = jax.jit(jdit.JDiT(_config()).apply)({"params": params}, x, t, cond)
  low = jax.jit(jdit.JDiT(_config(dtype="bfloat16")).apply)({"params": params}, x, t, cond)
  assert low.dtype == jnp.float32
  assert np.abs(low - ref).max() < 0.05 * np.abs(ref).max()


@pytest.mark.parametrize(
  "change,match",
  [
    (dict(x=(2, 1, 5, 4, 16)), "multiples of the patch size"),
    (dict(cond=(2, 3, 4, 3, 16)), "multiples of the patch size"),
    (dict(cond=(2, 3, 6, 4, 16)), "same batch size and latent height and width"),
    (dict(x=(2, 1, 4, 4, 8)), r"latents \(B, T, h, w, 16\)"),
    (dict(cond=(2, 3, 4, 16)), r"latents \(B, T, h, w, 16\)"),
    (dict(t=(2, 1)), r"t must have shape \(B,\) = \(2,\); got \(2, 1\)"),
    (dict(mask=(2, 4)), r"cond_mask must be \(B, Tc\) = \(2, 3\)"),
  ],
)
def test_bad_inputs_raise_before_compile(tiny, change, match):
  module, params = tiny
  shapes = dict(x=(2, 1, 4, 4, 16), t=(2,), cond=(2, 3, 4, 4, 16), mask=(2, 3))
  shapes.update(change)
  x, t, cond = (jnp.zeros(shapes[k]) for k in ("x", "t", "cond"))
  mask = jnp.ones(shapes["mask"], bool)
  with pytest.raises(ValueError, match=match):
    jax.jit(module.apply).lower({"params": params}, x, t, cond, mask)


@pytest.mark.parametrize("size", configs.JDIT_SIZES)
def test_default_remat_policy_is_known(size):
  assert configs.jdit(size).remat_policy in jdit.REMAT_POLICIES


def test_unknown_remat_policy(tiny):
  _, params = tiny
  with pytest.raises(ValueError, match="remat_policy"):
    jax.eval_shape(jdit.JDiT(_config(remat_policy="some")).apply, {"params": params}, *_inputs())
