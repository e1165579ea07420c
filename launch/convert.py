r"""Converts the released LaVin-DiT checkpoints into an inference bundle.

  python launch/convert.py --dit_path=/path/to/lavin_dit.safetensors \
      --vae_path=/path/to/stvae.pt --output=/path/to/lavin_bundle

`--size` is the J-DiT size (default 3.4b, the released model; lavin_jax.configs.
JDIT_SIZES). Either checkpoint may be left out; the bundle then holds only the other
model. `--dtype=bfloat16` halves the bundle. Read it back with lavin_jax.io.bundle.
"""

import json

from absl import app
from absl import flags

from lavin_jax import cli
from lavin_jax import configs
from lavin_jax.convert import bundle

_DIT_PATH = flags.DEFINE_string("dit_path", None, "Released lavin_dit.safetensors.")
_VAE_PATH = flags.DEFINE_string("vae_path", None, "Released stvae.pt.")
_OUTPUT = flags.DEFINE_string("output", None, "Bundle directory to write.")
_SIZE = flags.DEFINE_enum("size", "3.4b", configs.JDIT_SIZES, "J-DiT size of --dit_path.")
_STVAE_SIZE = flags.DEFINE_enum(
  "stvae_size", "released", configs.STVAE_SIZES, "ST-VAE size of --vae_path."
)
_DTYPE = flags.DEFINE_enum(
  "dtype", None, ["float32", "bfloat16"], "Store floating params in this dtype."
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  counts = bundle.convert_to_bundle(
    _OUTPUT.value,
    dit_path=_DIT_PATH.value,
    vae_path=_VAE_PATH.value,
    size=_SIZE.value,
    stvae_size=_STVAE_SIZE.value,
    dtype=_DTYPE.value,
  )
  print(json.dumps(counts))


if __name__ == "__main__":
  flags.mark_flags_as_required(["output"])
  cli.run(main)
