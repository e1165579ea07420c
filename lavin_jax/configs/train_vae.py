r"""ST-VAE training (lavin_jax.train.vae.train) on a source (lavin_jax.data.sources).

  python launch/train_vae.py --config=lavin_jax/configs/train_vae.py:demo --workdir=/tmp/vae
  python launch/train_vae.py --config=lavin_jax/configs/train_vae.py:small \
      --config.source=folder:/path/to/images --config.resolution=128 --workdir=/tmp/vae

Arguments:
  demo      the `small` ST-VAE on the built-in rendered stills at 64 px, MSE + KL,
            300 steps of 8: blurry but recognisable reconstructions in minutes on a
            CPU (the loss per step is in <workdir>/metrics.jsonl) (default)
  tiny      a smoke run: the tiny ST-VAE at 32 px for a few steps
  small     the `small` ST-VAE, longer, at 64 px
  released  the released architecture at 256 px with the paper's four terms (LPIPS
            needs --config.lpips_vgg / --config.lpips_lin weight files; a GPU job)
Any field can be overridden: --config.total_steps=2000 --config.kl_weight=1e-5.
A workdir with checkpoints resumes; the trained weights are written as an inference
bundle to <workdir>/bundle.
"""

import ml_collections

from lavin_jax.configs import common
from lavin_jax.configs import models
from lavin_jax.configs import optimizer

SETTINGS = ("demo", "tiny", "small", "released")
_SIZES = {"demo": "small", "small": "small", "tiny": "tiny", "released": "released"}


def get_config(arg: str = "demo") -> ml_collections.ConfigDict:
  """ST-VAE training for one of SETTINGS: MSE + KL by default, LPIPS and GAN optional."""
  setting, _ = common.parse_arg(arg, SETTINGS, "demo")
  c = ml_collections.ConfigDict()
  c.model = models.stvae(_SIZES[setting])
  c.source = "synthetic:small,content=images"  # a lavin_jax.data.sources spec
  c.seed = 0
  c.resolution = 64  # square crops, a multiple of the ST-VAE's spatial factor
  c.batch_size = 16
  c.total_steps = 10_000
  # Optimizer of the ST-VAE and of its discriminator.
  c.optimizer = optimizer.adamw(lr=1e-4, weight_decay=0.0)
  c.optimizer.decay_steps = c.get_ref("total_steps")
  c.kl_weight = 1e-6
  c.lpips_weight = 0.0  # > 0 needs lpips_vgg and lpips_lin (lavin_jax.eval.lpips)
  c.lpips_vgg = ""
  c.lpips_lin = ""
  c.adv_weight = 0.0  # > 0 adds a PatchGAN hinge term from step disc_start
  c.disc_start = 5_000
  c.disc_channels = 64
  c.checkpoint_every = 1000
  # Metrics fetched and checked every log_every steps; larger values let the host run
  # ahead of the device.
  c.log_every = 1

  if setting == "demo":
    c.batch_size = 8
    c.total_steps = 300
    c.optimizer.lr = 1e-3
    c.checkpoint_every = 100
  elif setting == "tiny":
    c.source = "synthetic:tiny,content=images"
    c.resolution = 32
    c.batch_size = 2
    c.total_steps = 4
    c.checkpoint_every = 2
  elif setting == "released":
    c.resolution = 256
    c.model.remat = True
    c.total_steps = 100_000
    c.lpips_weight = 1.0
    c.adv_weight = 0.5
    c.disc_start = 50_000
  return c
