r"""Encodes a J-DiT run's task pairs once with the frozen ST-VAE (lavin_jax.train.dit).

  python launch/encode_latents.py --config=lavin_jax/configs/train_dit.py:0.1b \
      --config.vae_checkpoint=/path/to/stvae.pt --config.latents.dir=/data/latents

writes the posterior moments of every weighted task's pairs of every source in
config.sources as ArrayRecord shards in config.latents.dir (or <workdir>/latents);
training with the same config and --config.input=latents reads them. Each process
encodes its own shards; a finished shard is never redone, so a killed job, run again,
picks up where it stopped. Multi-host: the flags of launch/train_dit.py
(--coordinator_address/--num_processes/--process_id, or --auto_distributed).
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from lavin_jax import cli

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Training config, e.g. lavin_jax/configs/train_dit.py:0.1b.", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
  "workdir",
  None,
  "The training run's directory: latents go to <workdir>/latents unless config.latents.dir is set.",
)
_START_DISTRIBUTED = cli.distributed_flags()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not (_CONFIG.value.latents.dir or _WORKDIR.value):
    raise ValueError("Set --config.latents.dir or --workdir: where the latents go.")
  _START_DISTRIBUTED()
  from lavin_jax.train import dit  # pylint: disable=g-import-not-at-top

  dit.encode_latents(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  cli.run(main)
