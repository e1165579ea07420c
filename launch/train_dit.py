r"""Trains J-DiT with rectified flow (lavin_jax.train.dit.train).

  python launch/train_dit.py --config=lavin_jax/configs/train_dit.py:0.1b \
      --config.vae_checkpoint=/path/to/stvae.pt --workdir=/tmp/lavin_dit

Any config field can be overridden with --config.<field>=<value>; a workdir with
checkpoints resumes. Multi-host runs start jax.distributed from
--coordinator_address/--num_processes/--process_id (or the JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID environment variables), or, with
--auto_distributed, from the cluster itself (SLURM, Open MPI, Cloud TPU pods): see
launch/slurm_train_dit.sh and launch/tpu_train_dit.sh.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from lavin_jax import cli

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Training config, e.g. lavin_jax/configs/train_dit.py:0.1b.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics.jsonl; resumes.")
_START_DISTRIBUTED = cli.distributed_flags()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  _START_DISTRIBUTED()
  from lavin_jax.train import dit  # pylint: disable=g-import-not-at-top

  dit.train(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  cli.run(main)
