"""PatchGAN discriminator: output shapes, per-frame or temporal judging, logical axes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lavin_jax.models.discriminator import PatchDiscriminator


@pytest.mark.parametrize("temporal", [False, True])
@pytest.mark.parametrize("frames, size, layers", [(1, 32, 3), (5, 32, 3), (1, 64, 2)])
def test_shapes(temporal, frames, size, layers):
  disc = PatchDiscriminator(channels=8, num_layers=layers, temporal=temporal)
  x = jax.ShapeDtypeStruct((2, frames, size, size + 16, 3), jnp.float32)
  params = jax.eval_shape(disc.init, jax.random.key(0), x)
  logits = jax.eval_shape(disc.apply, params, x)
  # 4x4 convs with padding 1: stride 2 halves, stride 1 takes one away.
  down = 2**layers
  assert logits.shape == (2, frames, size // down - 2, (size + 16) // down - 2, 1)
  assert logits.dtype == jnp.float32


@pytest.mark.parametrize("temporal", [False, True])
def test_frames_are_judged_alone_unless_temporal(temporal):
  disc = PatchDiscriminator(channels=8, num_layers=2, temporal=temporal)
  x = jax.random.uniform(jax.random.key(1), (1, 4, 32, 32, 3), minval=-1, maxval=1)
  params = jax.jit(disc.init)(jax.random.key(2), x)
  apply = jax.jit(disc.apply)
  before, after = apply(params, x), apply(params, x.at[:, 1].multiply(0.5))
  changed = np.abs(np.asarray(after - before)).max(axis=(0, 2, 3, 4)) > 1e-6  # per frame
  # Temporal: four 3-frame conv layers reach 4 frames either way.
  np.testing.assert_array_equal(changed, [temporal, True, temporal, temporal])


def test_params_carry_their_logical_axes():
  disc = PatchDiscriminator(channels=8, num_layers=2, temporal=True)
  x = jax.ShapeDtypeStruct((1, 1, 32, 32, 3), jnp.float32)
  specs = nn.get_partition_spec(jax.eval_shape(disc.init, jax.random.key(0), x)["params"])
  P = jax.sharding.PartitionSpec
  assert specs["conv_0"]["kernel"] == P(None, None, None, "disc_in", "disc_out")
  assert specs["logits"]["bias"] == P("disc_out")
  assert specs["norm_1"]["scale"] == P("norm")
