"""Import of the released ST-VAE checkpoint (`stvae.pt`, `{'state_dict': ...}`) into Flax.

    module, params = load_released_stvae(path, config)
    mean, logvar = module.apply({'params': params}, video, method='encode')
    pixels = module.apply({'params': params}, z, method='decode')

The Flax tree (lavin_jax/models/stvae.py) mirrors the released names: list indices
become suffixes (`down_blocks.0` -> `down_blocks_0`), a causal conv's inner `conv.` level
is folded into the module, weights become `kernel` (convolutions, transposed from
(out, in, *k) to (*k, in, out)) or `scale` (norms). The file is checked against
`jax.eval_shape` of the model before any array is converted.

`.pt` files are read without torch by lavin_jax.io.torch_checkpoint (no pickled code
runs); `.safetensors` files with the same keys work too. Keys outside `encoder.` and
`decoder.` are not part of the model (the released loader ignores them too): they are
skipped with a warning.
"""

import os
import re

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lavin_jax import configs
from lavin_jax.io import safetensors_file
from lavin_jax.io import torch_checkpoint
from lavin_jax.io import tree_fit
from lavin_jax.models import stvae

_REQUIRED = ("block_out_channels", "layers_per_block", "latent_channels")
_MODEL_PREFIXES = ("encoder.", "decoder.")


def released_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The full ST-VAE config: the released model's values, overridden by `config`."""
  missing = [k for k in _REQUIRED if k not in config]
  if missing:
    raise ValueError(f"The ST-VAE config needs {_REQUIRED}; missing {missing}.")
  full = configs.stvae("released")
  unknown = sorted(set(config.keys()) - set(full.keys()))
  if unknown:
    raise ValueError(f"Unknown ST-VAE config fields {unknown}; known: {sorted(full.keys())}.")
  full.update(config)
  return full


def released_key(path: tuple[str, ...]) -> str:
  """Released name of a Flax param path, e.g. ('encoder', 'conv_in', 'kernel')."""
  *modules, leaf = path
  parts = [re.sub(r"_(\d+)$", r".\1", m) for m in modules]
  is_conv = not modules[-1].startswith("norm") and modules[-1] != "conv_shortcut"
  if is_conv:  # CausalConv3d, Downsample and Upsample hold an inner `conv`.
    parts.append("conv")
  parts.append("weight" if leaf in ("kernel", "scale") else leaf)
  return ".".join(parts)


def _to_flax_layout(array: np.ndarray) -> np.ndarray:
  """(out, in, *k) -> (*k, in, out); vectors unchanged."""
  if array.ndim < 2:
    return array
  return np.transpose(array, tuple(range(2, array.ndim)) + (1, 0))


def _expected_params(module, config):
  """Flax param shapes of the model, without allocating anything."""
  f = stvae.spatial_factor(config)
  video = jax.ShapeDtypeStruct((1, 1, f, f, config.in_channels), np.float32)
  variables = jax.eval_shape(module.init, jax.random.key(0), video)
  return nn.unbox(variables["params"])


def _read_safetensors(path):
  with safetensors_file.open_file(path) as f:
    return {k: f.array(k) for k in f.keys()}


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """The released state dict as host numpy arrays in their stored dtypes (PyTorch layouts)."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No ST-VAE checkpoint at {path!r} (want stvae.pt).")
  if path.endswith(".safetensors"):
    return _read_safetensors(path)
  if path.endswith((".pt", ".pth", ".bin", ".ckpt")):
    return torch_checkpoint.load_state_dict(path)
  raise ValueError(f"Unknown checkpoint format {path!r}: use a .pt or .safetensors file.")


def _check(expected, state, path):
  """Raises ValueError listing every missing, unexpected and mismatched key."""
  stored = {k: _to_flax_layout(v).shape for k, v in state.items()}
  tree_fit.check_fits(
    stored,
    expected,
    f"{path} (compared in the Flax layout)",
    "check block_out_channels, layers_per_block, latent_channels",
  )


def load_released_stvae(path: str | os.PathLike, config: ml_collections.ConfigDict):
  """Reads the released ST-VAE weights into (STVAE module, params).

  Args:
    path: `stvae.pt` ({'state_dict': ...}) or a .safetensors file with the same keys.
    config: needs block_out_channels, layers_per_block and latent_channels; every
      other field defaults to the released model (lavin_jax.configs.stvae('released')).

  Returns:
    (module, params) for `module.apply({'params': params}, x, method='encode'|'decode')`.
  """
  config = released_config(config)
  state = read_state_dict(path)
  ignored = sorted(k for k in state if not k.startswith(_MODEL_PREFIXES))
  if ignored:
    logging.warning("Skipping %d keys outside the ST-VAE model: %s", len(ignored), ignored)
    state = {k: v for k, v in state.items() if k not in ignored}
  module = stvae.STVAE(config)
  expected_tree = _expected_params(module, config)
  leaves = jax.tree_util.tree_flatten_with_path(expected_tree)[0]
  expected = {released_key(tuple(k.key for k in p)): tuple(x.shape) for p, x in leaves}
  _check(expected, state, os.fspath(path))
  dtype = jnp.dtype(config.param_dtype)
  params = jax.tree_util.tree_map_with_path(
    lambda p, _: np.asarray(
      _to_flax_layout(state.pop(released_key(tuple(k.key for k in p)))), dtype
    ),
    expected_tree,
  )
  return module, params
