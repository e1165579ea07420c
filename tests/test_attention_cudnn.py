"""The cuDNN path checked without a GPU: key padding as sequence lengths equals the masked
computation (forward and gradients), and the exact 'cudnn' calls, J-DiT training step
included, pass JAX's own cuDNN argument checks and lower for CUDA with no bias."""

import jax
from jax._src.cudnn import fused_attention_stablehlo as cudnn_attention
import jax.numpy as jnp
import numpy as np
import pytest

from lavin_jax import configs
from lavin_jax.models import attention
from lavin_jax.models import jdit
from lavin_jax.train import dit

# (batch, queries, keys, heads, kv heads, key padding): several examples of different
# lengths, padding at the start, in the middle, at the end, scattered, or none.
CASES = [
  (3, 24, 24, 4, 2, "random"),
  (2, 17, 31, 6, 3, "random"),
  (3, 20, 20, 4, 1, "runs"),
  (2, 16, 16, 2, 2, None),
]


def _case(seed, b, t, s, heads, kv_heads, padding, hd=8):
  kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
  q = jax.random.normal(kq, (b, t, heads, hd))
  k = jax.random.normal(kk, (b, s, kv_heads, hd)) * 2
  v = jax.random.normal(kv, (b, s, kv_heads, hd))
  if padding is None:
    return q, k, v, None
  # Example i keeps s * (b + 1 - i) // (b + 2) keys: different lengths, at least one.
  mask = np.zeros((b, s), bool)
  rng = np.random.default_rng(seed)
  for i in range(b):
    valid = s * (b + 1 - i) // (b + 2)
    if padding == "random":
      mask[i, rng.permutation(s)[:valid]] = True
    else:  # one run of padding, further along the keys for each example
      start = i * (s - valid) // max(b - 1, 1)
      mask[i] = True
      mask[i, start : start + s - valid] = False
  return q, k, v, jnp.asarray(mask)


def test_valid_first_is_a_stable_gather():
  _, k, v, mask = _case(0, *CASES[0])
  k2, v2, lengths = attention.valid_first(k, v, mask)
  mask = np.asarray(mask)
  np.testing.assert_array_equal(lengths, mask.sum(-1))
  assert lengths.dtype == jnp.int32
  for i in range(mask.shape[0]):
    order = np.concatenate([np.flatnonzero(mask[i]), np.flatnonzero(~mask[i])])
    np.testing.assert_array_equal(k2[i], np.asarray(k)[i, order])
    np.testing.assert_array_equal(v2[i], np.asarray(v)[i, order])


def _value_and_grads(fn, q, k, v, weights):
  loss = lambda q, k, v: jnp.sum(fn(q, k, v) * weights)
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(q, k, v)


@pytest.mark.parametrize("case", CASES)
def test_sequence_lengths_equal_the_mask(case):
  """The reordered keys with key_value_seq_lengths (the cuDNN call's arguments, run on
  XLA) give the masked attention's output and dq, dk, dv."""
  q, k, v, mask = _case(1, *case)
  weights = jax.random.normal(jax.random.key(2), q.shape)
  lengths_fn = lambda q, k, v: attention.seq_lengths_attention(q, k, v, mask, "xla")
  masked_fn = lambda q, k, v: attention.dot_product_attention(q, k, v, mask, implementation="xla")
  out, grads = _value_and_grads(lengths_fn, q, k, v, weights)
  ref, ref_grads = _value_and_grads(masked_fn, q, k, v, weights)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
  for name, a, b in zip("qkv", grads, ref_grads):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=f"d{name}")
  if mask is not None:  # padded keys get no gradient
    pad = ~np.asarray(mask)[:, :, None, None]
    assert not np.any(np.where(pad, grads[1], 0)) and not np.any(np.where(pad, grads[2], 0))


@pytest.fixture
def fake_gpu(monkeypatch):
  """Lets the 'cudnn' path trace on CPU: the backend reads 'gpu' to lavin_jax and JAX
  reports a cuDNN version; everything else (argument checks, lowering) is JAX's own."""
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  monkeypatch.setattr(cudnn_attention, "check_cudnn_version", lambda: 90800)


def _cuda_text(fn, *args):
  """StableHLO of jit(fn)(*args) lowered for CUDA (no GPU needed)."""
  return jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",)).as_text()


def _custom_calls(text):
  """Targets of the custom calls in StableHLO text, sorted."""
  lines = [line for line in text.splitlines() if "custom_call @" in line]
  return sorted(line.split("custom_call @")[1].split("(")[0] for line in lines)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
@pytest.mark.parametrize("hd", [24, 64, 72])
def test_cudnn_call_lowers_with_sequence_lengths(fake_gpu, dtype, hd):
  # head_dim 24 (tiny), 64 (0.1B, 1B), 72 (3.4B); float32 inputs are cast to bf16.
  q, k, v, mask = _case(3, 2, 20, 20, 4, 2, "random", hd=hd)
  q, k, v = (x.astype(dtype) for x in (q, k, v))

  def loss(q, k, v):
    out = attention.dot_product_attention(q, k, v, mask, implementation="cudnn")
    assert out.dtype == dtype
    return out.astype(jnp.float32).sum()

  text = _cuda_text(jax.value_and_grad(loss, argnums=(0, 1, 2)), q, k, v)
  assert _custom_calls(text) == ["__cudnn$fmhaSoftmax", "__cudnn$fmhaSoftmaxBackward"]
  assert "PADDING" in text and "Bias" not in text and "bf16" in text


def test_mask_as_bias_fails_the_same_checks(fake_gpu):
  """The checks are live: a (B, 1, 1, S) mask, JAX's bias route, is refused by them."""
  q, k, v, mask = _case(4, 2, 16, 16, 2, 2, "random")
  q, k, v = (x.astype(jnp.bfloat16) for x in (q, k, v))
  with pytest.raises(ValueError, match="Bias must have same seq length"):
    jax.nn.dot_product_attention(q, k, v, mask=mask[:, None, None, :], implementation="cudnn")


def test_jdit_training_step_lowers_for_cudnn(fake_gpu):
  """A bf16 J-DiT loss-and-gradient step with padded pairs, 'cudnn' attention: each
  layer's attention is one cuDNN flash call forward and one backward, no bias."""
  config = configs.jdit("tiny")
  config.update(attention_impl="cudnn", scan_layers=False)
  model = jdit.JDiT(config)
  latent = jax.ShapeDtypeStruct((2, 1, 4, 4, 16), jnp.float32)
  cond = jax.ShapeDtypeStruct((2, 4, 4, 4, 16), jnp.float32)
  time = jax.ShapeDtypeStruct((2,), jnp.float32)
  params = jax.eval_shape(model.init, jax.random.key(0), latent, time, cond)["params"]
  mask = jnp.array([[True, False, True, False], [True, True, True, True]])

  def step(params, x, noise, t, cond):
    loss = lambda p: dit.velocity_loss(model, p, x, noise, t, cond, mask, 0.0)
    return jax.value_and_grad(loss)(params)

  calls = _custom_calls(_cuda_text(step, params, latent, latent, time, cond))
  assert calls == ["__cudnn$fmhaSoftmax"] * 2 + ["__cudnn$fmhaSoftmaxBackward"] * 2
