#!/usr/bin/env bash
# J-DiT training on a Cloud TPU VM pod slice: the same command on every worker.
#
#   launch/tpu_train_dit.sh my-tpu us-central2-b 1b /mnt/shared/runs/dit_1b \
#       --config.vae_checkpoint=/data/stvae.pt --config.sources.synthetic=...
#
# jax.distributed.initialize detects the TPU pod by itself (--auto_distributed). The
# repository must already be on every worker at ~/lavin_jax with
# `pip install -e '.[tpu]'` done (e.g. the same gcloud ssh --worker=all with a
# git clone / pip command). The workdir must be a file system every worker mounts
# (e.g. Filestore over NFS); the stvae.pt path must exist on every worker. Attention
# is the config's 'auto' (models/attention.py).
set -euo pipefail

tpu="${1:?usage: tpu_train_dit.sh <tpu-name> <zone> <size> <workdir> [--config.x=y ...]}"
zone="${2:?}"
size="${3:?}"
workdir="${4:?}"
shift 4

overrides="$*"
gcloud compute tpus tpu-vm ssh "${tpu}" --zone="${zone}" --worker=all --command="
  cd ~/lavin_jax && python launch/train_dit.py \
    --config=lavin_jax/configs/train_dit.py:${size} \
    --config.mesh.data=-1 --config.mesh.fsdp=4 --config.mesh.tensor=1 \
    --workdir=${workdir} \
    --auto_distributed ${overrides}"
