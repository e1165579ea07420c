r"""J-DiT training with rectified flow on in-context sequences (paper stage 1: 256 px).

Run on one host (all local devices, data parallel):

  python launch/train_dit.py --config=configs/train_dit.py:0.1b \
      --config.vae_checkpoint=/path/to/stvae.pt --workdir=/tmp/lavin_dit

CPU smoke run (tiny model, random-init ST-VAE, a few steps):

  python launch/train_dit.py --config=configs/train_dit.py:tiny,runlocal \
      --workdir=/tmp/lavin_dit_tiny

The argument is `<size>[,runlocal]` with size in {tiny, 0.1b, 1b, 3.4b}; every
field can be overridden, e.g. `--config.mesh.fsdp=8 --config.optimizer.lr=5e-5`.
Clusters: launch/slurm_train_dit.sh (GPU), launch/tpu_train_dit.sh (TPU pods).
"""

from lavin_jax import configs

SIZES = configs.TRAIN_DIT_SIZES


def get_config(arg: str = "0.1b"):
  return configs.train_dit(arg)
