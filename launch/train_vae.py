r"""Trains an ST-VAE (lavin_jax.train.vae) and writes it as an inference bundle.

  python launch/train_vae.py --config=lavin_jax/configs/train_vae.py:demo \
      --workdir=/tmp/lavin_vae

Checkpoints and metrics.jsonl go to --workdir (a workdir with checkpoints resumes); the
trained ST-VAE is saved as an inference bundle to <workdir>/bundle, ready for
`--config.vae_checkpoint=<workdir>/bundle` in J-DiT training. The second stage starts
from the first: --config.stage=images+clips --config.init_from=<first workdir>.
Multi-host runs take the flags of launch/train_dit.py (--coordinator_address,
--num_processes, --process_id or --auto_distributed).
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from lavin_jax import cli
from lavin_jax import configs

_CONFIG = config_flags.DEFINE_config_file(
  "config", configs.path("train_vae"), "Training config, e.g. train_vae.py:demo.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics.jsonl, bundle/.")
_START_DISTRIBUTED = cli.distributed_flags()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  _START_DISTRIBUTED()
  from lavin_jax.train import vae  # pylint: disable=g-import-not-at-top

  out = vae.train_and_export(_CONFIG.value, _WORKDIR.value)
  if out is not None:
    logging.info("ST-VAE bundle written to %s", out)


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  cli.run(main)
