"""Model size tables: every architecture number of J-DiT and the ST-VAE lives here.

Job configs in the top-level `configs/` folder compose these (`configs/train_dit.py:0.1b`);
the converters default every field a caller leaves out to the released model's value.
"""

import ml_collections

# name: (hidden_size, depth, num_heads, num_kv_heads, drop_path, sandwich_norm)
_JDIT_SIZES = {
    "tiny": (96, 2, 4, 2, 0.0, True),
    "0.1b": (512, 12, 8, 8, 0.0, False),
    "1b": (1024, 28, 16, 16, 0.1, True),
    "3.4b": (2304, 22, 32, 8, 0.1, True),
}


def jdit(size: str = "3.4b") -> ml_collections.ConfigDict:
  """J-DiT architecture for a size in {tiny, 0.1b, 1b, 3.4b} (paper Table 3)."""
  if size not in _JDIT_SIZES:
    raise ValueError(f"Unknown J-DiT size {size!r}; choose one of {sorted(_JDIT_SIZES)}.")
  hidden, depth, heads, kv_heads, drop_path, sandwich = _JDIT_SIZES[size]
  c = ml_collections.ConfigDict()
  c.hidden_size = hidden
  c.depth = depth
  c.num_heads = heads
  c.num_kv_heads = kv_heads
  c.drop_path = drop_path
  c.sandwich_norm = sandwich
  c.in_channels = 16
  c.patch_size = 2
  c.mlp_ratio = 4.0  # SwiGLU inner = int(mlp_ratio * D * 2/3 / mlp_multiple_of) * multiple
  c.mlp_multiple_of = 64
  c.time_freq_dim = 256
  c.time_max_period = 10000.0
  c.rope_theta = 10000.0  # RoPE head_dim split rule: lavin_jax.models.layers.rope_split
  c.norm_eps = 1e-6
  c.embed_norm_eps = 1e-5
  c.dtype = "bfloat16"  # compute dtype
  c.param_dtype = "float32"
  c.scan_layers = True
  c.remat_policy = "nothing_saveable"  # see lavin_jax.models.jdit.REMAT_POLICIES
  c.attention_impl = "xla"  # xla | cudnn | blockwise
  c.attention_block_size = 512  # query/key block of the blockwise path
  return c


def stvae(size: str = "released") -> ml_collections.ConfigDict:
  """ST-VAE architecture: `released` (215.6M params) or `small` / `tiny` for tests."""
  sizes = {
      # block_out_channels, layers_per_block
      "released": ((128, 256, 256, 512), 3),
      "small": ((32, 64, 64, 64), 1),
      "tiny": ((32, 32, 32, 32), 1),
  }
  if size not in sizes:
    raise ValueError(f"Unknown ST-VAE size {size!r}; choose one of {sorted(sizes)}.")
  channels, layers = sizes[size]
  c = ml_collections.ConfigDict()
  c.block_out_channels = channels
  c.layers_per_block = layers
  c.latent_channels = 16
  c.in_channels = 3
  c.norm_num_groups = 32
  c.norm_eps = 1e-6
  c.temporal_compression = 4
  c.per_frame_norm = False  # True: GroupNorm per frame (strictly causal encoder)
  c.remat = False  # rematerialise each ResNet block
  c.logvar_min = -30.0
  c.logvar_max = 20.0
  c.latent_shift = 0.032470703125
  c.latent_scale = 1.08936170213
  c.tile_sample_size = 512  # pixels
  c.tile_overlap = 0.25
  c.tile_frames = 129
  c.dtype = "float32"
  c.param_dtype = "float32"
  return c

TRAIN_DIT_SIZES = ("tiny", "0.1b", "1b", "3.4b")
IMAGE_ONLY_TASKS = ("colorization", "inpainting", "canny_edges", "de_motion_blur",
                    "de_glass_blur", "de_raining")


def _parse_train_dit_arg(arg):
  size, *flags = [a.strip() for a in (arg or "0.1b").split(",")]
  if size not in TRAIN_DIT_SIZES:
    raise ValueError(f"Unknown size {size!r} in config argument {arg!r}; choose one of {TRAIN_DIT_SIZES}.")
  unknown = set(flags) - {"runlocal"}
  if unknown:
    raise ValueError(f"Unknown config flags {sorted(unknown)} in {arg!r}; the only flag is runlocal.")
  return size, "runlocal" in flags


