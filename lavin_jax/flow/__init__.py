"""Rectified flow: the time convention, training targets, loss and ODE samplers.

Time convention (the one statement every other module points to):
  t = 0 is pure noise and t = 1 is data. For data x and noise e ~ N(0, I),

    x_t = t * x + (1 - t) * e        (interpolate)
    u   = d x_t / d t = x - e        (velocity_target)

  The model predicts the velocity v(x_t, t) ~ u, and sampling integrates
  dx/dt = v(x, t) from t = 0 (noise) to t = 1 (data) over a fixed time grid
  (`time_grid`). This is the released LaVin-DiT transport; the paper writes the
  mirror image (t = 1 noise), which is the same process.
"""

from lavin_jax.flow.samplers import euler_sample
from lavin_jax.flow.samplers import heun_sample
from lavin_jax.flow.samplers import make_guided_sampler
from lavin_jax.flow.samplers import sample
from lavin_jax.flow.samplers import time_grid
from lavin_jax.flow.transport import flow_loss
from lavin_jax.flow.transport import interpolate
from lavin_jax.flow.transport import sample_time
from lavin_jax.flow.transport import velocity_target

__all__ = [
  "euler_sample",
  "flow_loss",
  "heun_sample",
  "make_guided_sampler",
  "interpolate",
  "sample",
  "sample_time",
  "time_grid",
  "velocity_target",
]
