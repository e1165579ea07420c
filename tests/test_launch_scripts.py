"""The cluster launch scripts' command lines: their configs parse, check and fit their data.

Each script's `python launch/train_dit.py ...` command is read from the file, its shell
variables filled in, and its flags parsed by ml_collections' config flags as the
entry point parses them; then `dit.check_config` runs on the result, with the one
argument the usage adds (an ST-VAE; here the random one), and every synthetic
source must render at least the config's resolution.
"""

import pathlib
import re
import shlex

from absl import flags
from ml_collections import config_flags
import pytest

from lavin_jax.data import specs
from lavin_jax.data import synthetic
from lavin_jax.train import dit

ROOT = pathlib.Path(__file__).resolve().parents[1]


def command_flags(script: pathlib.Path, **variables) -> list[str]:
  """The --flags of the script's `python launch/train_dit.py` command, variables filled in."""
  text = script.read_text()
  match = re.search(r"python launch/train_dit\.py((?:[^\n]*\\\n)*[^\n]*)", text)
  assert match, f"{script.name} runs no launch/train_dit.py"
  command = match.group(1).replace("\\\n", " ")
  for name, value in variables.items():
    command = command.replace("${" + name + "}", value)
  return [arg for arg in shlex.split(command) if arg.startswith("--config")]


def parse_config(args: list[str]):
  argv = ["train_dit.py", *args]
  values = flags.FlagValues()
  # sys_argv: the config flag defines its --config.* overrides from these arguments.
  holder = config_flags.DEFINE_config_file("config", None, "", flag_values=values, sys_argv=argv)
  values(argv)
  return holder.value


@pytest.mark.parametrize("size", ["0.1b", "3.4b"])
def test_slurm_command_config_checks_and_fits_its_data(size, monkeypatch):
  monkeypatch.chdir(ROOT)  # the config path is relative to the repository
  args = command_flags(ROOT / "launch" / "slurm_train_dit.sh", size=size)
  assert args[0].startswith("--config=lavin_jax/configs/train_dit.py:")
  config = parse_config(args + ["--config.vae_random_init=true"])
  dit.check_config(config)
  assert config.model.hidden_size == {"0.1b": 512, "3.4b": 2304}[size]
  used = dit.source_specs(config)
  assert used, "the command trains on no source"
  for name, spec in used.items():
    fields = specs.parse_spec(spec)
    assert fields["kind"] == "synthetic", f"{name}: {spec} (a built-in source is expected here)"
    built = next(c for c in synthetic.CONFIGS if c.name == fields.get("name", "small"))
    assert built.image_size >= config.data.resolution, (spec, built.image_size)
