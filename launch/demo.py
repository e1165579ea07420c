r"""The end-to-end demo (lavin_jax.demo): data, ST-VAE, J-DiT, evaluation, report.

  python launch/demo.py --workdir=/tmp/lavin_demo
  python launch/demo.py --config=lavin_jax/configs/demo.py:smoke --workdir=/tmp/lavin_smoke
  python launch/demo.py --workdir=/tmp/lavin_demo --config.scale=2   # longer, better

Installed, the same is `lavin-demo --workdir=...`. A workdir with a finished stage
skips it; an interrupted training stage resumes from its last checkpoint.
"""

from lavin_jax import demo

if __name__ == "__main__":
  demo.cli()