def train_dit(arg: str = "0.1b") -> ml_collections.ConfigDict:
  """J-DiT training (configs/train_dit.py, lavin_jax.train.dit) for `<size>[,runlocal]`."""
  from lavin_jax import flow  # pylint: disable=g-import-not-at-top
  from lavin_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  size, runlocal = _parse_train_dit_arg(arg)
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = 100_000

  # Model: J-DiT architecture; bf16 compute, float32 master weights.
  c.model = jdit(size)
  c.model.dtype = "bfloat16"
  c.model.param_dtype = "float32"
  c.init_from = ""  # optional released J-DiT safetensors to start from

  # Frozen ST-VAE: training encodes pixel batches inside the step ('pixels'), or
  # encodes every example's task pairs once up front and draws episodes of latents
  # ('latents'; deterministic tasks and centred crops: lavin_jax.data.latents).
  c.input = "pixels"
  c.vae = stvae("released")
  c.vae_checkpoint = ""  # released stvae.pt, or an inference bundle directory
  c.vae_random_init = False  # smoke tests only: an untrained ST-VAE

  # Data: episodes of 1..k_max context pairs + a query, padded to k_max
  # (lavin_jax.data.pipeline). The source is a lavin_jax.data.sources spec:
  # 'synthetic' (built-in rendered scenes with every annotation), 'tfds:NAME', ...
  c.source = "synthetic"
  c.data = pipeline.pipeline_config("image")
  c.data.batch_size = 640  # global, over all processes
  c.data.resolution = 256
  c.data.k_min, c.data.k_max = 1, 8  # released training: 1 to 8 pairs
  c.data.worker_count = 4

  # Mesh: sizes of ('data', 'fsdp', 'tensor'); -1 takes the remaining devices.
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))

  # Optimizer (paper): AdamW, no warmup, clip 1.0, EMA 0.9999.
  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.lr = 1e-4
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.95
  c.optimizer.eps = 1e-8
  c.optimizer.weight_decay = 0.01
  c.optimizer.schedule = "constant"  # constant | cosine
  c.optimizer.warmup_steps = 0
  c.optimizer.decay_steps = c.get_ref("total_steps")  # cosine only
  c.optimizer.end_lr_factor = 0.0  # cosine only
  c.optimizer.clip_norm = 1.0
  c.optimizer.ema_decay = 0.9999

  # Flow (time sampling, loss weights, uncond ratio): lavin_jax.flow.
  c.flow = flow.flow_config()

  # Checkpoints and logging.
  c.checkpoint_every = 1000
  c.keep_checkpoints = 3
  # Metrics fetched and checked every log_every steps; larger values let the host run
  # ahead of the device.
  c.log_every = 1

  if runlocal:
    c.total_steps = 10
    c.vae = stvae("tiny")
    c.vae_random_init = True
    c.model.dtype = "float32"
    c.model.remat_policy = "none"
    c.data.batch_size = 2
    c.data.resolution = 64
    c.data.k_max = 2
    c.data.worker_count = 0
    # scikit-image's photographs (no download) and the tasks that need only images.
    c.source = "photos"
    for name in c.data.task_weights:
      c.data.task_weights[name] = float(name in IMAGE_ONLY_TASKS)
    c.checkpoint_every = 5
  return c


def vae_training(size: str = "small") -> ml_collections.ConfigDict:
  """ST-VAE training (lavin_jax.train.vae): MSE + KL by default, LPIPS and GAN optional."""
  c = ml_collections.ConfigDict()
  c.model = stvae(size)
  c.seed = 0
  c.resolution = 64  # square crops, a multiple of 8
  c.batch_size = 16
  c.total_steps = 10_000
  # Optimizer of the ST-VAE and of its discriminator (lavin_jax.train.state).
  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.lr = 1e-4
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.95
  c.optimizer.eps = 1e-8
  c.optimizer.weight_decay = 0.0
  c.optimizer.schedule = "constant"  # constant | cosine
  c.optimizer.warmup_steps = 0
  c.optimizer.decay_steps = c.get_ref("total_steps")  # cosine only
  c.optimizer.end_lr_factor = 0.0  # cosine only
  c.optimizer.clip_norm = 1.0
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
  return c


