"""Import of the released J-DiT checkpoint (`lavin_dit.safetensors`) into Flax params.

    module, params = load_released_jdit(path, config)
    v = module.apply({'params': params}, x_t, t, cond)             # (B, Tx, h, w, 16)
    g = module.apply({'params': params}, x_t, t, cond, cond_null, 1.5,
                     method='forward_with_cfg')                      # guided velocity

The released names map part by part onto the Flax tree (lavin_jax/models/jdit.py names
its modules after them); PyTorch Linear weights (out, in) are transposed to kernels
(in, out). The file is checked against `jax.eval_shape` of the model before anything is
read: every key used, every parameter filled, every shape right.
"""

import os

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from lavin_jax import configs
from lavin_jax.io import safetensors_file
from lavin_jax.io import tree_fit
from lavin_jax.models import jdit

# Flax module names whose released name differs.
_MODULE_RENAMES = {
  "proj": "0",  # embedders: Linear
  "norm": "1",  # embedders: LayerNorm
  "fc1": "mlp.0",
  "fc2": "mlp.2",
  "cond_modulation": "cond_modulation.1",
  "x_modulation": "x_modulation.1",
  "modulation": "adaLN_modulation.1",
}
_LEAF_RENAMES = {"kernel": "weight", "scale": "weight"}


def released_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The full J-DiT config: the released 3.4B model's values, overridden by `config`.

  `config` needs hidden_size, depth, num_heads and num_kv_heads. The compute dtype
  defaults to float32 (the precision of the released reference outputs); set
  dtype='bfloat16' for speed.
  """
  required = ("hidden_size", "depth", "num_heads", "num_kv_heads")
  missing = [k for k in required if k not in config]
  if missing:
    raise ValueError(f"The J-DiT config needs {required}; missing {missing}.")
  full = configs.jdit("3.4b")
  full.dtype = "float32"
  unknown = sorted(set(config.keys()) - set(full.keys()))
  if unknown:
    raise ValueError(f"Unknown J-DiT config fields {unknown}; known: {sorted(full.keys())}.")
  full.update(config)
  if full.hidden_size % full.num_heads or full.num_heads % full.num_kv_heads:
    raise ValueError(
      f"hidden_size {full.hidden_size} must be a multiple of num_heads {full.num_heads}, "
      f"and num_heads a multiple of num_kv_heads {full.num_kv_heads}."
    )
  return full


def released_key(path: tuple[str, ...], layer: int | None = None) -> str:
  """Released name of a Flax param path; `layer` fills in the scanned 'blocks' axis."""
  parts = []
  for part in path[:-1]:
    if part == "blocks":
      part = f"blocks.{layer}"
    elif part.startswith("blocks_"):
      part = "blocks." + part.removeprefix("blocks_")
    parts.append(_MODULE_RENAMES.get(part, part))
  parts.append(_LEAF_RENAMES.get(path[-1], path[-1]))
  return ".".join(parts)


def _expected_params(module, config):
  """Flax param shapes of the model, without allocating anything."""
  p, ch = config.patch_size, config.in_channels
  latents = jax.ShapeDtypeStruct((1, 1, p, p, ch), np.float32)
  t = jax.ShapeDtypeStruct((1,), np.float32)
  variables = jax.eval_shape(module.init, jax.random.key(0), latents, t, latents)
  return nn.unbox(variables["params"])


def _plan(expected, depth):
  """[(flax path, released keys, per-key Flax shape, dtype)] for every parameter.

  Scanned block params take one released key per layer and stack them.
  """
  plan = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(expected)[0]:
    names = tuple(k.key for k in path)
    if names[0] == "blocks":
      plan.append(
        (names, [released_key(names, i) for i in range(depth)], leaf.shape[1:], leaf.dtype)
      )
    else:
      plan.append((names, [released_key(names)], leaf.shape, leaf.dtype))
  return plan


def _is_kernel(names):
  """PyTorch Linear weights (out, in) become Flax kernels (in, out)."""
  return names[-1] == "kernel"


def _check(plan, file_shapes, path):
  """Raises ValueError listing every missing, unexpected and mismatched key."""
  wanted = {}
  for names, keys, shape, _ in plan:
    for key in keys:
      wanted[key] = tuple(shape)[::-1] if _is_kernel(names) else tuple(shape)  # released
  tree_fit.check_fits(
    file_shapes, wanted, path, "check hidden_size, depth, num_heads, num_kv_heads"
  )


def load_released_jdit(path: str | os.PathLike, config: ml_collections.ConfigDict):
  """Reads the released J-DiT safetensors into (JDiT module, params).

  Args:
    path: the released `lavin_dit.safetensors` (or a file in its key layout).
    config: needs hidden_size, depth, num_heads, num_kv_heads; every other field
      defaults to the released 3.4B model (sandwich norm on), compute dtype float32.
      `scan_layers` picks the scanned or unscanned parameter layout.

  Returns:
    (module, params): `module.apply({'params': params}, x_t, t, cond)` is the velocity.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No J-DiT checkpoint at {path!r} (want lavin_dit.safetensors).")
  config = released_config(config)
  module = jdit.JDiT(config)
  expected = _expected_params(module, config)
  plan = _plan(expected, config.depth)
  with safetensors_file.open_file(path) as f:
    file_shapes = {k: f.shape(k) for k in f.keys()}
    _check(plan, file_shapes, path)
    flat = {}
    for names, keys, _, dtype in plan:
      arrays = [np.asarray(f.array(k), dtype) for k in keys]
      arrays = [a.T if _is_kernel(names) else a for a in arrays]
      flat[names] = np.stack(arrays) if names[0] == "blocks" else arrays[0]
  return module, _unflatten(flat)


def _unflatten(flat):
  tree = {}
  for names, value in flat.items():
    node = tree
    for name in names[:-1]:
      node = node.setdefault(name, {})
    node[names[-1]] = value
  return tree
