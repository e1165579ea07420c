r"""Stored latents: encoding throughput, and J-DiT training from latents on disk vs pixels.

  python bench/latents.py [--steps=8] [--resolution=64] [--batch_size=4] [--source=photos]

The CPU smoke setting (`train_dit.py:tiny,runlocal`: the tiny J-DiT, a random-init tiny
ST-VAE, the image-only tasks) on --source. Figures, one JSON line each:
  latents_encode_examples_per_second  source examples whose every task pair (both sides)
                                      is rendered, encoded and written as shards, per
                                      second; the encoder compiled beforehand
  dit_train_steps_per_second          input=latents (episodes read from the shards) and
                                      input=pixels (rendered, ST-VAE in the step): the
                                      median steps/s over --steps steps after the first
                                      two (compilation)
"""

import json
import os
import statistics
import tempfile
import time

from absl import app
from absl import flags
import common
import jax
import numpy as np

from lavin_jax.configs import train_dit as train_dit_config
from lavin_jax.data import latents
from lavin_jax.train import dit

_STEPS = flags.DEFINE_integer("steps", 8, "Timed training steps per input.")
_RESOLUTION = flags.DEFINE_integer("resolution", 64, "Square side in pixels.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 4, "Episodes per training step.")
_SOURCE = flags.DEFINE_string("source", "photos", "A `specs.get_source` spec.")


def _config(workdir):
  c = train_dit_config.get_config("tiny,runlocal")
  c.sources = {"bench": _SOURCE.value}
  c.data.resolution = _RESOLUTION.value
  c.data.batch_size = _BATCH_SIZE.value
  c.latents.dir = os.path.join(workdir, "latents")
  c.total_steps = _STEPS.value + 2
  c.checkpoint_every = c.total_steps
  return c


def encode_figure(config, workdir) -> dict:
  """Encodes the source's task pairs once, the encoder compiled beforehand."""
  vae, params = dit.load_vae(config)
  encode = jax.jit(lambda p, x: vae.apply({"params": p}, x, method="encode"))
  params = jax.device_put(params)
  shape = (config.latents.batch_size, 1, _RESOLUTION.value, _RESOLUTION.value, 3)
  jax.block_until_ready(encode(params, np.zeros(shape, np.float32)))  # compile
  sources = dit.open_sources(config)
  start = time.perf_counter()
  latents.encode_latents(
    sources,
    os.path.join(workdir, "timed"),
    config.data,
    config.latents,
    lambda: lambda x: encode(params, x),
    dit.vae_identity(config),
  )
  seconds = time.perf_counter() - start
  size = sum(len(s) for s in sources.values())
  return {
    "figure": "latents_encode_examples_per_second",
    "value": round(size / seconds, 2),
    "examples": size,
    "tasks": sum(w > 0 for w in config.data.task_weights.values()),
    "views": config.latents.views,
  }


def train_figure(config, workdir, input_kind) -> dict:
  """Median steps/s of `dit.train` (log_every=1: each step is timed on its own)."""
  config.input = input_kind
  run = os.path.join(workdir, f"train_{input_kind}")
  dit.train(config, run)
  with open(os.path.join(run, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  per_step = [r["examples_per_sec"] / config.data.batch_size for r in records[2:]]
  return {
    "figure": "dit_train_steps_per_second",
    "input": input_kind,
    "value": round(statistics.median(per_step), 3),
    "steps": len(per_step),
  }


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  with tempfile.TemporaryDirectory() as workdir:
    config = _config(workdir)
    fields = {
      "source": _SOURCE.value,
      "resolution": _RESOLUTION.value,
      "batch_size": _BATCH_SIZE.value,
      "vae": "tiny",
      "jdit": "tiny",
      "backend": jax.default_backend(),
      "cpus": os.cpu_count(),
    }
    common.print_figure({**encode_figure(config, workdir), **fields})
    for input_kind in ("latents", "pixels"):
      common.print_figure({**train_figure(config, workdir, input_kind), **fields})


if __name__ == "__main__":
  app.run(main)
