r"""Scores an in-context model on a data source with the task's metrics.

  # An inference bundle on the built-in synthetic stills:
  python launch/evaluate.py --bundle=/path/to/bundle --output=eval/ \
      --config=lavin_jax/configs/evaluate.py:depth_estimation \
      --config.source=synthetic:small,split=validation --config.resolution=128
  # The released weights on one of the paper's protocols (NYUv2 depth, Eigen crop):
  python launch/evaluate.py --vae_path=stvae.pt --dit_path=lavin_dit.safetensors \
      --output=eval/ --config=lavin_jax/configs/evaluate.py:nyuv2_depth

The argument is a task or a protocol (lavin_jax.configs.evaluate.PROTOCOLS). Writes
<output>/<task>.json and <task>.png (a protocol: per run, under <output>/<run>/, and
its figures in <output>/<protocol>_summary.json) and prints the metrics as one JSON line.
LPIPS and FID are computed, for the tasks scored by them, only when --config.lpips_vgg
and --config.lpips_lin or --config.fid_weights name the weight files (nothing is
downloaded). Every input is checked before the model is loaded.
"""

import json

from absl import app
from absl import flags
from ml_collections import config_flags

from lavin_jax import cli
from lavin_jax import configs
from lavin_jax.eval import model_eval
from lavin_jax.inference import loading

_CONFIG = config_flags.DEFINE_config_file(
  "config", configs.path("evaluate"), "Evaluation settings: evaluate.py:<task or protocol>."
)
_OUTPUT = flags.DEFINE_string("output", None, "Output directory.")
_BUNDLE = flags.DEFINE_string("bundle", None, "Inference bundle directory.")
_VAE_PATH = flags.DEFINE_string("vae_path", None, "Released stvae.pt (with --dit_path).")
_DIT_PATH = flags.DEFINE_string("dit_path", None, "Released lavin_dit.safetensors.")
_SIZE = flags.DEFINE_enum("size", "3.4b", configs.JDIT_SIZES, "J-DiT size of --dit_path.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}.")
  model = loading.ModelFiles(_BUNDLE.value, _VAE_PATH.value, _DIT_PATH.value, _SIZE.value)
  report = model_eval.evaluate_model(_CONFIG.value, model, _OUTPUT.value)
  protocol = {"protocol": report["protocol"]} if "protocol" in report else {}
  print(json.dumps({**protocol, "task": report["task"], **report["metrics"]}))


if __name__ == "__main__":
  flags.mark_flags_as_required(["output"])
  cli.run(main)
