"""A training checkpoint's EMA params and config -> an inference bundle that samples."""

import pathlib
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
import tiny_model

from lavin_jax.configs import train_dit
from lavin_jax.inference import pipeline as pipeline_lib
from lavin_jax.io import bundle
from lavin_jax.train import checkpoint
from lavin_jax.train import export

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A workdir with checkpoints at steps 1 and 2 (EMA params differ), and a VAE bundle."""
  root = tmp_path_factory.mktemp("export")
  models = tiny_model.tiny_model_config()
  config = train_dit.get_config("tiny,runlocal")
  config.model, config.vae = models.jdit, models.stvae
  config.vae.latent_shift = 0.25  # fitted to the data by a run: the bundle must keep it
  jdit_params, vae_params = tiny_model.tiny_model_params(models)
  bundle.save_bundle(
    root / "vae", ml_collections.ConfigDict({"stvae": models.stvae}), None, vae_params
  )
  emas = {}
  with checkpoint.CheckpointManager(root / "dit" / "checkpoints", save_every=1) as ckpt:
    for step in (1, 2):
      emas[step] = jax.tree.map(lambda x, s=step: x * s, jdit_params)
      state = {"params": jdit_params, "ema_params": emas[step], "step": np.int32(step)}
      ckpt.save(step, state, config=config)
  return root, emas


def test_export_writes_the_ema_params_and_the_training_configs(run, tmp_path):
  root, emas = run
  step = export.export_checkpoint(root / "dit", tmp_path / "b", vae=str(root / "vae"), dtype=None)
  assert step == 2
  config, params = bundle.load_bundle(tmp_path / "b")
  assert config.stvae.latent_shift == 0.25
  for got, want in zip(jax.tree.leaves(params["jdit"]), jax.tree.leaves(emas[2])):
    np.testing.assert_array_equal(got, want)
  export.export_checkpoint(
    root / "dit" / "checkpoints", tmp_path / "b1", step=1, vae=str(root / "vae")
  )
  pipe = pipeline_lib.Pipeline.from_bundle(tmp_path / "b1")
  images = np.zeros((1, 1, 1, 32, 32, 3), np.float32)
  assert np.isfinite(pipe(images, images, images[:, 0], num_steps=2)).all()


@pytest.mark.parametrize(
  "kwargs, error, match",
  [
    (dict(), ValueError, "give --vae"),
    (dict(vae="missing"), FileNotFoundError, "No ST-VAE"),
    (dict(step=7), FileNotFoundError, "step 7"),
  ],
)
def test_bad_input_is_named(run, tmp_path, kwargs, error, match):
  with pytest.raises(error, match=match):
    export.export_checkpoint(run[0] / "dit", tmp_path / "b", **kwargs)
  assert not (tmp_path / "b").exists()


def test_the_command_line(run, tmp_path):
  root, _ = run
  command = [
    sys.executable,
    str(ROOT / "launch" / "export_bundle.py"),
    f"--output={tmp_path / 'b'}",
  ]
  done = subprocess.run(
    command + [f"--workdir={tmp_path / 'nothing'}"],
    capture_output=True,
    text=True,
    cwd=ROOT,
    timeout=300,
  )
  assert done.returncode == 1 and "error: No checkpoint directory" in done.stderr
  done = subprocess.run(
    command + [f"--workdir={root / 'dit'}", f"--vae={root / 'vae'}"],
    capture_output=True,
    text=True,
    cwd=ROOT,
    timeout=300,
  )
  assert done.returncode == 0, done.stderr[-2000:]
  assert '"step": 2' in done.stdout and (tmp_path / "b" / bundle.CONFIG_FILE).exists()
