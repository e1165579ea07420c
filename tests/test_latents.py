"""Stored latents: a mixture's task pairs encoded once into shards, episodes read back."""

import filecmp
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from lavin_jax.configs import data as data_configs
from lavin_jax.data import latents
from lavin_jax.data import shards
from lavin_jax.data import specs
from lavin_jax.data import tasks

RES = 16
VAE = {"weights": "stand-in", "model": {}}
IMAGE_TASKS = ("depth_estimation", "colorization")
VIDEO_TASKS = ("video_depth",)


def _encode(pixels):
  """A stand-in encoder: 8x8 mean pooling, tiled to 16 channels; small log-variance."""
  b, t, h, w, _ = pixels.shape
  pooled = pixels.reshape(b, t, h // 8, 8, w // 8, 8, 3).mean(axis=(3, 5))
  mean = np.concatenate([pooled] * 5 + [pooled[..., :1]], axis=-1)
  return mean, np.full(mean.shape, -8.0, np.float32)


def _moments(pixels):
  return np.concatenate(_encode(pixels), axis=-1).astype(jnp.bfloat16)


def _config(names=IMAGE_TASKS + VIDEO_TASKS, **overrides):
  c = data_configs.pipeline("image")
  for name in c.task_weights:
    c.task_weights[name] = float(name in names)
  c.resolution, c.batch_size, c.k_min, c.k_max = RES, 4, 1, 3
  c.read_threads = 1
  c.update(overrides)
  return c


def _latents_config(**overrides):
  c = data_configs.latents()
  c.examples_per_shard, c.batch_size = 3, 8
  c.update(overrides)
  return c


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("synthetic")
  return {
    "images": specs.get_source(f"synthetic:tiny,content=images,data_dir={data_dir}"),
    "clips": specs.get_source(f"synthetic:tiny,content=clips,data_dir={data_dir}"),
  }


def _encode_into(directory, sources, config=None, latents_config=None, encode=_encode, **kw):
  return latents.encode_latents(
    sources,
    directory,
    config or _config(),
    latents_config or _latents_config(),
    lambda: encode,
    VAE,
    **kw,
  )


@pytest.fixture(scope="module")
def encoded(sources, tmp_path_factory):
  directory = tmp_path_factory.mktemp("latents")
  _encode_into(directory, sources)
  return directory


def _records(directory, source, task, size, per_shard=3):
  paths = shards.shard_paths(directory, source, task, shards.num_shards(size, per_shard))
  data = shards.open_records(paths)
  return np.stack([shards.decode_record(data[i]) for i in range(len(data))])


# ---------------------------------------------------------------------------
# Encoding.
# ---------------------------------------------------------------------------


def test_records_hold_each_task_pair_encoded(sources, encoded):
  layout = shards.read_json(shards.source_file(encoded, "images"))
  assert layout == {"size": 8, "keys": sorted(sources["images"].keys), "examples_per_shard": 3}
  for source, names in (("images", IMAGE_TASKS), ("clips", VIDEO_TASKS)):
    for name in names:
      inputs, targets = latents.render_task_pairs(sources[source], tasks.get_task(name), RES)
      stored = _records(encoded, source, name, len(inputs))
      assert stored.dtype == jnp.bfloat16
      np.testing.assert_array_equal(stored[:, 0], _moments(inputs), err_msg=name)
      np.testing.assert_array_equal(stored[:, 1], _moments(targets), err_msg=name)
  assert not (encoded / "clips" / "colorization").exists()  # a clip source feeds no still task
  assert not (encoded / "images" / "video_depth").exists()


def test_clips_tasks_share_are_encoded_once(sources, tmp_path):
  encoded_clips = []

  def counting(pixels):
    encoded_clips.extend(p.tobytes() for p in pixels)
    return _encode(pixels)

  _encode_into(tmp_path, {"images": sources["images"]}, _config(IMAGE_TASKS), encode=counting)
  # Per example: the photograph (depth input, colorization target), the depth map and
  # the grey input; batches are padded by repeating their last clip.
  assert len(set(encoded_clips)) == 3 * len(sources["images"])


def test_views_store_random_crops_beside_the_centred_one(tmp_path):
  photos = specs.get_source("photos")  # not square: a crop has room to move
  colorization = tasks.get_task("colorization")
  _encode_into(tmp_path, {"photos": photos}, _config(("colorization",)), _latents_config(views=2))
  stored = _records(tmp_path, "photos", "colorization", 9).reshape(9, 2, 2, 1, 2, 2, 32)
  inputs, _ = latents.render_task_pairs(photos, colorization, RES)
  np.testing.assert_array_equal(stored[:, 0, 0], _moments(inputs))  # view 0: centred
  assert sum(not np.array_equal(stored[i, 1], stored[i, 0]) for i in range(9)) >= 5
  want = latents.render_view(colorization, photos[2], 2, 1, RES, 0, random_crop=True)
  np.testing.assert_array_equal(stored[2, 1, 0], _moments(want[0][None])[0])


def test_finished_shards_are_kept_and_a_crash_mid_shard_leaves_none(sources, encoded, tmp_path):
  calls = []

  def crashing(pixels):
    calls.append(1)
    if len(calls) == 4:
      raise KeyboardInterrupt("killed")
    return _encode(pixels)

  with pytest.raises(KeyboardInterrupt):
    _encode_into(tmp_path, sources, encode=crashing)
  done = sorted(tmp_path.glob("*/*/*.array_record"))
  assert done and not list(tmp_path.glob("*/*/.*.partial"))
  before = {p: p.stat().st_mtime_ns for p in done}
  written = _encode_into(tmp_path, sources)
  assert not set(written) & set(done)
  assert {p: p.stat().st_mtime_ns for p in done} == before
  every = sorted(p.relative_to(encoded) for p in encoded.glob("*/*/*.array_record"))
  assert sorted(p.relative_to(tmp_path) for p in tmp_path.glob("*/*/*.array_record")) == every
  for path in every:
    assert filecmp.cmp(encoded / path, tmp_path / path, shallow=False), path


def test_processes_encode_disjoint_shares(sources, encoded, tmp_path):
  written = [_encode_into(tmp_path, sources, process_index=p, process_count=2) for p in range(2)]
  assert not set(written[0]) & set(written[1])
  every = sorted(p.relative_to(encoded) for p in encoded.glob("*/*/*.array_record"))
  assert sorted(p.relative_to(tmp_path) for p in written[0] + written[1]) == every


def test_other_settings_are_refused(sources, encoded):
  with pytest.raises(ValueError, match=r"differ in \['resolution'\]"):
    _encode_into(encoded, sources, _config(resolution=24))
  with pytest.raises(ValueError, match=r"differ in \['vae'\]"):
    latents.make_latent_pipeline(
      encoded, ["images", "clips"], _config(), _latents_config(), {"weights": "other"}, 0, 1
    )
  with pytest.raises(ValueError, match="latents.views must be >= 1"):
    _encode_into(encoded, sources, latents_config=_latents_config(views=0))


# ---------------------------------------------------------------------------
# Episodes read back.
# ---------------------------------------------------------------------------


def _pipeline(directory, config=None, names=("images", "clips"), index=0, count=1):
  return latents.make_latent_pipeline(
    directory, list(names), config or _config(), _latents_config(), VAE, index, count
  )


def test_episodes_layout_padding_and_stored_pairs(sources, encoded):
  stored = {
    name: _records(encoded, source, name, len(sources[source]))
    for source, names in (("images", IMAGE_TASKS), ("clips", VIDEO_TASKS))
    for name in names
  }
  frames = set()
  batches = iter(_pipeline(encoded, _config(k_buckets=(3,))))  # Padded to k_max.
  for _ in range(6):
    batch = next(batches)
    t = batch["query"].shape[1]
    frames.add(t)
    assert batch["context_inputs"].shape == (4, 3, t, 2, 2, 32)
    assert batch["query"].dtype == batch["context_inputs"].dtype == jnp.bfloat16
    for b in range(4):
      k = int(batch["num_pairs"][b])
      assert not batch["context_inputs"][b, k:].astype(np.float32).any()
      records = stored[tasks.TASK_NAMES[batch["task_id"][b]]]
      (query,) = [
        i for i in range(len(records)) if np.array_equal(records[i, 0], batch["query"][b])
      ]
      np.testing.assert_array_equal(records[query, 1], batch["target"][b])
      context = [
        i
        for c in batch["context_targets"][b, :k]
        for i in range(len(records))
        if np.array_equal(records[i, 1], c)
      ]
      assert len(context) == k and query not in context
  assert frames == {1, 5}


def test_deterministic_and_resumable(encoded):
  first = iter(_pipeline(encoded))
  next(first)
  state = first.get_state()
  want = next(first)
  again = iter(_pipeline(encoded))
  again.set_state(state)
  got = next(again)
  for key in want:
    np.testing.assert_array_equal(got[key], want[key])


def test_process_shards_split_the_batch(encoded):
  halves = [next(iter(_pipeline(encoded, index=p, count=2))) for p in range(2)]
  assert all(h["query"].shape[0] == 2 for h in halves)
  assert halves[0]["query"].shape == halves[1]["query"].shape
  assert not np.array_equal(halves[0]["query"], halves[1]["query"])


def test_each_step_has_one_context_size_on_every_process(encoded):
  halves = [iter(_pipeline(encoded, _config(k_max=4), index=p, count=2)) for p in range(2)]
  for _ in range(4):
    a, b = next(halves[0]), next(halves[1])
    size = a["context_inputs"].shape[1]
    assert b["context_inputs"].shape[1] == size
    assert np.all(a["num_pairs"] == size) and np.all(b["num_pairs"] == size)  # no padding


def test_missing_latents_are_named(encoded, tmp_path):
  with pytest.raises(FileNotFoundError, match="no latents of source 'photos'"):
    _pipeline(encoded, names=("images", "photos"))
  with pytest.raises(FileNotFoundError, match="2 of 2 shards of task 'normal_to_video'"):
    _pipeline(encoded, _config(VIDEO_TASKS + ("normal_to_video",)))  # a task not encoded
  copy = tmp_path / "copy"
  for path in encoded.rglob("*"):
    if path.is_file():
      (copy / path.relative_to(encoded)).parent.mkdir(parents=True, exist_ok=True)
      (copy / path.relative_to(encoded)).write_bytes(path.read_bytes())
  (copy / "images" / "colorization" / "shard-00001-of-00003.array_record").unlink()
  with pytest.raises(FileNotFoundError, match=r"1 of 3 shards of task 'colorization'.*00001"):
    _pipeline(copy)


def test_mean_statistics(sources, encoded):
  values = []
  for path in sorted(pathlib.Path(encoded).glob("*/*/*.array_record")):
    data = shards.open_records([path])
    values += [shards.decode_record(data[i])[..., :16].astype(np.float64) for i in range(len(data))]
  values = np.concatenate([v.ravel() for v in values])
  mean, std = latents.mean_statistics(encoded)
  assert mean == pytest.approx(values.mean()) and std == pytest.approx(values.std())
