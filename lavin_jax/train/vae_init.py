"""Where a fresh ST-VAE run starts (config.init_from): released weights, a bundle, a stage.

`config.init_from` is one of
  - the released `stvae.pt`, or a .safetensors file in its key layout;
  - an inference bundle directory (config.json + params/), e.g. <workdir>/bundle;
  - an earlier run: its workdir (checkpoints/ inside), its checkpoint directory, or one
    step directory of it; the latest complete step is read.
A run's checkpoint gives the ST-VAE params, its EMA and its discriminator; the other
kinds give the params alone. The optimizer, the step and the data start afresh.

  kind, path = locate(config.init_from)     # before any compile; a clear error otherwise
  trees = load(kind, path, config.model)    # {'params': ..., ['ema_params', 'disc_params']}
"""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from lavin_jax import convert
from lavin_jax.io import bundle

RELEASED_SUFFIXES = (".pt", ".pth", ".safetensors")
_STATE_ITEM = "state"  # the train state's item in a step directory (train/checkpoint.py)


def _complete_steps(directory: str) -> list[int]:
  """Step numbers of the complete checkpoints in an orbax manager directory."""
  if not os.path.isdir(directory):
    return []
  return sorted(
    int(name)
    for name in os.listdir(directory)
    if name.isdigit() and os.path.isdir(os.path.join(directory, name, _STATE_ITEM))
  )


def locate(path: str) -> tuple[str, str]:
  """('released' | 'bundle' | 'checkpoint', the file or directory to read).

  Raises:
    FileNotFoundError: nothing is at `path`.
    ValueError: `path` is none of the kinds above.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"config.init_from {path!r} does not exist.")
  if os.path.isfile(path):
    if path.endswith(RELEASED_SUFFIXES):
      return "released", path
  elif os.path.isfile(os.path.join(path, bundle.CONFIG_FILE)):
    return "bundle", path
  elif os.path.isdir(os.path.join(path, _STATE_ITEM)):
    return "checkpoint", path
  else:
    for directory in (os.path.join(path, "checkpoints"), path):
      steps = _complete_steps(directory)
      if steps:
        return "checkpoint", os.path.join(directory, str(steps[-1]))
  raise ValueError(
    f"config.init_from {path!r} is neither a released ST-VAE file "
    f"({', '.join(RELEASED_SUFFIXES)}), an inference bundle (with {bundle.CONFIG_FILE}), "
    "a training workdir (with checkpoints/) nor a checkpoint directory (numbered steps); "
    "point it at one of those."
  )


def _read_state(step_dir: str) -> dict:
  """The train state of a step directory as host numpy arrays."""
  checkpointer = ocp.StandardCheckpointer()
  item = os.path.join(os.path.abspath(step_dir), _STATE_ITEM)
  stored = checkpointer.metadata(item).item_metadata.tree
  target = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), stored)
  return checkpointer.restore(item, target)


def load(kind: str, path: str, model_config) -> dict:
  """Host arrays to start from: {'params'} and, from a run, 'ema_params' and 'disc_params'
  where it had them."""
  if kind == "released":
    _, params = convert.load_released_stvae(path, model_config)
    return {"params": jax.device_get(params)}
  if kind == "bundle":
    params = bundle.load_bundle(path)[1]["stvae"]
    if params is None:
      raise ValueError(
        f"The bundle {path!r} holds no ST-VAE params (a J-DiT-only bundle); "
        "give an ST-VAE bundle in config.init_from."
      )
    return {"params": params}
  state = _read_state(path)
  if "params" not in state:
    raise ValueError(
      f"The checkpoint {path!r} holds no 'params'; is it a training checkpoint of lavin_jax?"
    )
  return {k: state[k] for k in ("params", "ema_params", "disc_params") if state.get(k)}
