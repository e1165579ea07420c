r"""ST-VAE training (lavin_jax.train.vae.train): stills, then stills and clips.

  python launch/train_vae.py --config=lavin_jax/configs/train_vae.py:demo --workdir=/tmp/vae
  python launch/train_vae.py --config=lavin_jax/configs/train_vae.py:small \
      --config.source=folder:/path/to/images --config.resolution=128 --workdir=/tmp/vae

The paper trains in two stages, images first, then images and videos together; the
second stage starts from the first one's checkpoint:

  python launch/train_vae.py --config=lavin_jax/configs/train_vae.py:small \
      --workdir=/tmp/vae_images
  python launch/train_vae.py --config=lavin_jax/configs/train_vae.py:small \
      --config.stage=images+clips --config.init_from=/tmp/vae_images \
      --workdir=/tmp/vae_clips

Arguments:
  demo      the `small` ST-VAE on the built-in rendered stills at 64 px, MSE + KL,
            300 steps of 8: blurry but recognisable reconstructions in minutes on a
            CPU (the loss per step is in <workdir>/metrics.jsonl) (default)
  tiny      a smoke run: the tiny ST-VAE at 32 px for a few steps
  small     the `small` ST-VAE, longer, at 64 px
  released  the released architecture at 256 px with the paper's four terms (LPIPS
            needs --config.lpips_vgg / --config.lpips_lin weight files; a GPU job);
            stage images+clips needs --config.clip_source with clips of >= 17
            frames at >= 256 px
Any field can be overridden: --config.total_steps=2000 --config.kl_weight=1e-5.
A workdir with checkpoints resumes; the trained weights (the EMA when ema_decay > 0)
are written as an inference bundle to <workdir>/bundle.
"""

import ml_collections

from lavin_jax.configs import common
from lavin_jax.configs import models
from lavin_jax.configs import optimizer

SETTINGS = ("demo", "tiny", "small", "released")
STAGES = ("images", "images+clips")
_SIZES = {"demo": "small", "small": "small", "tiny": "tiny", "released": "released"}


def get_config(arg: str = "demo") -> ml_collections.ConfigDict:
  """ST-VAE training for one of SETTINGS: MSE + KL by default, L1, LPIPS and GAN optional."""
  setting, _ = common.parse_arg(arg, SETTINGS, "demo")
  c = ml_collections.ConfigDict()
  c.model = models.stvae(_SIZES[setting])
  c.seed = 0
  c.resolution = 64  # square crops, a multiple of the ST-VAE's spatial factor

  # Stage and data (lavin_jax.data.specs specs). Stage 'images' trains on 1-frame
  # stills of `source`; 'images+clips' also on clips of `clip_frames` frames of
  # `clip_source`: each batch is all stills or all clips, clips with probability
  # `clip_fraction`, drawn per step from the seed.
  c.stage = "images"  # one of STAGES
  c.source = "synthetic:small,content=images"
  c.batch_size = 16  # stills per global batch
  c.clip_source = "synthetic:small,content=clips"
  c.clip_frames = 9  # 1 + 4k (the paper: 17)
  c.clip_batch_size = 4  # clips per global batch
  c.clip_fraction = 0.5
  c.data_threads = 4  # Grain threads preparing batches
  c.prefetch_batches = 4
  # Start from weights (a fresh workdir only; a workdir with checkpoints resumes): a
  # released .pt / .safetensors file, an inference bundle, or an earlier stage's
  # workdir or checkpoint directory (its latest step).
  c.init_from = ""

  c.total_steps = 10_000
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  # Optimizer of the ST-VAE and of its discriminator.
  c.optimizer = optimizer.adamw(lr=1e-4, weight_decay=0.0)
  c.optimizer.decay_steps = c.get_ref("total_steps")
  c.ema_decay = 0.0  # EMA of the ST-VAE params; 0 (or None) = off

  # Loss: reconstruction (L1 and / or MSE, LPIPS), KL, adversarial.
  c.mse_weight = 1.0
  c.l1_weight = 0.0
  c.kl_weight = 1e-6
  c.lpips_weight = 0.0  # > 0 needs lpips_vgg and lpips_lin (lavin_jax.eval.lpips)
  c.lpips_vgg = ""
  c.lpips_lin = ""
  # Hinge GAN with a 3D PatchGAN from step disc_start, its weight adaptive as in VQGAN:
  # adv_weight * clip(|grad_last rec| / (|grad_last gan| + adaptive_eps), 0,
  # adaptive_max), the gradients taken at the decoder's output conv.
  c.adv_weight = 0.0  # > 0 adds the adversarial term
  c.disc_start = 5_000
  c.disc_channels = 64
  c.disc_layers = 3
  c.disc_temporal = True  # 3-frame kernels: clips are judged as clips
  c.adaptive_eps = 1e-4
  c.adaptive_max = 1e4

  # Reconstruction report at the end of the run: PSNR, SSIM (and LPIPS when the weight
  # files are given) on `report_examples` held-out examples of each source.
  c.report_sources = ml_collections.ConfigDict(
    {"photos": "photos", "clips": "synthetic:small,content=clips,split=validation"}
  )
  c.report_examples = 8

  c.checkpoint_every = 1000
  c.keep_checkpoints = 2
  c.restore_fallback = False  # True: a damaged latest checkpoint resumes from an earlier one
  # Metrics fetched and checked every log_every steps; larger values let the host run
  # ahead of the device. They go to metrics.jsonl and TensorBoard event files in the
  # workdir.
  c.log_every = 1
  # A jax.profiler trace of steps start to stop - 1 into <workdir>/profile, e.g. (10, 15);
  # () is off.
  c.profile_steps = ()

  if setting == "demo":
    c.batch_size = 8
    c.total_steps = 300
    c.optimizer.lr = 1e-3
    c.checkpoint_every = 100
  elif setting == "tiny":
    c.source = "synthetic:tiny,content=images"
    c.clip_source = "synthetic:tiny,content=clips"
    c.clip_frames = 5
    c.clip_batch_size = 2
    c.report_sources.clips = "synthetic:tiny,content=clips,split=validation"
    c.report_examples = 2
    c.resolution = 32
    c.batch_size = 2
    c.total_steps = 4
    c.checkpoint_every = 2
  elif setting == "released":
    c.source = "synthetic:medium,content=images"
    c.clip_source = ""
    c.clip_frames = 17
    c.clip_batch_size = 2
    c.report_sources = ml_collections.ConfigDict({"photos": "photos"})
    c.resolution = 256
    c.model.remat = True
    c.total_steps = 100_000
    c.lpips_weight = 1.0
    c.adv_weight = 0.5
    c.disc_start = 50_000
    c.ema_decay = 0.999
  return c
