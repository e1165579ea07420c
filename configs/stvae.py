r"""ST-VAE architecture for scripts that take a model config (benchmark, conversion).

  python bench/stvae.py --config=configs/stvae.py:released
  python bench/stvae.py --config=configs/stvae.py:small --config.dtype=bfloat16

The argument is a size of lavin_jax.configs.stvae: released (the 215.6M-parameter
model), small or tiny. Tiling defaults (512 px tiles, 25% overlap, 129-frame chunks)
are fields too: --config.tile_sample_size=256.
"""

import ml_collections

from lavin_jax import configs


def get_config(arg: str = "released") -> ml_collections.ConfigDict:
  return configs.stvae(arg or "released")
