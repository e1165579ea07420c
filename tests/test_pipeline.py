"""Grain pipeline: batch layout, episodes, determinism, resume, sharding, bad inputs."""

import pathlib
import subprocess
import sys

from absl import flags
import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest

from lavin_jax.configs import data as data_configs
from lavin_jax.configs import tasks as task_table
from lavin_jax.data import episodes
from lavin_jax.data import pipeline
from lavin_jax.data import synthetic
from lavin_jax.data import tasks

ROOT = pathlib.Path(__file__).resolve().parents[1]
N = 12  # Source examples; example i is the constant colour value(i).


def value(i):
  return 10 * i + 5


def _photo_source(n=N, height=40, width=48):
  return [{"image": np.full((height, width, 3), value(i), np.uint8)} for i in range(n)]


def _index_of(pixels):
  """Source index of a constant colour-target clip (T, H, W, 3)."""
  level = (pixels + 1.0) * 127.5
  assert np.ptp(level) < 1e-3
  return int(round((level.mean() - 5) / 10))


def _config(weights=("colorization",), k_min=1, k_max=3, batch_size=4, media="image"):
  c = data_configs.pipeline(media)
  c.resolution = 32
  c.batch_size = batch_size
  c.k_min, c.k_max = k_min, k_max
  c.read_threads = 1
  c.read_buffer_size = 4
  for name in c.task_weights:
    c.task_weights[name] = 0.0
  for name in weights:
    c.task_weights[name] = 1.0
  return c


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_same(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_batch_layout_and_padding():
  rng = np.random.default_rng(0)
  source = [
    {
      "image": rng.integers(0, 256, (40, 48, 3), dtype=np.uint8),
      "depth": rng.uniform(1, 9, (40, 48)).astype(np.float32),
    }
    for _ in range(N)
  ]
  config = _config(("colorization", "inpainting", "depth_estimation"), k_min=2, k_max=4)
  config.k_buckets = (4,)  # Every episode padded to k_max.
  batches = _take(iter(pipeline.make_pipeline(config, source, 0, 1)), 6)
  batch = batches[0]
  assert set(batch) == {
    "context_inputs",
    "context_targets",
    "query",
    "target",
    "num_pairs",
    "task_id",
    "skipped",
  }
  assert not any(b["skipped"].any() for b in batches)
  assert batch["context_inputs"].shape == batch["context_targets"].shape == (4, 4, 1, 32, 32, 3)
  assert batch["query"].shape == batch["target"].shape == (4, 1, 32, 32, 3)
  assert batch["num_pairs"].dtype == batch["task_id"].dtype == np.int32
  allowed = {tasks.task_id(n) for n in ("colorization", "inpainting", "depth_estimation")}
  seen_k, seen_tasks = set(), set()
  for b in batches:
    for key in ("context_inputs", "context_targets", "query", "target"):
      assert b[key].dtype == np.float32 and b[key].min() >= -1 and b[key].max() <= 1
    for i in range(4):
      k = int(b["num_pairs"][i])
      seen_k.add(k)
      assert 2 <= k <= 4
      assert np.all(b["context_inputs"][i, k:] == 0) and np.all(b["context_targets"][i, k:] == 0)
      assert np.all(np.abs(b["context_targets"][i, :k]).reshape(k, -1).max(1) > 0)
    seen_tasks |= set(b["task_id"].tolist())
  assert seen_tasks == allowed and seen_k == {2, 3, 4}


def test_context_is_other_examples_of_the_same_task():
  config = _config(("colorization", "inpainting"), k_min=3, k_max=3)
  config.task.inpaint_fraction = 0.25
  for b in _take(iter(pipeline.make_pipeline(config, _photo_source(), 0, 1)), 3):
    for i in range(4):
      query_index = _index_of(b["target"][i])
      context = [_index_of(t) for t in b["context_targets"][i]]
      assert query_index not in context
      assert len(set(context)) == 3  # Drawn without replacement while the source allows.
      hole = b["query"][i, 0, 16, 16, 0] == 0.0
      assert hole == (b["task_id"][i] == tasks.task_id("inpainting"))
      assert np.all((b["context_inputs"][i, :, 0, 16, 16, 0] == 0.0) == hole)


def test_video_pipeline():
  rng = np.random.default_rng(0)
  source = [
    {
      "video": rng.integers(0, 256, (12, 40, 40, 3), dtype=np.uint8),
      "flow": rng.normal(0, 2, (11, 40, 40, 2)).astype(np.float32),
    }
    for _ in range(4)
  ]
  config = _config(("frame_prediction", "optical_flow"), k_max=2, batch_size=2, media="video")
  batch = next(iter(pipeline.make_pipeline(config, source, 0, 1)))
  k = batch["num_pairs"][0]  # One K per batch: nothing padded.
  assert np.all(batch["num_pairs"] == k)
  assert batch["context_inputs"].shape == (2, k, 5, 32, 32, 3)
  assert batch["query"].shape == batch["target"].shape == (2, 5, 32, 32, 3)


def test_deterministic_for_a_seed():
  rng = np.random.default_rng(0)
  source = [{"image": rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)} for _ in range(N)]
  config = _config(("colorization", "de_glass_blur", "inpainting"))
  config.task.inpaint_random = True
  first = _take(iter(pipeline.make_pipeline(config, source, 0, 1)), 4)
  _assert_same(first, _take(iter(pipeline.make_pipeline(config, source, 0, 1)), 4))
  config.seed = 1
  other = _take(iter(pipeline.make_pipeline(config, source, 0, 1)), 4)
  assert any(not np.array_equal(a["query"], b["query"]) for a, b in zip(first, other))


