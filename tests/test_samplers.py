"""Samplers: the released time grids, Euler and Heun on closed forms, guidance."""

import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lavin_jax import convert
from lavin_jax import flow

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "jdit"

# The released grids as SPEC.md prints them.
RELEASED_GRIDS = {
  20: "0.0000, 0.0056, 0.0111, 0.0167, 0.0222, 0.0278, 0.0333, 0.0389, 0.0444, 0.0500, "
  "0.0524, 0.0730, 0.1148, 0.1777, 0.2618, 0.3671, 0.4936, 0.6412, 0.8100, 1.0000",
  30: "0.0000, 0.0036, 0.0071, 0.0107, 0.0143, 0.0179, 0.0214, 0.0250, 0.0286, 0.0321, "
  "0.0357, 0.0393, 0.0429, 0.0464, 0.0500, 0.0511, 0.0600, 0.0779, 0.1049, 0.1410, "
  "0.1862, 0.2403, 0.3036, 0.3759, 0.4573, 0.5477, 0.6472, 0.7557, 0.8733, 1.0000",
  40: "0.0000, 0.0026, 0.0053, 0.0079, 0.0105, 0.0132, 0.0158, 0.0184, 0.0211, 0.0237, "
  "0.0263, 0.0289, 0.0316, 0.0342, 0.0368, 0.0395, 0.0421, 0.0447, 0.0474, 0.0500, "
  "0.0506, 0.0555, 0.0655, 0.0804, 0.1004, 0.1253, 0.1553, 0.1902, 0.2302, 0.2752, "
  "0.3251, 0.3801, 0.4401, 0.5051, 0.5750, 0.6500, 0.7300, 0.8150, 0.9050, 1.0000",
}


@pytest.mark.parametrize("n", sorted(RELEASED_GRIDS))
def test_released_grids(n):
  expected = np.array([float(s) for s in RELEASED_GRIDS[n].split(",")], np.float32)
  got = flow.time_grid(n)
  assert got.dtype == np.float32
  np.testing.assert_array_equal(got, expected)


def test_grid_20_is_the_released_tensor():
  released = np.load(FIXTURES / "dit_io.npz")["sample_t_grid"]
  np.testing.assert_array_equal(flow.time_grid(20), released)


@pytest.mark.parametrize("n", [2, 3, 7, 21, 64, 101])
def test_grid_rule_for_other_sizes(n):
  t = flow.time_grid(n, decimals=None).astype(np.float64)
  assert len(t) == n and t[0] == 0 and t[-1] == 1 and np.all(np.diff(t) > 0)
  half = n // 2
  if half > 1:  # first half: evenly spaced from 0 to 0.05
    np.testing.assert_allclose(t[:half], np.arange(half) * 0.05 / (half - 1), atol=1e-7)
  # second half: 0.05 + 0.95 x^2 with x evenly spaced from 1/n to 1
  # (a single such point is x = 1).
  x = np.sqrt((t[half:] - 0.05) / 0.95)
  np.testing.assert_allclose(x[0], 1 / n if len(x) > 1 else 1, atol=1e-6)
  if len(x) > 1:
    np.testing.assert_allclose(np.diff(x), (1 - 1 / n) / (len(x) - 1), atol=1e-5)
  rounded = flow.time_grid(n)
  np.testing.assert_array_equal(rounded, np.round(t, 4).astype(np.float32))


def test_grid_bad_inputs():
  for bad in (1, 0, 2.5, "20"):
    with pytest.raises(ValueError, match="num_points"):
      flow.time_grid(bad)
  with pytest.raises(ValueError, match="decimals=None"):
    flow.time_grid(2000)
  assert len(flow.time_grid(2000, decimals=None)) == 2000


def _noise(shape=(3, 2, 4, 4, 16), seed=0):
  return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_constant_field_is_exact(solver):
  x0 = _noise()
  c = jnp.linspace(-1, 1, 16)
  x1 = flow.sample(lambda x, t: jnp.broadcast_to(c, x.shape), x0, flow.time_grid(20), solver)
  np.testing.assert_allclose(x1, x0 + c, atol=1e-5)


def test_euler_is_left_riemann_sum_of_time():
  # v(x, t) = t: Euler adds sum_i t_i dt_i, and it sees t as a (B,) batch.
  grid = flow.time_grid(30)
  x0 = _noise((2, 3))

  def velocity(x, t):
    assert t.shape == (x.shape[0],)
    return jnp.broadcast_to(t[:, None], x.shape)

  expected = np.asarray(x0, np.float64) + np.sum(grid[:-1] * np.diff(grid))
  np.testing.assert_allclose(flow.euler_sample(velocity, x0, grid), expected, atol=1e-6)


def test_heun_is_exact_for_velocity_linear_in_time():
  # dx/dt = a + b t integrates to x0 + a + b / 2 over [0, 1], for any grid.
  x0 = _noise((2, 5))
  a, b = 0.7, -2.3
  for grid in (flow.time_grid(5), flow.time_grid(40)):
    x1 = flow.heun_sample(lambda x, t: a + b * jnp.broadcast_to(t[:, None], x.shape), x0, grid)
    np.testing.assert_allclose(x1, x0 + a + b / 2, atol=1e-5)


