r"""J-DiT model config: the architecture of one size, for tools that need only the model.

Convert the released weights into an inference bundle (3.4B is the released size):

  python launch/convert.py --config=configs/jdit.py:3.4b \
      --dit_path=/path/to/lavin_dit.safetensors --vae_path=/path/to/stvae.pt \
      --output=/path/to/lavin_bundle

The argument is a size in {tiny, 0.1b, 1b, 3.4b} (default 3.4b); every field can be
overridden, e.g. `--config.scan_layers=False --config.attention_impl=blockwise`. The numbers
live in lavin_jax/configs.py (`jdit(size)`): hidden size, depth, heads, kv heads, drop path
and sandwich norm per paper Table 3; compute dtype bfloat16, params float32.
"""

import ml_collections

from lavin_jax import configs


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The J-DiT architecture config for the size `arg` (default 3.4b)."""
  return configs.jdit((arg or "3.4b").strip())
