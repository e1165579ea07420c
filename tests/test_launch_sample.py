"""launch/sample.py: template folder + query in, the released [query | prediction] PNG out."""

import importlib.util
import pathlib

from absl import app
from absl import flags
from absl.testing import flagsaver
import numpy as np
from PIL import Image
import pytest

from lavin_jax.inference import bundle
import tiny_model

ROOT = pathlib.Path(__file__).parent.parent
SIZE = 32


SHARED_FLAGS = ("query", "output", "task_dir", "vae_path", "dit_path", "bundle", "dit_size",
                "timesteps", "height", "width", "num_prompt", "cfg_scale", "seed", "sampler")


def _import_launch():
  """Imports launch/sample.py, replacing flags of the same names other launch tests made.

  absl flags are process-global; launch scripts tested in one process share names.
  """
  for name in SHARED_FLAGS:
    if name in flags.FLAGS:
      delattr(flags.FLAGS, name)
  spec = importlib.util.spec_from_file_location("launch_sample", ROOT / "launch" / "sample.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  flags.FLAGS.mark_as_parsed()
  return module


@pytest.fixture(scope="module")
def sample():
  return _import_launch()


def _png(path, seed, size=(40, 48)):
  pixels = np.random.default_rng(seed).integers(0, 256, size + (3,), dtype=np.uint8)
  Image.fromarray(pixels).save(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  root = tmp_path_factory.mktemp("sample")
  config = tiny_model.tiny_model_config()
  bundle.save_bundle(root / "bundle", config, *tiny_model.tiny_model_params(config))
  (root / "task").mkdir()
  for i, name in enumerate(["a", "b", "c"]):
    _png(root / "task" / f"{name}_input.png", 2 * i)
    _png(root / "task" / f"{name}_target.png", 2 * i + 1)
  (root / "queries").mkdir()
  for i in range(2):
    _png(root / "queries" / f"q{i}.png", 10 + i)
  return root


def _flags(files, **overrides):
  values = dict(bundle=str(files / "bundle"), task_dir=str(files / "task"),
                query=str(files / "queries" / "q0.png"), output=str(files / "out.png"),
                height=SIZE, width=SIZE, timesteps=3, num_prompt=2)
  values.update(overrides)
  return values


def test_one_query_writes_the_released_layout(sample, files):
  with flagsaver.flagsaver(**_flags(files, seed=1)):
    sample.main(["sample"])
  grid = np.asarray(Image.open(files / "out.png"))
  pad = 4
  assert grid.shape == (SIZE + 2 * pad, 2 * SIZE + 3 * pad, 3)
  assert grid[:pad].max() == 0 and grid[:, SIZE + pad:SIZE + 2 * pad].max() == 0
  # The left cell is the query, resized bicubically to SIZE x SIZE.
  query = Image.open(files / "queries" / "q0.png").resize((SIZE, SIZE), Image.Resampling.BICUBIC)
  np.testing.assert_allclose(grid[pad:pad + SIZE, pad:pad + SIZE], np.asarray(query), atol=1)
  # Seeded: the same flags give the same picture.
  with flagsaver.flagsaver(**_flags(files, seed=1, output=str(files / "again.png"))):
    sample.main(["sample"])
  np.testing.assert_array_equal(grid, np.asarray(Image.open(files / "again.png")))


def test_folder_mode_writes_one_png_per_query(sample, files):
  out = files / "many"
  with flagsaver.flagsaver(**_flags(files, query=str(files / "queries"), output=str(out))):
    sample.main(["sample"])
  assert sorted(p.name for p in out.iterdir()) == ["q0.png", "q1.png"]


@pytest.mark.parametrize("overrides, error, match", [
    (dict(height=40), ValueError, "multiples of 16"),
    (dict(task_dir="missing"), FileNotFoundError, "does not exist"),
    (dict(query="missing.png"), FileNotFoundError, "No query"),
    (dict(bundle="missing"), FileNotFoundError, "--bundle"),
    (dict(bundle=None, dit_path="x.safetensors", vae_path="y.pt"), FileNotFoundError, "--vae_path"),
    (dict(bundle=None), app.UsageError, "--bundle"),
    (dict(timesteps=1), ValueError, "timesteps"),
    (dict(num_prompt=0), ValueError, "num_prompt"),
])
def test_bad_flags_fail_before_loading(sample, files, monkeypatch, overrides, error, match):
  monkeypatch.setattr(sample, "_load_pipeline", lambda: pytest.fail("model loaded"))
  with flagsaver.flagsaver(**_flags(files, **overrides)):
    with pytest.raises(error, match=match):
      sample.main(["sample"])


def test_template_folder_without_pairs(sample, files, tmp_path, monkeypatch):
  monkeypatch.setattr(sample, "_load_pipeline", lambda: pytest.fail("model loaded"))
  _png(tmp_path / "lonely_input.png", 0)
  with flagsaver.flagsaver(**_flags(files, task_dir=str(tmp_path))):
    with pytest.raises(ValueError, match="unmatched"):
      sample.main(["sample"])
