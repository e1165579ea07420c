r"""Trains an ST-VAE (lavin_jax.train.vae.train) and writes it as an inference bundle.

  python launch/train_vae.py --config=configs/train_vae.py:demo --workdir=/tmp/lavin_vae

Checkpoints and metrics.jsonl go to --workdir (a workdir with checkpoints resumes); the
trained ST-VAE is saved with lavin_jax.inference.bundle to <workdir>/bundle, ready for
`--config.vae_checkpoint=<workdir>/bundle` in J-DiT training.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file, e.g. configs/train_vae.py:demo.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics.jsonl, bundle/.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # pylint: disable=g-import-not-at-top
  from lavin_jax.data import sources
  from lavin_jax.inference import bundle
  from lavin_jax.train import vae
  # pylint: enable=g-import-not-at-top
  config = _CONFIG.value
  source = sources.get_source(config.source)
  trainer_config = ml_collections.ConfigDict(config.to_dict())
  del trainer_config.source
  try:
    params = vae.train(trainer_config, _WORKDIR.value, source)
  except FloatingPointError as e:
    logging.error("%s", e)
    sys.exit(f"Training stopped: {e}")
  out = os.path.join(_WORKDIR.value, "bundle")
  bundle.save_bundle(out, ml_collections.ConfigDict({"stvae": config.model}), stvae_params=params)
  logging.info("ST-VAE bundle written to %s", out)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
