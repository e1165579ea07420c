"""Task mixtures: who feeds which task, seeded exact interleaving, stills and clips in a run."""

import collections

import numpy as np
import pytest

from lavin_jax.configs import data as data_configs
from lavin_jax.data import episodes
from lavin_jax.data import mixture
from lavin_jax.data import pipeline
from lavin_jax.data import specs
from lavin_jax.data import tasks

IMAGE_KEYS = ("image", "depth", "normals", "instances", "semantic", "boxes")
CLIP_KEYS = ("video", "depth", "normals", "instances", "semantic", "flow")


def _config(weights, batch_size=4, k_max=2):
  c = data_configs.pipeline("image")
  c.resolution, c.batch_size, c.k_min, c.k_max = 32, batch_size, 1, k_max
  c.read_threads, c.read_buffer_size = 1, 4
  for name in c.task_weights:
    c.task_weights[name] = float(weights.get(name, 0.0))
  return c


# ---------------------------------------------------------------------------
# The plan.
# ---------------------------------------------------------------------------


def test_each_task_draws_from_its_sources_by_size():
  config = _config({"colorization": 3.0, "depth_estimation": 1.0, "video_depth": 2.0})
  sources = {
    "photos": (30, ("image",)),
    "scenes": (10, IMAGE_KEYS),
    "clips": (5, CLIP_KEYS),
  }
  plans = {p.name: p for p in mixture.plan(config, sources)}
  assert set(plans) == {"photos", "scenes", "clips"}
  joint = collections.defaultdict(float)
  for p in plans.values():
    assert p.probs.sum() == pytest.approx(1.0)
    for task, prob in zip(p.tasks, p.probs):
      joint[p.name, task.name] = p.weight * prob
  # Colorization (1/2 of all episodes) reads stills: 30 of photos to 10 of scenes.
  assert joint["photos", "colorization"] == pytest.approx(0.5 * 30 / 40)
  assert joint["scenes", "colorization"] == pytest.approx(0.5 * 10 / 40)
  assert joint["scenes", "depth_estimation"] == pytest.approx(1 / 6)
  assert joint["clips", "video_depth"] == pytest.approx(1 / 3)
  assert ("photos", "depth_estimation") not in joint
  assert {p.name: p.frames for p in plans.values()} == {"photos": 1, "scenes": 1, "clips": 5}
  assert sum(p.weight for p in plans.values()) == pytest.approx(1.0)


def test_plan_errors_and_unused_sources():
  config = _config({"colorization": 1.0, "optical_flow": 1.0})
  with pytest.raises(ValueError, match="Task 'optical_flow' needs 'video' and 'flow', but no"):
    mixture.plan(config, {"photos": (4, ("image",))})
  with pytest.raises(ValueError, match="Source 'clips' has 1 examples"):
    mixture.plan(config, {"photos": (4, ("image",)), "clips": (1, CLIP_KEYS)})
  both = mixture.plan(config, {"a": (4, ("image",)), "b": (4, CLIP_KEYS), "c": (4, ("depth",))})
  assert [p.name for p in both] == ["a", "b"]  # 'c' feeds no weighted task: left out
  with pytest.raises(ValueError, match="stills or clips, not both"):
    mixture.plan(config, {"odd": (4, ("image", "video", "flow"))})


# ---------------------------------------------------------------------------
# Seeded mixing.
# ---------------------------------------------------------------------------


def test_seeded_mix_keeps_exact_proportions_in_a_seeded_order():
  mix = mixture.SeededMix([0.5, 0.25, 0.25], seed=3)
  picks = [mix[i] for i in range(40)]  # 10 cycles of (2, 1, 1)
  for cycle in range(10):
    block = [d for d, _ in picks[4 * cycle : 4 * cycle + 4]]
    assert sorted(block) == [0, 0, 1, 2]
  for dataset in range(3):  # Each dataset's elements come in order, none skipped.
    positions = [j for d, j in picks if d == dataset]
    assert positions == list(range(len(positions)))
  assert [mixture.SeededMix([0.5, 0.25, 0.25], seed=3)[i] for i in reversed(range(40))] == (
    picks[::-1]
  )
  other = [mixture.SeededMix([0.5, 0.25, 0.25], seed=4)[i] for i in range(40)]
  assert other != picks
  uneven = mixture.SeededMix([0.7, 0.3], seed=0)
  firsts = [uneven[i][0] for i in range(1000)]
  assert firsts.count(0) == 700


