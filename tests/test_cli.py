"""Entry points report a user's mistake as one line, with no traceback."""

import os
import pathlib
import subprocess
import sys

from absl import flags
import pytest

from lavin_jax import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _launch(script, *args, **env):
  return subprocess.run(
    [sys.executable, str(ROOT / "launch" / script), *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
    env={**os.environ, "JAX_PLATFORMS": "cpu", **env},
  )


def test_one_line_joins_a_multi_line_message():
  error = ValueError("x.pt does not fit the model (check):\n  missing (1): ['a']\n")
  assert cli.one_line(error) == "error: x.pt does not fit the model (check): missing (1): ['a']"
  assert cli.one_line(OSError()) == "error: OSError"


def test_a_bad_input_is_one_line_and_a_failure(tmp_path):
  proc = _launch("convert.py", f"--output={tmp_path / 'bundle'}", "--dit_path=/nowhere.st")
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1] == ("error: --dit_path: no file at '/nowhere.st'.")
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "bundle").exists()


@pytest.mark.parametrize("debug", [("--debug",), ()])
def test_debug_shows_the_traceback(tmp_path, debug):
  env = {} if debug else {cli.DEBUG_ENV: "1"}
  proc = _launch(
    "convert.py", f"--output={tmp_path / 'b'}", "--dit_path=/nowhere.st", *debug, **env
  )
  assert proc.returncode != 0 and "Traceback" in proc.stderr
  assert "FileNotFoundError: --dit_path: no file at '/nowhere.st'." in proc.stderr


def test_a_bug_keeps_its_traceback(monkeypatch, capsys):
  monkeypatch.setattr(sys, "argv", ["prog"])
  if "debug" in flags.FLAGS:
    monkeypatch.setattr(flags.FLAGS, "debug", False)

  def buggy(argv):
    del argv
    raise KeyError("a bug")

  with pytest.raises(KeyError, match="a bug"):
    cli.run(buggy)

  def mistaken(argv):
    del argv
    raise ValueError("--size must be one of tiny, 0.1b")

  with pytest.raises(SystemExit) as exit_info:
    cli.run(mistaken)
  assert exit_info.value.code == 1
  assert capsys.readouterr().err == "error: --size must be one of tiny, 0.1b\n"


@pytest.mark.parametrize(
  "args, message",
  [
    (
      ("--config=lavin_jax/configs/train_dit.py:2b",),
      "error: Unknown config argument '2b' in '2b'; choose one of tiny, 0.1b, 1b, 3.4b.",
    ),
    (
      ("--config=lavin_jax/configs/train_dit.py:tiny", "--config.total_stepz=3"),
      'error: no config field \'total_stepz\' Did you mean "total_steps" instead of "total_stepz"?',
    ),
    (
      ("--config=lavin_jax/configs/train_dit.py:tiny", "--config.total_steps=abc"),
      "error: flag --config.total_steps=abc: invalid literal for int() with base 10: 'abc'",
    ),
    (("--bogus=1",), "error: Unknown command line flag 'bogus'"),
  ],
)
def test_bad_flags_and_config_overrides_are_one_line(tmp_path, args, message):
  proc = _launch("train_dit.py", *args, f"--workdir={tmp_path}")
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines() == [message + " (--helpshort lists the flags)"]
  assert not any(tmp_path.iterdir())
