r"""The end-to-end demo (lavin_jax.demo): data, ST-VAE, J-DiT, evaluation, report.

  python launch/demo.py --workdir=/tmp/lavin_demo
  python launch/demo.py --config=configs/demo.py:smoke --workdir=/tmp/lavin_smoke
  python launch/demo.py --workdir=/tmp/lavin_demo --config.scale=2   # longer, better

Installed, the same is `lavin-demo --workdir=...`. A workdir with a finished stage
skips it; an interrupted training stage resumes from its last checkpoint.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from lavin_jax import demo

_CONFIG = config_flags.DEFINE_config_file("config", "configs/demo.py:default",
                                          "Demo config, configs/demo.py:default|smoke.")
_WORKDIR = flags.DEFINE_string("workdir", "lavin_demo", "Output directory; resumes.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  demo.run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