# ---------------------------------------------------------------------------
# Stills and clips in one run (the built-in synthetic data set).
# ---------------------------------------------------------------------------

VIDEO_TASKS = ("video_depth", "optical_flow", "normal_to_video")
IMAGE_TASKS = ("depth_estimation", "colorization", "foreground_segmentation")


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("synthetic")
  return {
    "images": specs.get_source(f"synthetic:tiny,content=images,data_dir={data_dir}"),
    "clips": specs.get_source(f"synthetic:tiny,content=clips,data_dir={data_dir}"),
    "photos": specs.get_source("photos"),
  }


def _mixed_config():
  return _config({**dict.fromkeys(IMAGE_TASKS, 1.0), **dict.fromkeys(VIDEO_TASKS, 1.0)})


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_batches_of_one_frame_count_each_interleaved(sources):
  config = _mixed_config()
  batches = _take(iter(pipeline.make_mixture(config, sources, 0, 1)), 12)
  frames = [b["query"].shape[1] for b in batches]
  assert set(frames) == {1, 5}
  video_ids = {tasks.task_id(n) for n in VIDEO_TASKS}
  for b, t in zip(batches, frames):
    assert b["context_inputs"].shape == (4, b["num_pairs"][0], t, 32, 32, 3)
    assert np.all(b["num_pairs"] == b["num_pairs"][0])
    assert all((int(i) in video_ids) == (t == 5) for i in b["task_id"])
  # Half the episodes are clips: 6 of every 12 batches.
  assert frames.count(5) == 6
  again = _take(iter(pipeline.make_mixture(config, sources, 0, 1)), 12)
  for a, b in zip(batches, again):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  config.seed = 2  # (seed 1 happens to draw the same first 12 frame counts)
  other = [
    b["query"].shape[1] for b in _take(iter(pipeline.make_mixture(config, sources, 0, 1)), 12)
  ]
  assert other != frames


def test_processes_share_the_frame_count_of_every_step(sources):
  config = _mixed_config()
  halves = [_take(iter(pipeline.make_mixture(config, sources, p, 2)), 8) for p in range(2)]
  for a, b in zip(*halves):
    assert a["query"].shape == b["query"].shape and a["query"].shape[0] == 2
    assert not np.array_equal(a["query"], b["query"])


def test_mixture_resumes_from_its_state(sources):
  config = _mixed_config()
  dataset = pipeline.make_mixture(config, sources, 0, 1)
  iterator = iter(dataset)
  _take(iterator, 5)
  state = iterator.get_state()
  expected = _take(iterator, 4)
  resumed = iter(dataset)
  resumed.set_state(state)
  for a, b in zip(expected, _take(resumed, 4)):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_tasks_come_from_the_sources_carrying_them(sources):
  """Colorization reads the stills of both image sources, depth only the scenes'."""
  config = _config({"colorization": 1.0, "depth_estimation": 1.0}, batch_size=8, k_max=1)
  config.random_crop = False
  seen = collections.defaultdict(set)
  for b in _take(iter(pipeline.make_mixture(config, sources, 0, 1)), 10):
    for target, task_id in zip(b["target"], b["task_id"]):
      seen[tasks.TASK_NAMES[task_id]].add(target.tobytes())

  def targets(name, source):
    task = tasks.get_task(name, config.task)
    examples = (source[i] for i in range(len(source)))
    return {task(episodes.fit_example(e, 32), None)[1].tobytes() for e in examples}

  scenes, photos = (
    targets("colorization", sources["images"]),
    targets("colorization", sources["photos"]),
  )
  assert seen["colorization"] <= scenes | photos
  assert seen["colorization"] & scenes and seen["colorization"] & photos
  assert seen["depth_estimation"] <= targets("depth_estimation", sources["images"])
