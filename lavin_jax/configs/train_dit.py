r"""J-DiT training with rectified flow on in-context sequences (paper stage 1: 256 px).

Run on one host (all local devices, data parallel):

  python launch/train_dit.py --config=lavin_jax/configs/train_dit.py:0.1b \
      --config.vae_checkpoint=/path/to/stvae.pt --workdir=/tmp/lavin_dit

CPU smoke run (tiny model, random-init ST-VAE, a few steps):

  python launch/train_dit.py --config=lavin_jax/configs/train_dit.py:tiny,runlocal \
      --workdir=/tmp/lavin_dit_tiny

The paper's task mixture (its data sets as sources; set those you hold, e.g. a COCO and
a Kubric adapter, and give the tasks no source feeds weight 0):

  python launch/train_dit.py --config=lavin_jax/configs/train_dit.py:0.1b,paper \
      --config.sources.coco=SPEC --config.sources.kubric=SPEC ...

The argument is `<size>[,runlocal][,paper]` with size in lavin_jax.configs.JDIT_SIZES;
every field can be overridden, e.g. `--config.mesh.fsdp=8 --config.optimizer.lr=5e-5`.
Clusters: launch/slurm_train_dit.sh (GPU), launch/tpu_train_dit.sh (TPU pods).
"""

import ml_collections

from lavin_jax.configs import common
from lavin_jax.configs import data
from lavin_jax.configs import flow
from lavin_jax.configs import models
from lavin_jax.configs import optimizer
from lavin_jax.configs import tasks


def get_config(arg: str = "0.1b") -> ml_collections.ConfigDict:
  """J-DiT training for `<size>[,runlocal][,paper]`."""
  size, flags = common.parse_arg(arg, models.JDIT_SIZES, "0.1b", flags=("runlocal", "paper"))
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = 100_000

  # Model: J-DiT architecture; bf16 compute, float32 master weights.
  c.model = models.jdit(size)
  c.init_from = ""  # optional released J-DiT safetensors to start from

  # Frozen ST-VAE: training encodes pixel batches inside the step ('pixels'), or reads
  # the posterior moments of every example's task pairs, encoded once into
  # latents.dir (launch/encode_latents.py, or at the start of training), and draws the
  # posterior sample inside the step ('latents'; lavin_jax.data.latents).
  c.input = "pixels"  # pixels | latents
  c.vae = models.stvae("released")
  c.vae_checkpoint = ""  # released stvae.pt, or an inference bundle directory
  c.vae_random_init = False  # smoke tests only: an untrained ST-VAE
  # The frozen encode's compute dtype: bfloat16 moves the posterior means by 1 to 3 %
  # (relative L2, random weights; bench/vae_dtype.py) at half the memory traffic.
  c.vae_dtype = "bfloat16"
  c.latents = data.latents()

  # Data: episodes of 1..k_max context pairs + a query, padded to k_max
  # (lavin_jax.data.pipeline), mixed over the sources: {name: lavin_jax.data.specs spec,
  # e.g. 'synthetic' (built-in rendered scenes with every annotation), 'tfds:NAME'}.
  # Each weighted task draws from the sources carrying what it reads
  # (lavin_jax.data.mixture); a source with an empty spec is left out.
  c.sources = ml_collections.ConfigDict({"synthetic": "synthetic:medium"})  # 256 px stills
  c.data = data.pipeline("image")
  c.data.batch_size = 640  # global, over all processes
  c.data.resolution = 256
  c.data.k_min, c.data.k_max = 1, 8  # released training: 1 to 8 pairs
  c.data.worker_count = 4

  # Mesh: sizes of ('data', 'fsdp', 'tensor'); -1 takes the remaining devices.
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))

  # The paper's optimizer: AdamW 1e-4, betas (0.9, 0.95), weight decay 0.01, no warmup,
  # clip 1.0; EMA 0.9999.
  c.optimizer = optimizer.adamw(lr=1e-4, weight_decay=0.01)
  c.optimizer.decay_steps = c.get_ref("total_steps")
  c.optimizer.ema_decay = 0.9999
  c.flow = flow.training()

  # Gradient accumulation: each global batch in grad_accum_steps microbatches (a lax.scan),
  # gradients averaged in float32, one update: the paper's batch of 640 with the
  # activation memory of 640 / grad_accum_steps examples. data.batch_size must be a
  # multiple of grad_accum_steps x the data-parallel (data x fsdp) devices.
  c.grad_accum_steps = 1

  # Checkpoints and logging: metrics.jsonl and TensorBoard event files in the workdir.
  c.checkpoint_every = 1000
  c.keep_checkpoints = 3
  c.restore_fallback = False  # True: a damaged latest checkpoint resumes from an earlier one
  # Metrics fetched and checked every log_every steps; larger values let the host run
  # ahead of the device.
  c.log_every = 1
  # A jax.profiler trace of steps start to stop - 1 into <workdir>/profile, e.g. (10, 15);
  # () is off.
  c.profile_steps = ()

  # Evaluation every eval_every steps (0: off): the velocity loss of eval_batches
  # batches of the configured input, drawn once at the start with data seed eval_seed
  # (other episodes of the same sources), each example at every time of eval_times
  # with fixed noise and its whole context: a deterministic function of the params,
  # logged as eval_loss.
  c.eval_every = 1000
  c.eval_batches = 1
  c.eval_seed = c.data.get_ref("seed") + 1
  c.eval_times = (0.0625, 0.1875, 0.3125, 0.4375, 0.5625, 0.6875, 0.8125, 0.9375)

  if "paper" in flags:
    # The paper's tasks weighted by their training examples (configs/data.py).
    c.sources = data.paper_sources()
    c.data.task_weights = data.paper().task_weights

  if "runlocal" in flags:
    c.total_steps = 10
    c.vae = models.stvae("tiny")
    c.vae_random_init = True
    c.model.dtype = "float32"
    c.vae_dtype = "float32"  # CPU: no bfloat16 units
    c.model.remat_policy = "none"
    c.data.batch_size = 2
    c.data.resolution = 64
    c.data.k_max = 2
    c.data.k_buckets = (2,)  # one compiled step: compile time dominates a smoke run
    c.data.worker_count = 0
    # scikit-image's photographs (no download) and the tasks that need only images.
    c.sources = ml_collections.ConfigDict({"photos": "photos"})
    for name in c.data.task_weights:
      c.data.task_weights[name] = float(name in tasks.IMAGE_ONLY_TASKS)
    c.checkpoint_every = 5
    c.eval_every = 5
    c.eval_times = (0.25, 0.75)
  return c
