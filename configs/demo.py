r"""The end-to-end demo: a small LaVin-DiT trained and evaluated on one CPU machine.

  lavin-demo --workdir=/tmp/lavin_demo                        # stage times: metrics.json
  lavin-demo --workdir=/tmp/lavin_demo --config.scale=0.25    # shorter, weaker
  python launch/demo.py --config=configs/demo.py:smoke --workdir=/tmp/lavin_smoke

The argument is `default` or `smoke` (a run of well under a minute that checks every
output is produced, not that anything is learned). `--config.scale` multiplies the
training steps of both models. Data: the built-in rendered scenes (no download).
"""

from lavin_jax import configs


def get_config(arg: str = "default"):
  return configs.demo(arg)
