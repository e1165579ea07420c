r"""ST-VAE training (lavin_jax.train.vae.train) on a source (lavin_jax.data.sources).

  python launch/train_vae.py --config=configs/train_vae.py:demo --workdir=/tmp/lavin_vae
  python launch/train_vae.py --config=configs/train_vae.py:small \
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

from lavin_jax import configs

SETTINGS = ("demo", "tiny", "small", "released")


def get_config(arg: str = "demo") -> ml_collections.ConfigDict:
  """Training config for one of SETTINGS."""
  arg = arg or "demo"
  if arg not in SETTINGS:
    raise ValueError(f"Unknown ST-VAE training setting {arg!r}; choose one of {SETTINGS}.")
  size = {"demo": "small", "small": "small", "tiny": "tiny", "released": "released"}[arg]
  c = configs.vae_training(size)
  c.source = "synthetic:small,content=images"  # a lavin_jax.data.sources spec
  if arg == "demo":
    c.batch_size = 8
    c.total_steps = 300
    c.optimizer.lr = 1e-3
    c.checkpoint_every = 100
  elif arg == "tiny":
    c.source = "synthetic:tiny,content=images"
    c.resolution = 32
    c.batch_size = 2
    c.total_steps = 4
    c.checkpoint_every = 2
  elif arg == "released":
    c.resolution = 256
    c.model.remat = True
    c.total_steps = 100_000
    c.lpips_weight = 1.0
    c.adv_weight = 0.5
    c.disc_start = 50_000
  return c
