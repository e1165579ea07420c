"""A tiny J-DiT + ST-VAE with random weights, for end-to-end tests of inference users."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lavin_jax import configs
from lavin_jax.models import jdit
from lavin_jax.models import stvae


def tiny_model_config() -> ml_collections.ConfigDict:
  """Pipeline config {'jdit', 'stvae'} of the tiny sizes, float32 compute."""
  jdit_config = configs.jdit("tiny")
  jdit_config.dtype = "float32"
  return ml_collections.ConfigDict({"jdit": jdit_config, "stvae": configs.stvae("tiny")})


def tiny_model_params(config: ml_collections.ConfigDict, seed: int = 0):
  """(J-DiT params, ST-VAE params) drawn from N(0, 0.1^2); shapes by eval_shape, no compile."""
  rng = np.random.default_rng(seed)

  def random_params(module, *inputs):
    shapes = nn.unbox(jax.eval_shape(module.init, jax.random.key(0), *inputs)["params"])
    return jax.tree.map(lambda s: rng.normal(0, 0.1, s.shape).astype(s.dtype), shapes)

  latent = jnp.zeros((1, 1, 2, 2, 16))
  return (
    random_params(jdit.JDiT(config.jdit), latent, jnp.zeros(1), latent),
    random_params(stvae.STVAE(config.stvae), jnp.zeros((1, 1, 16, 16, 3))),
  )
