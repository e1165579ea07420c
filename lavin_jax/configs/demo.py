r"""The end-to-end demo: a small LaVin-DiT trained and evaluated on one CPU machine.

  lavin-demo --workdir=/tmp/lavin_demo                        # stage times: metrics.json
  lavin-demo --workdir=/tmp/lavin_demo --config.scale=0.25    # shorter, weaker
  lavin-demo --config=lavin_jax/configs/demo.py:smoke --workdir=/tmp/lavin_smoke

The argument is `default` or `smoke` (a run of well under a minute that checks every
output is produced, not that anything is learned). `--config.scale` multiplies the
training steps of both models. Data: the built-in rendered scenes (no download).
"""

import ml_collections

from lavin_jax.configs import common
from lavin_jax.configs import evaluate
from lavin_jax.configs import models
from lavin_jax.configs import train_dit
from lavin_jax.configs import train_vae

# Tasks trained and scored: the metric the learning check reads, and whether higher is
# better.
TASKS = {
  "depth_estimation": ("abs_rel", False),
  "normal_estimation": ("mean_angle", False),
  "foreground_segmentation": ("miou", True),
  "detection": ("miou", True),
  "colorization": ("mse", False),
}


def get_config(arg: str = "default") -> ml_collections.ConfigDict:
  """The demo's settings: `default` or `smoke`."""
  setting, _ = common.parse_arg(arg, ("default", "smoke"), "default")
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.scale = 1.0  # multiplies the training steps of both models
  c.resolution = 64
  c.tasks = ml_collections.ConfigDict({name: metric for name, (metric, _) in TASKS.items()})
  c.higher_is_better = ml_collections.ConfigDict(
    {name: higher for name, (_, higher) in TASKS.items()}
  )

  # Data: the built-in synthetic data set ('demo': 1,024 training stills at 64 px; the
  # 'validation' scenes are held out for the evaluation).
  c.synthetic = "demo"

  # ST-VAE: tiny, trained with MSE + KL on the stills of every task's training pairs
  # (stage 'images', no EMA), then scored on reconstructions of held-out photographs.
  c.vae = train_vae.get_config("tiny")
  c.vae.source = ""  # the demo passes its rendered stills
  c.vae.report_sources = ml_collections.ConfigDict({"photos": "photos"})
  c.vae.report_examples = 8
  c.vae.seed = c.get_ref("seed")
  c.vae.resolution = c.get_ref("resolution")
  c.vae.batch_size = 8
  c.vae.total_steps = 800
  c.vae.optimizer.lr = 1e-3
  c.vae.checkpoint_every = 200

  # J-DiT: trained on in-context episodes of precomputed latents (input='latents'); the
  # ST-VAE config, with latent normalisation fitted to the data, is set at run time.
  c.dit = train_dit.get_config("tiny")
  c.dit.seed = c.get_ref("seed")
  c.dit.total_steps = 2000
  c.dit.model.hidden_size = 192
  c.dit.model.depth = 4
  c.dit.model.num_heads = 4
  c.dit.model.num_kv_heads = 2
  c.dit.model.dtype = "float32"
  c.dit.vae_dtype = "float32"  # CPU: no bfloat16 units
  c.dit.model.scan_layers = False
  c.dit.model.remat_policy = "none"
  c.dit.input = "latents"
  c.dit.sources = {}  # the training scenes, named at run time
  c.dit.data.resolution = c.get_ref("resolution")
  c.dit.data.batch_size = 16
  c.dit.data.k_min, c.dit.data.k_max = 1, 2
  c.dit.data.seed = c.get_ref("seed")
  c.dit.data.worker_count = 0
  for name in c.dit.data.task_weights:
    c.dit.data.task_weights[name] = float(name in TASKS)
  c.dit.data.task.depth_min = 1.0  # metres: the rendered scenes lie within 1.5-18 m
  c.dit.data.task.depth_max = 20.0
  c.dit.optimizer.lr = 1e-3
  c.dit.optimizer.schedule = "cosine"
  c.dit.optimizer.warmup_steps = 100
  c.dit.optimizer.ema_decay = 0.995
  # Uniform times shifted towards noise (t / (t + 3 (1 - t))): a short run spends its
  # steps where the answer must come from the context and the query, not from x_t.
  c.dit.flow.time_sampling = "uniform"
  c.dit.flow.time_shift = 3.0
  c.dit.checkpoint_every = 250
  c.dit.keep_checkpoints = 2

  # Evaluation on held-out scenes. Every demo task has one right answer, which the
  # metrics reward; one Euler step from noise (2 grid points) gives the model's estimate
  # of the answer's mean given the context and the query, where a longer sampler
  # (the released 20 points, cfg 1.5) draws one plausible answer.
  c.eval = evaluate.get_config()
  c.eval.seed = c.get_ref("seed")
  c.eval.resolution = c.get_ref("resolution")
  c.eval.num_examples = 64
  c.eval.num_pairs = 2
  c.eval.batch_size = 8
  c.eval.task_options = c.dit.data.task
  c.eval.sampling.num_steps = 2
  c.eval.sampling.cfg_scale = 1.0

  if setting == "smoke":
    c.synthetic = "tiny"
    c.resolution = 32
    c.vae.total_steps = 2
    c.vae.batch_size = 2
    c.vae.checkpoint_every = 2
    c.dit.model = models.jdit("tiny")  # scanned layers: one block to compile
    c.dit.model.dtype = "float32"
    c.dit.total_steps = 2
    c.dit.data.batch_size = 2
    c.dit.optimizer.warmup_steps = 1
    c.dit.checkpoint_every = 2
    c.eval.num_examples = 2
    c.eval.sampling.num_steps = 3
    c.eval.batch_size = 2
  return c
