"""Template folder + query in, the released [query | prediction] PNG out (launch/sample.py)."""

import numpy as np
from PIL import Image
import pytest
import tiny_model

from lavin_jax.configs import sampling
from lavin_jax.inference import loading
from lavin_jax.inference import templates
from lavin_jax.io import bundle

SIZE = 32


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


def _predict(files, model=None, seed=0, timesteps=3, cfg_scale=1.5, **overrides):
  args = dict(
    task_dir=files / "task",
    query=files / "queries" / "q0.png",
    output=files / "out.png",
    height=SIZE,
    width=SIZE,
    num_prompt=2,
  )
  args.update(overrides)
  settings = sampling.released()
  settings.update(num_steps=timesteps, cfg_scale=cfg_scale)
  model = model or loading.ModelFiles(bundle=str(files / "bundle"))
  return templates.predict_templates(
    model,
    args.pop("task_dir"),
    args.pop("query"),
    args.pop("output"),
    seed=seed,
    sampling=settings,
    **args,
  )


def test_one_query_writes_the_released_layout(files):
  _predict(files, seed=1)
  grid = np.asarray(Image.open(files / "out.png"))
  pad = 4
  assert grid.shape == (SIZE + 2 * pad, 2 * SIZE + 3 * pad, 3)
  assert grid[:pad].max() == 0 and grid[:, SIZE + pad : SIZE + 2 * pad].max() == 0
  # The left cell is the query, resized bicubically to SIZE x SIZE.
  query = Image.open(files / "queries" / "q0.png").resize((SIZE, SIZE), Image.Resampling.BICUBIC)
  np.testing.assert_allclose(grid[pad : pad + SIZE, pad : pad + SIZE], np.asarray(query), atol=1)
  # Seeded: the same settings give the same picture.
  _predict(files, seed=1, output=files / "again.png")
  np.testing.assert_array_equal(grid, np.asarray(Image.open(files / "again.png")))


def test_folder_mode_writes_one_png_per_query(files):
  out = files / "many"
  written = _predict(files, query=files / "queries", output=out)
  assert sorted(p.name for p in out.iterdir()) == ["q0.png", "q1.png"] == [p.name for p in written]


@pytest.mark.parametrize(
  "overrides, error, match",
  [
    (dict(height=40), ValueError, "multiples of 16"),
    (dict(width=0), ValueError, "multiples of 16"),
    (dict(task_dir="missing"), FileNotFoundError, "does not exist"),
    (dict(query="missing.png"), FileNotFoundError, "No query"),
    (dict(model=loading.ModelFiles(bundle="missing")), FileNotFoundError, "--bundle"),
    (
      dict(model=loading.ModelFiles(dit_path="x.safetensors", vae_path="y.pt")),
      FileNotFoundError,
      "--vae_path",
    ),
    (dict(model=loading.ModelFiles()), ValueError, "--bundle"),
    (dict(timesteps=1), ValueError, "timesteps"),
    (dict(cfg_scale=float("nan")), ValueError, "cfg_scale"),
    (dict(cfg_scale=float("inf")), ValueError, "cfg_scale"),
    (dict(num_prompt=0), ValueError, "num_prompt"),
  ],
)
def test_bad_input_fails_before_loading(files, monkeypatch, overrides, error, match, tmp_path):
  monkeypatch.setattr(loading.ModelFiles, "load", lambda self: pytest.fail("model loaded"))
  with pytest.raises(error, match=match):
    _predict(files, output=tmp_path / "out.png", **overrides)
  assert not (tmp_path / "out.png").exists()


def test_template_folder_without_pairs(files, tmp_path, monkeypatch):
  monkeypatch.setattr(loading.ModelFiles, "load", lambda self: pytest.fail("model loaded"))
  _png(tmp_path / "lonely_input.png", 0)
  with pytest.raises(ValueError, match="unmatched"):
    _predict(files, task_dir=tmp_path)
