#!/usr/bin/env bash
# J-DiT training on SLURM GPU nodes with 8 A100/H100 each: one process per GPU.
#
#   sbatch --nodes=8 launch/slurm_train_dit.sh 3.4b /shared/runs/dit_3.4b \
#       --config.vae_checkpoint=/shared/weights/stvae.pt [--config.sources.synthetic=SPEC]
#
# jax.distributed.initialize detects SLURM by itself (--auto_distributed): the
# coordinator is the first node, and every task sees all 8 GPUs of its node but uses
# the one of its local rank. The workdir must be on a file system every node shares.
# Data: the config's built-in synthetic 'medium' set (256 px stills, built on first use) unless
# the arguments name other sources (lavin_jax.data.specs; they must be at least the
# config's 256 px). Mesh: FSDP over the 8 GPUs of a node, data parallel across nodes
# (data=-1); for
# 3.4B at 512 px add --config.mesh.tensor=2 --config.mesh.fsdp=4 if memory is short.
#SBATCH --job-name=lavin-dit
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=12
#SBATCH --exclusive
#SBATCH --signal=TERM@300
#SBATCH --output=%x-%j.out
set -euo pipefail

size="${1:?usage: slurm_train_dit.sh <size> <workdir> [--config.x=y ...]}"
workdir="${2:?usage: slurm_train_dit.sh <size> <workdir> [--config.x=y ...]}"
shift 2

# Attention is the config's 'auto': cuDNN flash attention for the bf16 compute (the GPU
# build of jax: pip install -e '.[cuda12]').
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
export XLA_FLAGS="--xla_gpu_enable_latency_hiding_scheduler=true \
  --xla_gpu_enable_highest_priority_async_stream=true \
  --xla_gpu_all_reduce_combine_threshold_bytes=134217728 \
  --xla_gpu_all_gather_combine_threshold_bytes=134217728 \
  --xla_gpu_reduce_scatter_combine_threshold_bytes=134217728"
export NCCL_DEBUG=WARN

cd "$(dirname "$0")/.."
# SIGTERM (sent 300 s before the time limit, or on preemption) saves a checkpoint and
# exits; resubmitting the same command resumes from it.
srun --kill-on-bad-exit=1 python launch/train_dit.py \
  --config="lavin_jax/configs/train_dit.py:${size}" \
  --config.mesh.data=-1 --config.mesh.fsdp=8 --config.mesh.tensor=1 \
  --workdir="${workdir}" \
  --auto_distributed \
  "$@"
