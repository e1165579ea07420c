"""The released checkpoints -> one inference bundle (launch/convert.py)."""

import os
from typing import Optional

import jax
import ml_collections
import numpy as np

from lavin_jax.configs import models as model_configs
from lavin_jax.convert import jdit as convert_jdit
from lavin_jax.convert import stvae as convert_stvae
from lavin_jax.io import bundle as bundle_lib


def _count(params) -> int:
  return int(sum(np.size(a) for a in jax.tree.leaves(params)))


def convert_to_bundle(
  output,
  *,
  dit_path: Optional[str] = None,
  vae_path: Optional[str] = None,
  size: str = "3.4b",
  stvae_size: str = "released",
  dtype: Optional[str] = None,
) -> dict:
  """Writes the released J-DiT and/or ST-VAE files as a bundle at `output`.

  Args:
    output: the bundle directory (replaced atomically). The files are read tensor by
      tensor into `dtype`, so the peak memory stays near the size of the params.
    dit_path: released `lavin_dit.safetensors` (or a file in its layout) at `size`.
    vae_path: released `stvae.pt` (or .safetensors) at `stvae_size`.
    dtype: optional dtype of the stored floating params (e.g. 'bfloat16').

  Returns:
    {'bundle': output, 'jdit_params': count, 'stvae_params': count}.
  """
  if not (dit_path or vae_path):
    raise ValueError("Give --dit_path, --vae_path or both.")
  config = ml_collections.ConfigDict(
    {"jdit": model_configs.jdit(size), "stvae": model_configs.stvae(stvae_size)}
  )
  if dtype not in (None, "float32", "bfloat16"):
    raise ValueError(f"--dtype must be float32 or bfloat16; got {dtype!r}.")
  for flag, path in (("--dit_path", dit_path), ("--vae_path", vae_path)):
    if path and not os.path.isfile(path):
      raise FileNotFoundError(f"{flag}: no file at {path!r}.")
  if dtype is not None:  # read every tensor straight into the stored dtype
    config.jdit.param_dtype = config.stvae.param_dtype = dtype
  jdit_params = stvae_params = None
  if dit_path:
    module, jdit_params = convert_jdit.load_released_jdit(dit_path, config.jdit)
    config.jdit = module.config
  if vae_path:
    module, stvae_params = convert_stvae.load_released_stvae(vae_path, config.stvae)
    config.stvae = module.config
  bundle_lib.save_bundle(output, config, jdit_params, stvae_params, dtype=dtype)
  return {
    "bundle": os.fspath(output),
    "jdit_params": _count(jdit_params),
    "stvae_params": _count(stvae_params),
  }
