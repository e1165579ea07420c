"""Locating and reading the PyTorch weight files of the LPIPS and FID networks.

A weight file is read from the path the caller gives or else, by its standard name, from
the directory named by the environment variable `LAVIN_JAX_WEIGHTS` (default
`~/.cache/lavin_jax/weights`). Nothing is downloaded: a missing file raises an error that
says where to get it and where to put it.
"""

import os
import pathlib

from flax import traverse_util
import numpy as np

from lavin_jax.io import torch_checkpoint
from lavin_jax.io import tree_fit

WEIGHTS_DIR_ENV = "LAVIN_JAX_WEIGHTS"
DEFAULT_WEIGHTS_DIR = pathlib.Path("~/.cache/lavin_jax/weights")


def weights_dir() -> pathlib.Path:
  """The directory searched for weight files given by name only."""
  return pathlib.Path(os.environ.get(WEIGHTS_DIR_ENV, DEFAULT_WEIGHTS_DIR)).expanduser()


def find_weight_file(filename: str, path=None, *, what: str, source: str) -> pathlib.Path:
  """Returns `path` (or `filename` in `weights_dir()`), or raises FileNotFoundError.

  Args:
    filename: the standard file name, e.g. 'vgg16-397923af.pth'.
    path: an explicit file path; None looks for `filename` in `weights_dir()`.
    what: what the file holds, for the error message.
    source: where to download it from, for the error message.
  """
  candidate = pathlib.Path(path).expanduser() if path is not None else weights_dir() / filename
  if candidate.is_file():
    return candidate
  raise FileNotFoundError(
    f"Weight file {filename!r} ({what}) not found at {candidate}. Download it from "
    f"{source} and put it in {weights_dir()} (the directory ${WEIGHTS_DIR_ENV}, default "
    f"{DEFAULT_WEIGHTS_DIR}), or pass its path explicitly."
  )


def read_torch_state_dict(path) -> dict[str, np.ndarray]:
  """Reads a PyTorch state dict (.pth) into float32 numpy arrays, keys unchanged."""
  state = torch_checkpoint.load_state_dict(path)
  return {
    k: np.asarray(v, np.float32) for k, v in state.items() if not k.endswith("num_batches_tracked")
  }


def tree_from_torch(flat: dict[tuple[str, ...], np.ndarray], expected, filename: str):
  """Nests {path: array} like `expected` (a pytree of shapes), checking names and shapes.

  Raises ValueError naming every missing, unexpected or mis-shaped entry, so a wrong or
  truncated weight file never loads silently.
  """
  name = "/".join
  tree_fit.check_fits(
    {name(k): v.shape for k, v in flat.items()},
    {name(k): v.shape for k, v in traverse_util.flatten_dict(expected).items()},
    filename,
    "is it the right file?",
  )
  return traverse_util.unflatten_dict(flat)


def conv_kernel(weight: np.ndarray) -> np.ndarray:
  """PyTorch OIHW conv weight -> flax HWIO kernel."""
  return np.transpose(weight, (2, 3, 1, 0))
