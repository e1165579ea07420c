"""The deterministic weight rule of the metric-network fixtures (fixtures/metrics).

For the k-th key of a keys file, u is a splitmix64 stream indexed by element; the key's
kind decides how u becomes a weight (see `deterministic_tensor`). Rebuilding the weights
here means no large weight file has to ship with the tests.
"""

import json

import numpy as np
import torch_files

_GOLDEN = 0x9E3779B97F4A7C15
_MASK = (1 << 64) - 1


def splitmix_uniform(k: int, shape) -> np.ndarray:
  """u in [0, 1), float64, of the k-th tensor; element i mixes i + (k + 1) * golden."""
  z = np.arange(int(np.prod(shape)), dtype=np.uint64) + np.uint64(((k + 1) * _GOLDEN) & _MASK)
  z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  z = z ^ (z >> np.uint64(31))
  return ((z >> np.uint64(11)).astype(np.float64) * 2.0**-53).reshape(shape)


def deterministic_tensor(k: int, name: str, shape) -> np.ndarray:
  """The fixture weight of the k-th key `name` with shape `shape`."""
  if name.endswith("num_batches_tracked"):
    return np.zeros(shape, np.int64)
  u = splitmix_uniform(k, shape)
  if name.endswith("weight") and len(shape) >= 2:
    w = (2 * u - 1) * np.sqrt(6 / np.prod(shape[1:]))
  elif name.endswith("weight"):
    w = 1 + 0.2 * (u - 0.5)
  elif name.endswith("running_var"):
    w = 0.5 + u
  else:
    w = 0.2 * (u - 0.5)
  return w.astype(np.float32)


def state_dict(keys_file) -> dict[str, np.ndarray]:
  """The deterministic state dict of a [[key, shape], ...] file."""
  with open(keys_file) as f:
    keys = json.load(f)
  return {name: deterministic_tensor(k, name, tuple(shape)) for k, (name, shape) in enumerate(keys)}


def save_state_dict(keys_file, path):
  """Writes the deterministic state dict of a [[key, shape], ...] file as a .pth."""
  return torch_files.save(state_dict(keys_file), path)