def test_linear_field_matches_closed_form_steps():
  # dx/dt = lam x: Euler multiplies by (1 + lam dt) per step, Heun by
  # (1 + lam dt + (lam dt)^2 / 2); the exact solution is x0 exp(lam).
  lam, grid, x0 = -1.5, flow.time_grid(20), _noise((2, 8))
  dt = np.diff(grid.astype(np.float64))
  x0_64 = np.asarray(x0, np.float64)
  euler = flow.euler_sample(lambda x, t: lam * x, x0, grid)
  heun = flow.heun_sample(lambda x, t: lam * x, x0, grid)
  np.testing.assert_allclose(euler, x0_64 * np.prod(1 + lam * dt), rtol=1e-5)
  np.testing.assert_allclose(heun, x0_64 * np.prod(1 + lam * dt + (lam * dt) ** 2 / 2), rtol=1e-5)
  exact = x0_64 * np.exp(lam)
  assert np.abs(heun - exact).max() < np.abs(euler - exact).max() / 5


def test_trajectory_and_single_trace():
  grid, x0 = flow.time_grid(20), _noise((2, 3))
  calls = []

  def velocity(x, t):
    calls.append(1)
    return -x

  sampler = jax.jit(lambda x: flow.heun_sample(velocity, x, grid, return_trajectory=True))
  final, states = sampler(x0)
  # The loop is a scan: the body is traced once (2 velocity calls per Heun step).
  assert len(calls) == 2
  assert states.shape == (20,) + x0.shape
  np.testing.assert_array_equal(states[0], x0)
  np.testing.assert_array_equal(states[-1], final)
  # Deterministic, and the same as outside jit.
  np.testing.assert_array_equal(sampler(x0)[0], final)
  np.testing.assert_allclose(flow.heun_sample(velocity, x0, grid), final, atol=1e-6)


def test_sampler_bad_inputs():
  x0 = _noise((2, 3))
  with pytest.raises(ValueError, match="solver"):
    flow.sample(lambda x, t: x, x0, flow.time_grid(5), "rk4")
  with pytest.raises(ValueError, match="grid"):
    flow.euler_sample(lambda x, t: x, x0, np.zeros((1,)))
  with pytest.raises(ValueError, match="solver"):
    flow.make_guided_sampler(None, solver="dopri5")


class _ToyGuidedModel(nn.Module):
  """v(x, t | cond) = w x + t + mean(cond); guidance as the released formula."""

  @nn.compact
  def __call__(self, x_t, t, cond, cond_mask=None):
    w = self.param("w", nn.initializers.constant(-0.5), ())
    return w * x_t + t[:, None, None, None, None] + jnp.mean(cond, axis=(1, 2, 3, 4), keepdims=True)

  def forward_with_cfg(self, x_t, t, cond, cond_null, cfg_scale, cond_mask=None):
    v_cond = self(x_t, t, cond, cond_mask)
    v_null = self(x_t, t, cond_null)
    return v_null + cfg_scale * (v_cond - v_null)


def test_guided_sampler_matches_manual_guidance():
  model = _ToyGuidedModel()
  noise = _noise((2, 1, 2, 2, 16))
  cond = _noise((2, 3, 2, 2, 16), seed=1) + 2.0
  cond_null = _noise((2, 2, 2, 2, 16), seed=2)
  params = model.init(jax.random.key(0), noise, jnp.zeros(2), cond)["params"]
  grid, scale = flow.time_grid(20), 1.5
  got = flow.make_guided_sampler(model)(params, noise, cond, cond_null, grid, scale)

  m_c = np.mean(np.asarray(cond), axis=(1, 2, 3, 4), keepdims=True)
  m_u = np.mean(np.asarray(cond_null), axis=(1, 2, 3, 4), keepdims=True)
  x = np.asarray(noise, np.float64)
  for t0, t1 in zip(grid[:-1], grid[1:]):
    v = -0.5 * x + t0 + m_u + scale * (m_c - m_u)
    x = x + (t1 - t0) * v
  np.testing.assert_allclose(got, x, atol=1e-5)


def test_guided_euler_reproduces_released_trajectory():
  # The released 20-point Euler sampler with guidance (scale 1.5) on the released
  # model in its key layout (random weights): every state of the trajectory.
  ref = np.load(FIXTURES / "dit_io.npz")
  config = ml_collections.ConfigDict(dict(hidden_size=96, depth=2, num_heads=4, num_kv_heads=2))
  model, params = convert.load_released_jdit(FIXTURES / "dit_state.safetensors", config)
  channels_last = lambda a: jnp.asarray(np.moveaxis(a, 1, -1))  # (B, C, T, H, W) -> (B, T, H, W, C)
  # The released sampler runs the doubled batch [cond half, null half]; both halves
  # are the same sample.
  noise = channels_last(ref["sample_init"][:1])
  cond, cond_null = channels_last(ref["cfg_cond"]), channels_last(ref["cfg_cond_null"])
  sampler = flow.make_guided_sampler(model, return_trajectory=True)
  final, states = sampler(
    params, noise, cond, cond_null, flow.time_grid(20), float(ref["cfg_scale"])
  )
  expected = np.moveaxis(ref["sample_traj"][:, :1], 2, -1)  # (N, B, T, H, W, C)
  assert states.shape == expected.shape
  np.testing.assert_allclose(states, expected, rtol=0, atol=1e-5)
  np.testing.assert_allclose(final, np.moveaxis(ref["sample_final"][:1], 1, -1), atol=1e-5)
