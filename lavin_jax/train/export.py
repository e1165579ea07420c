"""Inference bundles from J-DiT training checkpoints: the EMA params, the ST-VAE, the config.

  export_checkpoint('runs/dit', 'bundle/', vae='vae_bundle/')   # latest step

The checkpoint directory is read only (a run may still be writing to it): its `config`
item (the training config) first, then only the `ema_params` of its `state`, onto the
host. The ST-VAE comes from `vae` (an inference bundle or the released stvae.pt) or else
the config's `vae_checkpoint`; the bundle's ST-VAE config is the training config's
`vae` (its latent normalisation included), so the bundle samples what training saw.
Everything is checked before any array is read.
"""

import os
import pathlib
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from lavin_jax.io import tree_fit
from lavin_jax.models import jdit
from lavin_jax.models import stvae
from lavin_jax.train import checkpoint
from lavin_jax.train import dit


def checkpoint_directory(path) -> pathlib.Path:
  """A training workdir's `checkpoints/` folder, or `path` itself."""
  path = pathlib.Path(path)
  return path / "checkpoints" if (path / "checkpoints").is_dir() else path


def _reader(directory: pathlib.Path) -> ocp.CheckpointManager:
  if not directory.is_dir():
    raise FileNotFoundError(f"No checkpoint directory at {directory}.")
  return ocp.CheckpointManager(
    os.path.abspath(directory),
    options=ocp.CheckpointManagerOptions(read_only=True),
    item_handlers={"state": ocp.PyTreeCheckpointHandler(), "config": ocp.JsonCheckpointHandler()},
  )


def _param_shapes(module: nn.Module, *inputs) -> dict:
  return nn.unbox(jax.eval_shape(module.init, jax.random.key(0), *inputs)["params"])


def _shapes(tree) -> dict:
  flat = jax.tree_util.tree_leaves_with_path(tree)
  return {jax.tree_util.keystr(p): tuple(np.shape(x)) for p, x in flat}


def export_checkpoint(
  path,
  output,
  *,
  step: Optional[int] = None,
  vae: Optional[str] = None,
  dtype: Optional[str] = "bfloat16",
) -> int:
  """Writes the bundle of checkpoint `step` (default the latest) to `output`; returns the step."""
  reader = _reader(checkpoint_directory(path))
  steps = sorted(reader.all_steps())
  if not steps:
    raise FileNotFoundError(f"No complete checkpoint in {reader.directory}.")
  step = steps[-1] if step is None else step
  if step not in steps:
    raise FileNotFoundError(f"No checkpoint step {step} in {reader.directory}; it has {steps}.")
  if not (reader.directory / str(step) / "config").exists():
    raise ValueError(
      f"Checkpoint {reader.directory}/{step} holds no training config; it was not written "
      "by the J-DiT trainer."
    )
  restored = reader.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
  config = ml_collections.ConfigDict(restored["config"])
  if vae:
    config.vae_checkpoint = vae
  if not config.get("vae_checkpoint"):
    raise ValueError(
      "The training config names no ST-VAE (vae_checkpoint is empty): give --vae, an "
      "inference bundle holding the ST-VAE or the released stvae.pt."
    )
  if not os.path.exists(config.vae_checkpoint):
    raise FileNotFoundError(f"No ST-VAE at {config.vae_checkpoint!r}.")

  latent = jnp.zeros((1, 1, 2 * config.model.patch_size, 2 * config.model.patch_size, 16))
  target = {"ema_params": _param_shapes(jdit.JDiT(config.model), latent, jnp.zeros(1), latent)}
  as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
  state = reader.restore(
    step,
    args=ocp.args.Composite(
      state=ocp.args.PyTreeRestore(item=target, restore_args=as_numpy, partial_restore=True)
    ),
  )["state"]
  _, vae_params = dit.load_vae(config)
  pixels = jnp.zeros((1, 1, 16, 16, config.vae.in_channels))
  tree_fit.check_fits(
    _shapes(vae_params),
    _shapes(_param_shapes(stvae.STVAE(config.vae), pixels)),
    f"The ST-VAE {config.vae_checkpoint}",
    "it must be the ST-VAE the run trained with (config.vae)",
  )
  checkpoint.export_bundle(output, state["ema_params"], config, vae_params, dtype=dtype)
  return step
