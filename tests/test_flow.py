"""Rectified-flow training side: time sampling, interpolation, target and loss.

The `loss_*` arrays in fixtures/jdit/dit_io.npz come from the released PyTorch
training loss with every random draw recorded.
Layout (B, C, T, H, W); all the functions here are elementwise or per example.
"""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lavin_jax import flow
from lavin_jax.configs import flow as flow_configs
from lavin_jax.configs import sampling as sampling_configs

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "jdit" / "dit_io.npz"


@pytest.fixture(scope="module")
def ref():
  return dict(np.load(FIXTURE))


def test_released_defaults():
  c = flow_configs.training()
  assert (c.time_sampling, c.logit_mean, c.logit_std, c.time_shift) == (
    "logit_normal",
    0.0,
    1.0,
    1.0,
  )
  assert (c.l1_weight, c.uncond_ratio) == (0.1, 0.1)
  s = sampling_configs.released()
  assert (s.num_steps, s.cfg_scale, s.sampler, s.posterior) == (20, 1.5, "euler", "sample")


def test_logit_normal_times():
  t = np.asarray(flow.sample_time(jax.random.key(0), (20000,), flow_configs.training()))
  assert t.dtype == np.float32 and np.all((t > 0) & (t < 1))
  logit = np.log(t) - np.log1p(-t)
  # N(0, 1) in logit space: mean and std within ~4 standard errors.
  assert abs(logit.mean()) < 4 / np.sqrt(t.size)
  assert abs(logit.std() - 1) < 4 / np.sqrt(2 * t.size)


def test_time_shift():
  key = jax.random.key(1)
  base = np.asarray(flow.sample_time(key, (5000,), flow_configs.training()), np.float64)
  config = flow_configs.training()
  config.time_shift = 3.0
  shifted = np.asarray(flow.sample_time(key, (5000,), config))
  np.testing.assert_allclose(shifted, base / (base + 3.0 * (1 - base)), rtol=1e-5)
  # The shift moves the median 1/2 to 1 / (1 + s): mass towards noise.
  assert abs(np.median(shifted) - 0.25) < 0.02


def test_uniform_times():
  config = flow_configs.training()
  config.time_sampling = "uniform"
  t = np.asarray(flow.sample_time(jax.random.key(2), (20000,), config))
  assert np.all((t >= 0) & (t < 1))
  assert abs(t.mean() - 0.5) < 4 * np.sqrt(1 / 12 / t.size)
  hist, _ = np.histogram(t, bins=10, range=(0, 1))
  assert np.all(np.abs(hist - 2000) < 4 * np.sqrt(2000))


@pytest.mark.parametrize(
  "field,value", [("time_sampling", "cosine"), ("time_shift", 0.0), ("logit_std", -1.0)]
)
def test_bad_time_config(field, value):
  config = flow_configs.training()
  config[field] = value
  with pytest.raises(ValueError, match=field):
    flow.sample_time(jax.random.key(0), (4,), config)


def test_interpolation_and_target_match_released(ref):
  xt = flow.interpolate(ref["loss_x1"], ref["loss_x0"], ref["loss_t"])
  np.testing.assert_allclose(xt, ref["loss_xt"], rtol=0, atol=1e-6)
  ut = flow.velocity_target(ref["loss_x1"], ref["loss_x0"])
  np.testing.assert_allclose(ut, ref["loss_ut"], rtol=0, atol=1e-6)


def test_interpolation_endpoints():
  x, e = np.full((2, 3), 5.0, np.float32), np.full((2, 3), -1.0, np.float32)
  np.testing.assert_array_equal(
    flow.interpolate(x, e, jnp.array([0.0, 1.0])), [[-1.0] * 3, [5.0] * 3]
  )


def test_loss_matches_released(ref):
  loss = flow.flow_loss(ref["loss_model_out"], ref["loss_ut"], l1_weight=0.1)
  np.testing.assert_allclose(loss, ref["loss_value"], rtol=1e-6)


def _numpy_loss(v, u, w, mask):
  per_example = []
  for vi, ui, mi in zip(v, u, np.broadcast_to(mask, v.shape)):
    err = (vi - ui)[mi > 0]
    per_example.append(np.mean(err**2) + w * np.mean(np.abs(err)))
  return np.mean(per_example)


def test_loss_against_numpy_with_mask():
  rng = np.random.default_rng(0)
  v, u = rng.normal(size=(2, 2, 6, 4, 4, 16)).astype(np.float32)
  # Frame mask (B, T, 1, 1, 1): example 0 has 4 valid frames, example 1 all 6.
  mask = np.ones((2, 6, 1, 1, 1), bool)
  mask[0, 4:] = False
  got = flow.flow_loss(v, u, 0.1, mask=mask)
  np.testing.assert_allclose(got, _numpy_loss(v, u, 0.1, mask), rtol=1e-6)
  # Padding takes no part: the same as example 0 cut to its valid frames.
  alone = flow.flow_loss(v[:1, :4], u[:1, :4], 0.1)
  np.testing.assert_allclose(flow.flow_loss(v[:1], u[:1], 0.1, mask[:1]), alone, rtol=1e-6)
  np.testing.assert_allclose(
    flow.flow_loss(v, u, 0.1, np.ones(v.shape)), flow.flow_loss(v, u, 0.1), rtol=1e-6
  )


def test_zero_l1_weight_is_mse():
  rng = np.random.default_rng(1)
  v, u = rng.normal(size=(2, 3, 5)).astype(np.float32)
  np.testing.assert_allclose(flow.flow_loss(v, u, 0.0), np.mean((v - u) ** 2), rtol=1e-6)


def test_loss_bad_inputs():
  v = np.zeros((2, 3, 4), np.float32)
  with pytest.raises(ValueError, match="same shape"):
    flow.flow_loss(v, v[:, :2])
  with pytest.raises(ValueError, match="mask"):
    flow.flow_loss(v, v, mask=np.ones((2, 5)))