# Tasks trained and scored, with the metric the learning check reads and whether
# higher is better.
DEMO_TASKS = {
    "depth_estimation": ("abs_rel", False),
    "normal_estimation": ("mean_angle", False),
    "foreground_segmentation": ("miou", True),
    "detection": ("miou", True),
    "colorization": ("mse", False),
}


def demo(arg: str = "default") -> ml_collections.ConfigDict:
  """The end-to-end demo (launch/demo.py, `lavin-demo`): `default` or `smoke`.

  `smoke` runs in well under a minute and checks that every output is produced, not
  that anything is learned. `scale` multiplies the training steps of both models.
  """
  from lavin_jax.data.pipeline import pipeline_config  # pylint: disable=g-import-not-at-top
  from lavin_jax.flow import flow_config  # pylint: disable=g-import-not-at-top
  if arg not in ("default", "smoke"):
    raise ValueError(f"Unknown demo config {arg!r}; choose 'default' or 'smoke'.")
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.scale = 1.0  # multiplies the training steps of both models
  c.resolution = 64
  c.tasks = ml_collections.ConfigDict({name: metric for name, (metric, _) in DEMO_TASKS.items()})
  c.higher_is_better = ml_collections.ConfigDict(
      {name: higher for name, (_, higher) in DEMO_TASKS.items()})

  # Data: the built-in synthetic data set ('demo': 1,024 training stills at 64 px; the
  # 'validation' scenes are held out for the evaluation).
  c.synthetic = "demo"

  # ST-VAE: small, trained on the training stills with MSE + KL.
  c.vae = vae_training("tiny")
  c.vae.resolution = c.get_ref("resolution")
  c.vae.batch_size = 8
  c.vae.total_steps = 800
  c.vae.optimizer.lr = 1e-3
  c.vae.checkpoint_every = 200

  # J-DiT: tiny, trained through the in-context pipeline with the frozen ST-VAE.
  c.dit = ml_collections.ConfigDict()
  c.dit.model = jdit("tiny")
  c.dit.model.hidden_size = 192
  c.dit.model.depth = 4
  c.dit.model.num_heads = 4
  c.dit.model.num_kv_heads = 2
  c.dit.model.dtype = "float32"
  c.dit.model.scan_layers = False
  c.dit.model.remat_policy = "none"
  c.dit.steps = 2000
  c.dit.batch_size = 16
  c.dit.k_min, c.dit.k_max = 1, 2
  c.dit.optimizer = ml_collections.ConfigDict(dict(
      lr=1e-3, schedule="cosine", warmup_steps=100, ema_decay=0.995))
  c.dit.checkpoint_every = 250
  c.dit.flow = flow_config()
  # Uniform times shifted towards noise (t / (t + 3 (1 - t))): a short run spends its
  # steps where the answer must come from the context and the query, not from x_t.
  c.dit.flow.time_sampling = "uniform"
  c.dit.flow.time_shift = 3.0
  c.dit.data = pipeline_config("image")
  c.dit.data.task.depth_min = 1.0  # metres: the rendered scenes lie within 1.5-18 m
  c.dit.data.task.depth_max = 20.0

  # Evaluation on held-out scenes. Every demo task has one right answer, which the
  # metrics reward; one Euler step from noise (2 grid points) gives the model's estimate
  # of the answer's mean given the context and the query, where a longer sampler
  # (the released 20 points, cfg 1.5) draws one plausible answer.
  c.eval = ml_collections.ConfigDict()
  c.eval.num_examples = 64
  c.eval.num_pairs = 2
  c.eval.num_steps = 2
  c.eval.cfg_scale = 1.0
  c.eval.batch_size = 8

  if arg == "smoke":
    c.synthetic = "tiny"
    c.resolution = 32
    c.vae.model = stvae("tiny")
    c.vae.total_steps = 2
    c.vae.batch_size = 2
    c.vae.checkpoint_every = 2
    c.dit.model = jdit("tiny")  # scanned layers: one block to compile
    c.dit.model.dtype = "float32"
    c.dit.steps = 2
    c.dit.batch_size = 2
    c.dit.optimizer.warmup_steps = 1
    c.dit.checkpoint_every = 2
    c.eval.num_examples = 2
    c.eval.num_pairs = 2
    c.eval.num_steps = 3
    c.eval.batch_size = 2
  return c
