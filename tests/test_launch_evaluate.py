"""Evaluation of a model's files: a tiny bundle on the synthetic data set (launch/evaluate.py).

Bad settings, sources and files fail before the model is loaded.
"""

import json
import pathlib
import subprocess
import sys

import pytest
import tiny_model

from lavin_jax.configs import evaluate as evaluate_configs
from lavin_jax.data import specs
from lavin_jax.eval import model_eval
from lavin_jax.inference import loading
from lavin_jax.io import bundle

ROOT = pathlib.Path(__file__).parent.parent
RES = 32


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
  """Spec of the built-in synthetic stills, config 'tiny' (8 train examples, 32 px)."""
  spec = f"synthetic:tiny,split=images,data_dir={tmp_path_factory.mktemp('tfds')}"
  assert len(specs.get_source(spec)) == 8  # Builds it once.
  return spec


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
  config = tiny_model.tiny_model_config()
  path = tmp_path_factory.mktemp("model") / "bundle"
  bundle.save_bundle(path, config, *tiny_model.tiny_model_params(config))
  return path


def _config(synthetic_spec, **overrides):
  c = evaluate_configs.get_config("depth_estimation")
  c.update(dict(source=synthetic_spec, num_examples=2, num_pairs=2, batch_size=2, resolution=RES))
  c.sampling.num_steps = 3
  for key, value in overrides.items():
    target = c.sampling if key in c.sampling else c.task_options if key == "num_frames" else c
    target[key] = value
  return c


def test_bundle_end_to_end(bundle_dir, synthetic, tmp_path):
  config = _config(synthetic, seed=3)
  report = model_eval.evaluate_model(
    config, loading.ModelFiles(bundle=str(bundle_dir)), tmp_path / "out"
  )
  assert report == json.loads((tmp_path / "out" / "depth_estimation.json").read_text())
  assert set(report["metrics"]) == {"abs_rel", "delta1"}
  assert (report["num_examples"], report["num_pairs"], report["seed"]) == (2, 2, 3)
  assert report["run"]["bundle"] == str(bundle_dir)
  assert (report["run"]["num_steps"], report["run"]["cfg_scale"]) == (3, 1.5)
  assert (tmp_path / "out" / "depth_estimation.png").is_file()


def test_a_protocol_end_to_end(bundle_dir, synthetic, tmp_path):
  config = evaluate_configs.get_config("colorization")
  config.update(dict(source=synthetic, num_examples=3, num_pairs=2, batch_size=2, resolution=RES))
  config.sampling.num_steps = 2
  summary = model_eval.evaluate_model(
    config, loading.ModelFiles(bundle=str(bundle_dir)), tmp_path / "out"
  )
  written = json.loads((tmp_path / "out" / "colorization_summary.json").read_text())
  assert summary == written and summary["protocol"] == "colorization"
  assert set(summary["metrics"]) == {"mse"}
  assert summary["skipped_metrics"] == {"lpips": "no LPIPS weight files given"}
  run = json.loads((tmp_path / "out" / "colorization.json").read_text())  # The one run.
  assert summary["runs"] == {"": run["metrics"]} and len(run["examples"]) == 3


def test_the_command_line_prints_the_metrics(bundle_dir, synthetic, tmp_path):
  out = subprocess.run(
    [
      sys.executable,
      str(ROOT / "launch" / "evaluate.py"),
      f"--bundle={bundle_dir}",
      f"--output={tmp_path / 'out'}",
      f"--config.source={synthetic}",
      "--config.num_examples=2",
      "--config.num_pairs=2",
      f"--config.resolution={RES}",
      "--config.sampling.num_steps=2",
      "--config.task=depth_estimation",
    ],
    capture_output=True,
    text=True,
    check=True,
    timeout=600,
  )
  printed = json.loads(out.stdout.strip().splitlines()[-1])
  report = json.loads((tmp_path / "out" / "depth_estimation.json").read_text())
  assert printed == {"task": "depth_estimation", **report["metrics"]}


@pytest.mark.parametrize(
  "overrides, error, match",
  [
    (dict(task="depth"), ValueError, "Unknown task 'depth'"),
    (dict(source="photos"), ValueError, "source does not fit.*needs 'depth'"),
    (dict(context_source="photos"), ValueError, "context source does not fit"),
    (dict(source="nope:x"), ValueError, "Unknown source kind 'nope'"),
    (dict(source=""), ValueError, "Set config.source"),
    (dict(task="video_depth"), ValueError, "needs 'video'"),
    (dict(task="video_depth", num_frames=4), ValueError, r"num_frames must be 1 \+ 4k"),
    (dict(resolution=40), ValueError, "multiple of 16"),
    (dict(resolution=48), ValueError, "smaller than the resolution 48"),
    (dict(num_examples=9), ValueError, "source has only 8"),
    (dict(num_steps=1), ValueError, "num_steps"),
    (dict(cfg_scale=float("nan")), ValueError, "cfg_scale"),
    (dict(lpips_vgg="vgg.pth"), ValueError, "both config.lpips_vgg and config.lpips_lin"),
    (dict(protocol="nyu"), ValueError, "Unknown protocol 'nyu'"),
    (dict(protocol="pascal5i_segmentation", folds=(0,)), ValueError, "reads Pascal VOC"),
    (dict(task="panoptic_segmentation", source="photos"), ValueError, "needs 'semantic'"),
    (
      dict(fid_weights="/nowhere/inception.pth"),
      FileNotFoundError,
      "pt_inception-2015-12-05-6726825d.pth",
    ),
  ],
)
def test_bad_settings_fail_before_loading_the_model(
  overrides, error, match, bundle_dir, synthetic, tmp_path, monkeypatch
):
  monkeypatch.setattr(loading.ModelFiles, "load", lambda self: pytest.fail("model loaded"))
  with pytest.raises(error, match=match):
    model_eval.evaluate_model(
      _config(synthetic, **overrides), loading.ModelFiles(bundle=str(bundle_dir)), tmp_path / "out"
    )
  assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
  "model, error, match",
  [
    (dict(bundle="/nowhere"), FileNotFoundError, "no inference bundle at"),
    (dict(vae_path="stvae.pt"), ValueError, "not both"),
    (dict(bundle=None), ValueError, "Name the model"),
    (
      dict(bundle=None, vae_path="/nowhere/stvae.pt", dit_path="/nowhere/dit.safetensors"),
      FileNotFoundError,
      "--vae_path: no file",
    ),
  ],
)
def test_bad_model_files_fail_before_loading(
  model, error, match, bundle_dir, synthetic, tmp_path, monkeypatch
):
  monkeypatch.setattr(loading.ModelFiles, "load", lambda self: pytest.fail("model loaded"))
  files = loading.ModelFiles(**{"bundle": str(bundle_dir), **model})
  with pytest.raises(error, match=match):
    model_eval.evaluate_model(_config(synthetic), files, tmp_path / "out")
  assert not (tmp_path / "out").exists()
