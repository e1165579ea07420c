"""Template folder + query in, the released [query | prediction] PNG out (launch/sample.py)."""

import jax
import numpy as np
from PIL import Image
import pytest
import tiny_model

from lavin_jax.configs import sampling
from lavin_jax.inference import loading
from lavin_jax.inference import media
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


def test_attention_of_another_platform_fails_before_loading():
  name = "cudnn" if jax.default_backend() != "gpu" else "splash"
  with pytest.raises(ValueError, match=f"--attention={name} needs a (GPU|TPU)"):
    loading.ModelFiles(bundle="missing", attention=name).check()


def test_template_folder_without_pairs(files, tmp_path, monkeypatch):
  monkeypatch.setattr(loading.ModelFiles, "load", lambda self: pytest.fail("model loaded"))
  _png(tmp_path / "lonely_input.png", 0)
  with pytest.raises(ValueError, match="unmatched"):
    _predict(files, task_dir=tmp_path)


def test_batches_give_the_one_at_a_time_outputs(files, tmp_path):
  for name in ("q2", "q3"):
    _png(files / "queries" / f"{name}.png", int(name[1]) + 20)
  try:
    one = _predict(files, query=files / "queries", output=tmp_path / "one")
    three = _predict(files, query=files / "queries", output=tmp_path / "three", batch_size=3)
  finally:
    for name in ("q2", "q3"):
      (files / "queries" / f"{name}.png").unlink()
  assert [p.name for p in one] == [p.name for p in three] == [f"q{i}.png" for i in range(4)]
  for a, b in zip(one, three):
    diff = np.abs(np.asarray(Image.open(a), int) - np.asarray(Image.open(b), int))
    assert diff.max() <= 1  # float tolerance, then rounding to uint8


def test_nearest_context(files, tmp_path):
  written = _predict(
    files, query=files / "queries", output=tmp_path, select_context="nearest", batch_size=2
  )
  assert all(p.exists() for p in written)


def _gif(path, seed, frames=5, size=(40, 48)):
  rng = np.random.default_rng(seed)
  images = [
    Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)) for _ in range(frames)
  ]
  images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)


@pytest.fixture(scope="module")
def clip_files(files):
  root = files / "video"
  (root / "task").mkdir(parents=True)
  _gif(root / "task" / "a_input.gif", 0)
  media.write_clip(root / "task" / "a_target.mp4", _frames(1), fps=8)
  for name in ("b_input", "b_target"):
    (root / "task" / name).mkdir()
    for t, frame in enumerate(_frames(2 + len(name))):
      Image.fromarray(frame).save(root / "task" / name / f"{t:03d}.png")
  (root / "queries").mkdir()
  _gif(root / "queries" / "c0.gif", 5, frames=6)
  media.write_clip(root / "queries" / "c1.mp4", _frames(6), fps=8)
  return root


def _frames(seed, frames=5, size=(48, 48)):
  return np.random.default_rng(seed).integers(0, 256, (frames,) + size + (3,), dtype=np.uint8)


def test_video_clips_in_and_out(files, clip_files, tmp_path):
  args = dict(task_dir=clip_files / "task", num_frames=5)
  out = _predict(files, query=clip_files / "queries" / "c0.gif", output=tmp_path / "c.gif", **args)
  with Image.open(out[0]) as gif:
    assert gif.n_frames == 5 and gif.size == (2 * SIZE + 12, SIZE + 8)
  written = _predict(
    files, query=clip_files / "queries", output=tmp_path / "many", video_format="mp4", **args
  )
  assert [p.name for p in written] == ["c0.mp4", "c1.mp4"]
  clip = media.read_clip(written[1], 5)
  assert clip.shape == (5, SIZE + 8, 2 * SIZE + 12, 3)


@pytest.mark.parametrize(
  "overrides, match",
  [
    (dict(num_frames=9), "has 5 frames; 9 are needed"),
    (dict(num_frames=4), "1 \\+ 4k"),
    (dict(output="c.png"), "must end in one of"),
    (dict(fps=0), "fps"),
  ],
)
def test_bad_video_input_fails_before_loading(
  files, clip_files, tmp_path, monkeypatch, overrides, match
):
  monkeypatch.setattr(loading.ModelFiles, "load", lambda self: pytest.fail("model loaded"))
  args = dict(
    task_dir=clip_files / "task",
    query=clip_files / "queries" / "c0.gif",
    output=tmp_path / "c.gif",
    num_frames=5,
  )
  args.update(overrides)
  with pytest.raises(ValueError, match=match):
    _predict(files, **args)


@pytest.mark.parametrize(
  "overrides, match",
  [
    (dict(select_context="closest"), "select_context"),
    (dict(select_context="nearest", num_prompt=4), "distinct pairs"),
    (dict(batch_size=0), "batch_size"),
    (dict(model="attention=fast"), "--attention"),
  ],
)
def test_bad_options_fail_before_loading(files, tmp_path, monkeypatch, overrides, match):
  monkeypatch.setattr(loading.ModelFiles, "load", lambda self: pytest.fail("model loaded"))
  if overrides.get("model"):
    overrides["model"] = loading.ModelFiles(bundle=str(files / "bundle"), attention="fast")
  with pytest.raises(ValueError, match=match):
    _predict(files, output=tmp_path / "out.png", **overrides)