def test_resume_from_state_yields_the_next_batches():
  config = _config(("colorization", "inpainting"))
  config.task.inpaint_random = True
  dataset = pipeline.make_pipeline(config, _photo_source(), 0, 1)
  iterator = iter(dataset)
  _take(iterator, 5)  # Past the first epoch (12 examples, 4 per batch).
  state = iterator.get_state()
  expected = _take(iterator, 3)
  resumed = iter(dataset)
  resumed.set_state(state)
  _assert_same(expected, _take(resumed, 3))


@pytest.fixture
def parsed_flags():
  """absl flags parsed, as an entry point (absl.app.run) leaves them for Grain's workers."""
  if flags.FLAGS.is_parsed():
    yield
    return
  flags.FLAGS.mark_as_parsed()
  yield
  flags.FLAGS.unparse_flags()


@pytest.mark.usefixtures("parsed_flags")
def test_resume_through_orbax(tmp_path):
  config = _config(("colorization", "inpainting"), batch_size=2)
  config.worker_count = 1  # Grain worker process: its state is saved as well.
  dataset = pipeline.make_pipeline(config, _photo_source(), 0, 1)
  iterator = iter(dataset)
  _take(iterator, 4)
  manager = ocp.CheckpointManager(tmp_path, item_names=("data",))
  manager.save(4, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
  manager.wait_until_finished()
  expected = _take(iterator, 3)
  iterator.close()

  resumed = iter(dataset)
  manager.restore(4, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(resumed)))
  _assert_same(expected, _take(resumed, 3))
  resumed.close()
  manager.close()
  # The worker count does not change the batches.
  config.worker_count = 0
  in_process = iter(pipeline.make_pipeline(config, _photo_source(), 0, 1))
  _take(in_process, 4)
  _assert_same(expected, _take(in_process, 3))


_PLAIN_SCRIPT = """
import sys
from absl import flags
import numpy as np
from lavin_jax.configs import data
from lavin_jax.data import pipeline

config = data.pipeline('image')
config.resolution, config.batch_size, config.k_max = 32, 2, 2
for name in config.task_weights:
  config.task_weights[name] = float(name == 'colorization')
config.worker_count = 2
source = [{'image': np.full((32, 32, 3), 20 * i, np.uint8)} for i in range(6)]
try:
  pipeline.make_pipeline(config, source, 0, 1)
  raise AssertionError('no error without parsed flags')
except ValueError as e:
  assert 'absl flags' in str(e), e
assert not flags.FLAGS.is_parsed()  # The library left the flags alone.
flags.FLAGS(sys.argv[:1])  # What an entry point does (absl.app.run).
iterator = iter(pipeline.make_pipeline(config, source, 0, 1))
batches = [next(iterator) for _ in range(3)]
iterator.close()
config.worker_count = 0
in_process = iter(pipeline.make_pipeline(config, source, 0, 1))
for batch in batches:
  for key, value in next(in_process).items():
    np.testing.assert_array_equal(batch[key], value, err_msg=key)
print('same batches')
"""


