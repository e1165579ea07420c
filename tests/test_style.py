"""The committed lint and format settings (ruff.toml) hold for the whole tree."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", [("check",), ("format", "--check")])
def test_ruff_passes(command):
  proc = subprocess.run(
    [sys.executable, "-m", "ruff", *command, "."],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
    check=False,
  )
  assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
