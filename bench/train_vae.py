"""ST-VAE training-step throughput: steps/s of stills and clips, compile time, memory.

  python bench/train_vae.py [--sizes=tiny,released] [--frames=1,17] [--resolution=256]
      [--batch=1] [--steps=2] [--remat=true|false] [--lpips_vgg=... --lpips_lin=...]

Each figure times `lavin_jax.train.vae`'s jitted update (the ST-VAE, its EMA and the 3D
PatchGAN discriminator, the adversarial term with its adaptive weight switched on from
step 0) on `batch` clips of `frames` frames per device at `resolution` px, data parallel
over all local devices, with the settings of configs/train_vae.py:released for every
size. LPIPS joins the loss when its weight files are given. Peak memory is XLA's
compiled estimate (arguments + outputs + temporaries). One JSON line per figure.
"""

import time

from absl import app
from absl import flags
import common
import flax.linen as nn
import jax
import numpy as np

from lavin_jax import configs
from lavin_jax.configs import train_vae
from lavin_jax.parallel import mesh as mesh_lib
from lavin_jax.train import state as state_lib
from lavin_jax.train import vae

_SIZES = common.define_choices("sizes", "tiny,released", configs.STVAE_SIZES, "ST-VAE sizes")
_FRAMES = common.define_integers("frames", "1,17", "Frames per example (1 + 4k).")
_RESOLUTION = flags.DEFINE_integer("resolution", 256, "Image side in pixels.")
_BATCH = flags.DEFINE_integer("batch", 1, "Examples per device.")
_STEPS = flags.DEFINE_integer("steps", 2, "Timed steps per figure after a warm-up step.")
_REMAT = flags.DEFINE_bool(
  "remat", None, "Rematerialise ResNet blocks; default: the setting's (on for released)."
)
_LPIPS_VGG = flags.DEFINE_string("lpips_vgg", "", "torchvision VGG16 weights (LPIPS term).")
_LPIPS_LIN = flags.DEFINE_string("lpips_lin", "", "LPIPS linear heads (LPIPS term).")


def case_config(size: str):
  """The training config of one figure."""
  config = train_vae.get_config("released")
  config.model = configs.stvae(size)
  config.model.remat = size == "released" if _REMAT.value is None else _REMAT.value
  config.resolution = _RESOLUTION.value
  config.disc_start = 0
  config.lpips_vgg, config.lpips_lin = _LPIPS_VGG.value, _LPIPS_LIN.value
  config.lpips_weight = 1.0 if config.lpips_vgg and config.lpips_lin else 0.0
  return config


def bench(size: str, frames: int):
  config = case_config(size)
  vae.check_config(config)
  model, disc = vae.make_models(config)
  mesh = mesh_lib.create_mesh({"data": -1})
  lpips, lpips_params = vae.lpips_model(config, mesh) if config.lpips_weight else (None, {})
  tx, _ = state_lib.create_optimizer(config.optimizer)
  start = time.perf_counter()
  state, shardings = vae.init_train_state(model, disc, tx, config, mesh, jax.random.PRNGKey(0))
  jax.block_until_ready(state)
  init_seconds = time.perf_counter() - start
  step = vae.create_train_step(model, disc, lpips, tx, config, shardings)
  batch = _BATCH.value * jax.local_device_count()
  side = config.resolution
  local = np.random.default_rng(0).uniform(-1, 1, (batch, frames, side, side, 3))
  with jax.set_mesh(mesh), nn.logical_axis_rules(mesh_lib.AXIS_RULES):
    video = mesh_lib.global_batch(local.astype(np.float32), mesh)
    start = time.perf_counter()
    compiled = step.lower(state, lpips_params, video).compile()
    compile_seconds = time.perf_counter() - start
    memory = compiled.memory_analysis()
    state, metrics = compiled(state, lpips_params, video)  # warm-up
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(_STEPS.value):
      state, metrics = compiled(state, lpips_params, video)
    jax.block_until_ready((state, metrics))
    seconds = (time.perf_counter() - start) / _STEPS.value
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  return {
    "figure": "train_vae",
    "size": size,
    "params_m": round(n_params / 1e6, 2),
    "frames": frames,
    "resolution": side,
    "batch": batch * jax.process_count(),
    "remat": config.model.remat,
    "lpips": lpips is not None,
    "devices": jax.device_count(),
    "backend": jax.default_backend(),
    "init_s": round(init_seconds, 1),
    "compile_s": round(compile_seconds, 1),
    "steps_per_sec": round(1 / seconds, 4),
    "examples_per_sec": round(batch * jax.process_count() / seconds, 3),
    "peak_memory_gib": round(
      (memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes)
      / 2**30,
      3,
    ),
    "loss": round(float(metrics["loss"]), 4),
  }


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  for size in _SIZES.value:
    for frames in _FRAMES.value:
      common.print_figure(bench(size, frames))


if __name__ == "__main__":
  app.run(main)
