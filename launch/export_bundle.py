r"""Writes an inference bundle from a J-DiT training checkpoint's EMA parameters.

  python launch/export_bundle.py --workdir=runs/dit_0.1b --output=bundles/dit_0.1b
  # A run whose config names no ST-VAE file (e.g. trained on stored latents):
  python launch/export_bundle.py --workdir=/tmp/lavin_demo/dit \
      --vae=/tmp/lavin_demo/vae_bundle --output=/tmp/lavin_demo/bundle_1750 --step=1750

`--workdir` is the training workdir (or its checkpoints/ folder); the latest complete
step is exported unless `--step` names one. The checkpoint is only read, so a run may
still be training there. The training config saved with the checkpoint gives the model
and the ST-VAE config; `--vae` (a bundle or the released stvae.pt) overrides its
vae_checkpoint. Sample from the bundle with launch/sample.py --bundle.
"""

import json

from absl import app
from absl import flags

from lavin_jax import cli
from lavin_jax.train import export

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir or its checkpoints folder.")
_OUTPUT = flags.DEFINE_string("output", None, "Bundle directory to write.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step; the latest by default.")
_VAE = flags.DEFINE_string("vae", None, "ST-VAE: a bundle or stvae.pt (default: the config's).")
_DTYPE = flags.DEFINE_enum(
  "dtype", "bfloat16", ["float32", "bfloat16"], "Store floating params in this dtype."
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  step = export.export_checkpoint(
    _WORKDIR.value, _OUTPUT.value, step=_STEP.value, vae=_VAE.value, dtype=_DTYPE.value
  )
  print(json.dumps({"bundle": _OUTPUT.value, "step": step}))


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir", "output"])
  cli.run(main)
