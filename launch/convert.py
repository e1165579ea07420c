r"""Converts the released LaVin-DiT checkpoints into an inference bundle.

  python launch/convert.py --dit_path=/path/to/lavin_dit.safetensors \
      --vae_path=/path/to/stvae.pt --output=/path/to/lavin_bundle

The J-DiT architecture is `--size` (default 3.4b, the released model) or a config file,
`--config=configs/jdit.py:3.4b` with `--config.<field>=...` overrides. Either checkpoint may
be left out; the bundle then holds only the other model. `--dtype=bfloat16` halves the
bundle. Read it back with `lavin_jax.inference.bundle.load_bundle`.
"""

import json

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np

from lavin_jax import configs
from lavin_jax import convert
from lavin_jax.inference import bundle

_DIT_PATH = flags.DEFINE_string("dit_path", None, "Released lavin_dit.safetensors.")
_VAE_PATH = flags.DEFINE_string("vae_path", None, "Released stvae.pt.")
_OUTPUT = flags.DEFINE_string("output", None, "Bundle directory to write.", required=True)
_SIZE = flags.DEFINE_enum("size", "3.4b", ["tiny", "0.1b", "1b", "3.4b"],
                          "J-DiT size, unless --config is given.")
_STVAE_SIZE = flags.DEFINE_enum("stvae_size", "released", ["released", "small", "tiny"],
                                "ST-VAE size.")
_DTYPE = flags.DEFINE_string("dtype", None, "Store floating params in this dtype.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "J-DiT model config, e.g. configs/jdit.py:3.4b.", lock_config=False)


def _count(params):
  return int(sum(np.size(a) for a in jax.tree.leaves(params)))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not (_DIT_PATH.value or _VAE_PATH.value):
    raise app.UsageError("Give --dit_path, --vae_path or both.")
  config = ml_collections.ConfigDict({
      "jdit": _CONFIG.value or configs.jdit(_SIZE.value),
      "stvae": configs.stvae(_STVAE_SIZE.value),
  })
  jdit_params = stvae_params = None
  if _DIT_PATH.value:
    module, jdit_params = convert.load_released_jdit(_DIT_PATH.value, config.jdit)
    config.jdit = module.config
    logging.info("J-DiT: %d params from %s", _count(jdit_params), _DIT_PATH.value)
  if _VAE_PATH.value:
    module, stvae_params = convert.load_released_stvae(_VAE_PATH.value, config.stvae)
    config.stvae = module.config
    logging.info("ST-VAE: %d params from %s", _count(stvae_params), _VAE_PATH.value)
  bundle.save_bundle(_OUTPUT.value, config, jdit_params, stvae_params, dtype=_DTYPE.value)
  print(json.dumps({"bundle": _OUTPUT.value, "jdit_params": _count(jdit_params),
                    "stvae_params": _count(stvae_params)}))


if __name__ == "__main__":
  app.run(main)
