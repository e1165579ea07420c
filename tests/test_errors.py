"""A user's mistakes at the command line: one line, a failure status, nothing written.

Each case runs the real entry point (launch/*.py) in a subprocess and checks that it
ends with exactly one `error: ...` line naming the problem, exit status 1, no
traceback, and no output file or folder where the output would have gone.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
from safetensors.numpy import save_file
import tiny_model
import torch_files

from lavin_jax.io import bundle

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _png(path, seed=0, size=(20, 24)):
  rng = np.random.default_rng(seed)
  Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(path)
  return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  root = tmp_path_factory.mktemp("inputs")
  config = tiny_model.tiny_model_config()
  bundle.save_bundle(root / "bundle", config, *tiny_model.tiny_model_params(config))
  (root / "task").mkdir()
  _png(root / "task" / "a_input.png")
  _png(root / "task" / "a_target.png", 1)
  (root / "lonely").mkdir()
  _png(root / "lonely" / "b_input.png")
  _png(root / "query.png", 2)
  (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
  (root / "broken_bundle").mkdir()
  (root / "broken_bundle" / bundle.CONFIG_FILE).write_text("{jdit: ")
  save_file({"w": np.ones((64, 64), np.float32)}, str(root / "whole.safetensors"))
  data = (root / "whole.safetensors").read_bytes()
  (root / "truncated.safetensors").write_bytes(data[: len(data) // 2])
  (root / "random.pt").write_bytes(os.urandom(512))
  torch_files.save({"state_dict": {"w": np.ones(2, np.float32)}}, root / "good.pt")
  # A torch.save file whose pickle would run a shell command when loaded.
  shell = torch_files.Call(torch_files.Global("os", "system"), (f"touch {root / 'pwned'}",))
  torch_files.save({"state_dict": {"w": shell}}, root / "evil.pt")
  return root


def _sample(f, **flags):
  args = dict(
    bundle=f / "bundle",
    task_dir=f / "task",
    query=f / "query.png",
    height=16,
    width=16,
    timesteps=2,
    num_prompt=1,
    output=f / "out" / "pred.png",
  )
  args.update(flags)
  return ("sample.py", *(f"--{k}={v}" for k, v in args.items() if v is not None))


CASES = {
  "missing query": (lambda f: _sample(f, query=f / "missing.png"), "No query image"),
  "corrupt query": (lambda f: _sample(f, query=f / "corrupt.png"), "Cannot read image"),
  "missing template folder": (lambda f: _sample(f, task_dir=f / "nowhere"), "does not exist"),
  "input without target": (lambda f: _sample(f, task_dir=f / "lonely"), "unmatched"),
  "height not a multiple": (lambda f: _sample(f, height=40), "multiples of 16"),
  "no prompt": (lambda f: _sample(f, num_prompt=0), "--num_prompt must be >= 1"),
  "one time point": (lambda f: _sample(f, timesteps=1), "--timesteps counts"),
  "nan guidance": (lambda f: _sample(f, cfg_scale="nan"), "--cfg_scale must be a finite"),
  "inf guidance": (lambda f: _sample(f, cfg_scale="inf"), "--cfg_scale must be a finite"),
  "missing bundle": (lambda f: _sample(f, bundle=f / "nowhere"), "no inference bundle"),
  "bundle config not json": (
    lambda f: _sample(f, bundle=f / "broken_bundle"),
    "is not a JSON object",
  ),
  "truncated safetensors": (
    lambda f: (
      "convert.py",
      f"--dit_path={f / 'truncated.safetensors'}",
      "--size=tiny",
      f"--output={f / 'out'}",
    ),
    "truncated.safetensors is not a readable",
  ),
  "random bytes .pt": (
    lambda f: (
      "convert.py",
      f"--vae_path={f / 'random.pt'}",
      "--stvae_size=tiny",
      f"--output={f / 'out'}",
    ),
    "random.pt",
  ),
  "pickle running a command": (
    lambda f: (
      "convert.py",
      f"--vae_path={f / 'evil.pt'}",
      "--stvae_size=tiny",
      f"--output={f / 'out'}",
    ),
    "os.system",
  ),
  "unknown config size": (
    lambda f: (
      "train_dit.py",
      "--config=lavin_jax/configs/train_dit.py:2b",
      f"--workdir={f / 'out'}",
    ),
    "Unknown config argument '2b'",
  ),
  "negative steps": (
    lambda f: (
      "train_dit.py",
      "--config=lavin_jax/configs/train_dit.py:tiny,runlocal",
      "--config.total_steps=-5",
      f"--workdir={f / 'out'}",
    ),
    "config.total_steps must be >= 1",
  ),
  "missing image folder": (
    lambda f: (
      "train_vae.py",
      "--config=lavin_jax/configs/train_vae.py:tiny",
      f"--config.source=folder:{f / 'nowhere'}",
      f"--workdir={f / 'out'}",
    ),
    "nowhere",
  ),
  "unknown task": (
    lambda f: (
      "evaluate.py",
      f"--bundle={f / 'bundle'}",
      "--config.task=depth",
      "--config.source=photos",
      f"--output={f / 'out'}",
    ),
    "Unknown task 'depth'",
  ),
  "zero scale": (
    lambda f: ("demo.py", "--config.scale=0", f"--workdir={f / 'out'}"),
    "config.scale multiplies the training steps and must be a positive number",
  ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_mistake_is_one_line_and_writes_nothing(files, case):
  command, message = CASES[case]
  script, *args = command(files)
  proc = subprocess.run(
    [sys.executable, str(ROOT / "launch" / script), *map(str, args)],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
  )
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
  assert not (files / "out").exists()
  assert not (files / "pwned").exists()
