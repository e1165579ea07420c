"""ST-VAE training: the loss against numpy, learning on a fixed batch, the config file."""

import functools
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lavin_jax import configs
from lavin_jax.convert import load_released_stvae
from lavin_jax.models import discriminator
from lavin_jax.models import stvae
from lavin_jax.train import state as state_lib
from lavin_jax.train import vae
from lavin_jax.configs import train_vae as train_vae_configs

ROOT = pathlib.Path(__file__).parent.parent


@pytest.fixture(scope="module")
def start():
  """Random ST-VAE weights of the tiny size (the released-layout fixture: no init compile)."""
  return load_released_stvae(ROOT / "tests" / "fixtures" / "stvae" / "vae_state.pt",
                             configs.stvae("tiny"))[1]


def _config(**fields):
  c = train_vae_configs.get_config("tiny")
  c.resolution = 16
  c.batch_size = 2
  c.optimizer.lr = 2e-3
  c.kl_weight = 1e-3
  c.update(fields)
  return c


def _smooth_batch(batch=2, size=16):
  """Images of a few soft blobs in [-1, 1]: easy to reconstruct, not constant."""
  yy, xx = np.mgrid[:size, :size] / size
  rng = np.random.default_rng(0)
  images = []
  for _ in range(batch):
    centres, colours = rng.uniform(0.2, 0.8, (3, 2)), rng.uniform(-1, 1, (3, 3))
    blobs = [np.exp(-((yy - cy)**2 + (xx - cx)**2) / 0.02)[..., None] * col
             for (cy, cx), col in zip(centres, colours)]
    images.append(np.clip(sum(blobs), -1, 1))
  return jnp.asarray(np.stack(images)[:, None], jnp.float32)  # (B, 1, H, W, 3)


def test_loss_matches_numpy(start):
  config = _config(adv_weight=0.5, disc_start=3)
  model = stvae.STVAE(config.model)
  disc = discriminator.PatchDiscriminator(channels=8, num_layers=2)
  video = _smooth_batch()
  disc_params = nn.unbox(jax.jit(disc.init)(jax.random.key(0), video)["params"])
  key = jax.random.key(1)
  loss_fn = functools.partial(vae.vae_loss, model=model, disc=disc, lpips=None, config=config)
  recon, mean, logvar = jax.jit(model.apply)({"params": start}, video, key)
  logits = np.asarray(jax.jit(disc.apply)({"params": disc_params}, recon), np.float64)
  recon, mean, logvar, x = (np.asarray(a, np.float64) for a in (recon, mean, logvar, video))
  mse = np.mean((recon - x)**2)
  kl = np.mean(0.5 * np.sum(mean**2 + np.exp(logvar) - 1 - logvar, axis=(1, 2, 3, 4)))
  for step, adv in ((2, 0.0), (3, 0.5)):  # the adversarial term starts at disc_start
    loss, (metrics, _) = jax.jit(loss_fn)(start, disc_params, video, key, step)
    want = mse + config.kl_weight * kl - adv * logits.mean()
    np.testing.assert_allclose(metrics["mse"], mse, rtol=1e-5)
    np.testing.assert_allclose(metrics["kl"], kl, rtol=1e-4)
    np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-6)


def test_hinge_discriminator_loss_matches_numpy():
  rng = np.random.default_rng(2)
  real, fake = rng.normal(size=(2, 1, 3, 3, 1)), rng.normal(size=(2, 1, 3, 3, 1))
  want = np.mean(np.maximum(0, 1 - real)) + np.mean(np.maximum(0, 1 + fake))
  np.testing.assert_allclose(vae.hinge_discriminator_loss(real, fake), want, rtol=1e-6)


def test_tiny_vae_learns_a_fixed_batch(start):
  config = _config()
  model = stvae.STVAE(config.model)
  tx, _ = state_lib.create_optimizer(config.optimizer)
  video = _smooth_batch()
  state = vae.VAEState(step=jnp.zeros((), jnp.int32), params=start, opt_state=tx.init(start),
                       disc_params={}, disc_opt_state={}, rng=jax.random.key(2))
  step = jax.jit(functools.partial(vae.train_step, model=model, disc=None, lpips=None, tx=tx,
                                   disc_tx=tx, config=config))
  mses = []
  for _ in range(40):
    state, metrics = step(state, video)
    mses.append(float(metrics["mse"]))
  assert int(state.step) == 40
  assert np.mean(mses[-5:]) < 0.5 * np.mean(mses[:5])


def test_optimizer_updates_exactly_as_the_former_clip_adamw_chain():
  config = train_vae_configs.get_config("tiny").optimizer
  config.lr, config.weight_decay = 1e-3, 0.01  # the demo's lr; a visible decay
  former = optax.chain(optax.clip_by_global_norm(config.clip_norm),
                       optax.adamw(config.lr, b1=config.b1, b2=config.b2,
                                   weight_decay=config.weight_decay))
  tx, _ = state_lib.create_optimizer(config)
  rng = np.random.default_rng(3)
  shapes = {"conv": {"kernel": (3, 3, 3, 8, 8), "bias": (8,)}, "norm": {"scale": (8,)}}
  tree = lambda scale: jax.tree.map(lambda s: scale * rng.standard_normal(s, np.float32),
                                    shapes, is_leaf=lambda x: isinstance(x, tuple))
  start = tree(0.1)
  grads = [tree(1.0), tree(1e-3)]  # global norms above and below clip_norm
  assert optax.tree.norm(grads[0]) > config.clip_norm > optax.tree.norm(grads[1])

  def updates(opt):
    step = jax.jit(lambda p, g, s: opt.update(g, s, p))
    params, opt_state = start, opt.init(start)
    for g in grads:
      u, opt_state = step(params, g, opt_state)
      params = optax.apply_updates(params, u)
    return jax.device_get(params)

  jax.tree.map(np.testing.assert_array_equal, updates(tx), updates(former))


@pytest.mark.parametrize("arg", ["demo", "tiny", "small", "released", ""])
def test_config_file_settings(arg):
  config = train_vae_configs.get_config(arg)
  if config.lpips_weight > 0:  # the weight files are the user's to give
    config.lpips_vgg, config.lpips_lin = "vgg16.pth", "lin.pth"
  vae.check_config(config)
  assert config.resolution % stvae.spatial_factor(config.model) == 0
  assert config.source.startswith("synthetic")


def test_config_file_rejects_unknown_setting():
  with pytest.raises(ValueError, match="Unknown config argument 'huge'"):
    train_vae_configs.get_config("huge")
