"""Every number of the package: model sizes, task table, data, flow and job configs.

Job configs are `get_config(arg)` files in big_vision's form; launch scripts take them as
`--config=lavin_jax/configs/train_dit.py:0.1b` plus `--config.<field>=<value>` overrides:

  models.py     J-DiT and ST-VAE size tables (`jdit(size)`, `stvae(size)`)
  tasks.py      the task table (media, annotations read, metric families) and options
  data.py       the data pipeline's, the stored latents' and the paper mixture's defaults
  flow.py       rectified-flow training settings
  train_dit.py  J-DiT training          (get_config: '<size>[,runlocal][,paper]')
  train_vae.py  ST-VAE training         (get_config: 'demo' | 'tiny' | 'small' | 'released')
  evaluate.py   an evaluation run       (get_config: '')
  demo.py       the end-to-end demo     (get_config: 'default' | 'smoke')

Config modules import only config modules.
"""

import pathlib

from lavin_jax.configs.models import JDIT_SIZES
from lavin_jax.configs.models import STVAE_SIZES
from lavin_jax.configs.models import jdit
from lavin_jax.configs.models import stvae


def path(name: str) -> str:
  """The file of job config `name` (e.g. 'train_dit'), for `config_flags` defaults."""
  file = pathlib.Path(__file__).with_name(f"{name}.py")
  if not file.is_file():
    raise ValueError(f"No config file {name!r} in {file.parent}.")
  return str(file)


__all__ = ["JDIT_SIZES", "STVAE_SIZES", "jdit", "path", "stvae"]