def test_workers_in_a_plain_python_process():
  """Workers need parsed flags; the pipeline says so and never parses them itself."""
  run = subprocess.run(
    [sys.executable, "-c", _PLAIN_SCRIPT],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert run.returncode == 0, run.stderr[-3000:]
  assert "same batches" in run.stdout


@pytest.mark.parametrize("count", [2, 3])
def test_process_shards_are_disjoint_and_complete(count):
  config = _config(batch_size=count)  # One query per process and step.
  seen = []
  for index in range(count):
    iterator = iter(pipeline.make_pipeline(config, _photo_source(), index, count))
    steps = len(range(index, N, count))  # This shard's share of one epoch.
    seen.append([_index_of(b["target"][0]) for b in _take(iterator, steps)])
  flat = [i for shard in seen for i in shard]
  assert sorted(flat) == list(range(N))
  # The same split as a single process reading the whole stream.
  config.batch_size = 1
  whole = iter(pipeline.make_pipeline(config, _photo_source(), 0, 1))
  stream = [_index_of(b["target"][0]) for b in _take(whole, N)]
  for index in range(count):
    assert seen[index] == stream[index::count]


def test_default_shard_is_the_jax_process():
  config = _config()
  default = _take(iter(pipeline.make_pipeline(config, _photo_source())), 2)
  _assert_same(default, _take(iter(pipeline.make_pipeline(config, _photo_source(), 0, 1)), 2))


# ---------------------------------------------------------------------------
# End to end on the built-in synthetic data set.
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("synthetic")
  synthetic.build_synthetic(data_dir, "tiny", num_workers=1)
  return data_dir


def _media_tasks(media):
  """The tasks of `media` the synthetic data set annotates (all but the pose tasks)."""
  return [n for n, weight in task_table.weights(media).items() if weight]


@pytest.mark.parametrize("media", ["image", "video"])
def test_synthetic_source_end_to_end(synthetic_dir, media):
  content = "images" if media == "image" else "clips"
  source = synthetic.load_synthetic(synthetic_dir, "tiny", content)
  # Tiny clips have 5 frames: frame prediction (2 x 5 frames) is checked below.
  names = [n for n in _media_tasks(media) if n != "frame_prediction"]
  config = _config(names, k_min=1, k_max=2, media=media)
  frames = 1 if media == "image" else 5
  seen = set()
  for batch in _take(iter(pipeline.make_pipeline(config, source, 0, 1)), 8):
    k = batch["num_pairs"][0]
    assert np.all(batch["num_pairs"] == k)
    assert batch["context_inputs"].shape == (4, k, frames, 32, 32, 3)
    assert batch["target"].shape == (4, frames, 32, 32, 3)
    for key in ("context_inputs", "context_targets", "query", "target"):
      assert batch[key].min() >= -1 and batch[key].max() <= 1
    seen |= set(batch["task_id"].tolist())
  assert seen <= {tasks.task_id(n) for n in names} and len(seen) >= len(names) // 2
  if media == "video":
    with pytest.raises(ValueError, match="'frame_prediction' needs clips of at least 10"):
      pipeline.make_pipeline(_config(("frame_prediction",), media="video"), source, 0, 1)


def test_synthetic_targets_decode_to_the_annotations(synthetic_dir):
  images = synthetic.load_synthetic(synthetic_dir, "tiny", "images")
  rng = np.random.default_rng(0)
  for i in range(3):
    example = episodes.fit_example(images[i], 32)  # Native size: a no-op crop.
    decoded = {
      n: tasks.get_task(n).decode(tasks.get_task(n)(example, rng)[1])[0]
      for n in (
        "depth_estimation",
        "normal_estimation",
        "instance_segmentation",
        "foreground_segmentation",
        "detection",
      )
    }
    np.testing.assert_allclose(decoded["depth_estimation"], example["depth"], rtol=1e-4)
    np.testing.assert_allclose(decoded["normal_estimation"], example["normals"], atol=1e-5)
    np.testing.assert_array_equal(decoded["instance_segmentation"], example["instances"])
    np.testing.assert_array_equal(decoded["foreground_segmentation"], example["instances"] > 0)
    # The rendered box is the pixel extent of the instance with the largest box.
    boxes = example["boxes"]
    largest = 1 + int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
    rows, cols = np.nonzero(example["instances"] == largest)
    extent = np.zeros((32, 32), bool)
    extent[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
    np.testing.assert_array_equal(decoded["detection"], extent)
  clips = synthetic.load_synthetic(synthetic_dir, "tiny", "clips")
  config = task_table.options()
  config.flow_max = 64.0
  task = tasks.get_task("optical_flow", config)
  clip = episodes.fit_example(clips[0], 32)
  np.testing.assert_allclose(task.decode(task(clip, rng)[1]), clip["flow"], atol=1e-3)


# ---------------------------------------------------------------------------
# Bad inputs: each raised by make_pipeline, before any batch.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("resolution", [0, -16])
def test_resolution_must_be_positive(resolution):
  config = _config()
  config.resolution = resolution
  with pytest.raises(ValueError, match="resolution must be positive"):
    pipeline.make_pipeline(config, _photo_source(), 0, 1)


def test_task_asked_of_a_source_without_its_annotation():
  config = _config(("colorization", "normal_estimation"))
  with pytest.raises(ValueError, match="'normal_estimation' needs 'normals'"):
    pipeline.make_pipeline(config, _photo_source(), 0, 1)
  with pytest.raises(ValueError, match="'video_depth' needs 'video'"):
    pipeline.make_pipeline(_config(("video_depth",), media="video"), _photo_source(), 0, 1)


def test_a_later_example_without_the_annotation_names_the_example():
  source = [
    {"image": np.zeros((32, 32, 3), np.uint8), "depth": np.ones((32, 32), np.float32)}
    for _ in range(4)
  ]
  del source[2]["depth"]
  config = _config(("depth_estimation",), k_min=3, k_max=3, batch_size=1)
  with pytest.raises(ValueError, match="Source example 2: Task 'depth_estimation' needs"):
    _take(iter(pipeline.make_pipeline(config, source, 0, 1)), 4)


def test_unknown_task_name():
  config = _config()
  config.task_weights["segmentation"] = 1.0
  with pytest.raises(ValueError, match="Unknown task 'segmentation'"):
    pipeline.make_pipeline(config, _photo_source(), 0, 1)


@pytest.mark.parametrize(
  "change, message",
  [
    (dict(k_min=0), "k_min <= k_max"),
    (dict(k_min=4, k_max=3), "k_min <= k_max"),
    (dict(batch_size=3), "does not split evenly over 2 processes"),
  ],
)
def test_bad_config_values(change, message):
  config = _config()
  config.update(change)
  with pytest.raises(ValueError, match=message):
    pipeline.make_pipeline(config, _photo_source(), 0, 2)


def test_bad_weights_and_mixed_frame_counts():
  with pytest.raises(ValueError, match="All task weights are 0"):
    pipeline.make_pipeline(_config(()), _photo_source(), 0, 1)
  config = _config()
  config.task_weights.inpainting = -1.0
  with pytest.raises(ValueError, match="weight of 'inpainting' must be >= 0"):
    pipeline.make_pipeline(config, _photo_source(), 0, 1)
  with pytest.raises(ValueError, match="separate image and video pipelines"):
    pipeline.make_pipeline(_config(("colorization", "video_depth")), _photo_source(), 0, 1)


def test_small_images_and_tiny_sources():
  config = _config()
  config.resolution = 64
  with pytest.raises(ValueError, match="40x48, smaller than the resolution 64"):
    pipeline.make_pipeline(config, _photo_source(), 0, 1)
  config.allow_upscale = True
  batch = next(iter(pipeline.make_pipeline(config, _photo_source(), 0, 1)))
  assert batch["query"].shape == (4, 1, 64, 64, 3)
  with pytest.raises(ValueError, match="at least 2"):
    pipeline.make_pipeline(_config(), _photo_source(1), 0, 1)
  with pytest.raises(ValueError, match="both process_index and process_count"):
    pipeline.make_pipeline(_config(), _photo_source(), 0)
  with pytest.raises(ValueError, match="shard_index must be in"):
    pipeline.make_pipeline(_config(), _photo_source(), 2, 2)


# ---------------------------------------------------------------------------
# Examples holding NaN or inf.
# ---------------------------------------------------------------------------


def _corrupt_source(bad=5):
  source = _photo_source()
  source[bad] = {"image": np.full((40, 48, 3), np.nan, np.float32)}
  source[bad]["image"][0, 0] = np.inf
  return source


def test_a_nonfinite_example_stops_the_pipeline_naming_it():
  config = _config(k_min=3, k_max=3)
  iterator = iter(pipeline.make_pipeline(config, _corrupt_source(), 0, 1))
  with pytest.raises(episodes.NonFiniteExampleError, match=r"^Source 'source' example 5 \(colori"):
    _take(iterator, N)  # Every example is drawn within an epoch.


def test_nonfinite_examples_are_skipped_and_counted_when_asked():
  config = _config(k_min=3, k_max=3)
  config.skip_nonfinite = True
  batches = _take(iter(pipeline.make_pipeline(config, _corrupt_source(), 0, 1)), N)
  skipped = sum(int(b["skipped"].sum()) for b in batches)
  # Example 5 is a query once an epoch and often a context example: each time redrawn.
  assert skipped >= 1
  for b in batches:
    for key in ("context_inputs", "context_targets", "query", "target"):
      assert np.isfinite(b[key]).all()
    seen = [_index_of(b["target"][i]) for i in range(4)]
    seen += [_index_of(t) for i in range(4) for t in b["context_targets"][i]]
    assert 5 not in seen
  # The same batches as without skipping wherever example 5 was not drawn.
  config.skip_nonfinite = False
  clean = iter(pipeline.make_pipeline(config, _corrupt_source(), 0, 1))
  for b in batches:
    if b["skipped"].any():
      break
    _assert_same([b], [next(clean)])
