"""ODE samplers of the rectified flow: the released time grids, Euler, Heun, guidance.

Time convention: see `lavin_jax.flow` (integrate dx/dt = v(x, t) from t = 0, noise,
to t = 1, data).
"""

from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

VelocityFn = Callable[[jax.Array, jax.Array], jax.Array]

# The released grids: the first half of the points runs linearly up to this time,
# the rest ramps quadratically to 1.
_LINEAR_END = 0.05


def time_grid(num_points: int, decimals: Optional[int] = 4) -> np.ndarray:
  """The released sampling grid of `num_points` times from 0 to 1 (float32).

  Rule, for N = num_points and h = N // 2:
    t_i = 0.05 * i / (h - 1)          for i < h (h points from 0 to 0.05),
    t_i = 0.05 + 0.95 * x_j ** 2      for the other N - h points, where x_j runs
                                      evenly from 1 / N to 1 (just 1 if N = 2),
  then rounded to `decimals` digits. The released sampler hard-codes its grids for
  N = 20, 30 and 40, printed to 4 digits; this rule with decimals=4 reproduces all
  three exactly (and N = 20 bit for bit as float32). Any N >= 2 works; decimals=None
  keeps the unrounded values (needed once N is so large that 4 digits no longer
  separate the points).

  Args:
    num_points: number of grid points N (N - 1 solver steps).
    decimals: digits to round to, or None.

  Returns:
    (N,) float32 numpy array, t[0] = 0, t[-1] = 1, strictly increasing.
  """
  if not isinstance(num_points, (int, np.integer)) or num_points < 2:
    raise ValueError(f"num_points must be an integer >= 2, got {num_points!r}.")
  num_linear = num_points // 2
  linear = np.linspace(0.0, _LINEAR_END, num_linear)
  # Evenly from 1/N to 1; built from the top so that a single point is exactly 1.
  x = np.linspace(1.0, 1.0 / num_points, num_points - num_linear)[::-1]
  grid = np.concatenate([linear, _LINEAR_END + (1.0 - _LINEAR_END) * x**2])
  if decimals is not None:
    grid = np.round(grid, decimals)
  grid = grid.astype(np.float32)
  if not np.all(np.diff(grid) > 0):
    raise ValueError(
      f"time_grid({num_points}, decimals={decimals}) has repeated points; "
      "pass decimals=None (or more decimals) for this many points."
    )
  return grid


def _check_grid(grid) -> jax.Array:
  if jnp.ndim(grid) != 1 or jnp.shape(grid)[0] < 2:
    raise ValueError(f"grid must be a 1-D array of >= 2 times, got shape {jnp.shape(grid)}.")
  return jnp.asarray(grid, jnp.float32)


def _batch_time(t: jax.Array, x: jax.Array) -> jax.Array:
  return jnp.full((x.shape[0],), t, jnp.float32)


def _integrate(step_fn, noise, grid, return_trajectory):
  """Runs x <- step_fn(x, t0, t1) over consecutive grid points in one lax.scan."""
  grid = _check_grid(grid)

  def body(x, times):
    x = step_fn(x, *times).astype(noise.dtype)
    return x, (x if return_trajectory else None)

  x, states = jax.lax.scan(body, noise, (grid[:-1], grid[1:]))
  if return_trajectory:
    return x, jnp.concatenate([noise[None], states], axis=0)
  return x


def euler_sample(velocity_fn: VelocityFn, noise: jax.Array, grid, return_trajectory: bool = False):
  """Euler integration of dx/dt = velocity_fn(x, t) along `grid` (released solver).

  The loop is a `lax.scan`; call this inside `jax.jit` (as `make_guided_sampler`
  does) and the whole sampler compiles to one program. Deterministic: randomness is
  only in `noise`.

  Args:
    velocity_fn: (x (B, ...), t (B,) float32) -> velocity like x.
    noise: x at grid[0] (B, ...), usually N(0, I) for grid[0] = 0.
    grid: (N,) increasing times, e.g. `time_grid(20)`.
    return_trajectory: also return every state.

  Returns:
    x at grid[-1]; with return_trajectory, (x, states (N, B, ...)) where
    states[0] = noise.
  """

  def step(x, t0, t1):
    return x + (t1 - t0) * velocity_fn(x, _batch_time(t0, x))

  return _integrate(step, noise, grid, return_trajectory)


def heun_sample(velocity_fn: VelocityFn, noise: jax.Array, grid, return_trajectory: bool = False):
  """Heun (explicit trapezoid) integration; two velocity calls per step.

  Same arguments and results as `euler_sample`.
  """

  def step(x, t0, t1):
    dt = t1 - t0
    v0 = velocity_fn(x, _batch_time(t0, x))
    v1 = velocity_fn(x + dt * v0, _batch_time(t1, x))
    return x + 0.5 * dt * (v0 + v1)

  return _integrate(step, noise, grid, return_trajectory)


_SOLVERS = {"euler": euler_sample, "heun": heun_sample}


def sample(
  velocity_fn: VelocityFn,
  noise: jax.Array,
  grid,
  solver: str = "euler",
  return_trajectory: bool = False,
):
  """Dispatches to the solver named `solver` ('euler' or 'heun')."""
  if solver not in _SOLVERS:
    raise ValueError(f"Unknown solver {solver!r}; choose one of {sorted(_SOLVERS)}.")
  return _SOLVERS[solver](velocity_fn, noise, grid, return_trajectory)


def make_guided_sampler(model: nn.Module, solver: str = "euler", return_trajectory: bool = False):
  """A jitted sampler with classifier-free guidance through `model.forward_with_cfg`.

  Returns `sample_fn(params, noise, cond, cond_null, grid, cfg_scale, cond_mask=None)`
  that integrates the guided velocity v_u + cfg_scale (v_c - v_u) from noise
  (B, Tx, h, w, 16) along grid, with the whole loop inside one jit. cond_null is the
  released null condition (`lavin_jax.models.jdit.null_condition`). Build it once and
  reuse it: it compiles once per input shape.
  """
  if solver not in _SOLVERS:
    raise ValueError(f"Unknown solver {solver!r}; choose one of {sorted(_SOLVERS)}.")

  @jax.jit
  def sample_fn(params, noise, cond, cond_null, grid, cfg_scale, cond_mask=None):

    def velocity_fn(x, t):
      return model.apply(
        {"params": params}, x, t, cond, cond_null, cfg_scale, cond_mask, method="forward_with_cfg"
      )

    return sample(velocity_fn, noise, grid, solver, return_trajectory)

  return sample_fn
