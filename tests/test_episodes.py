"""Episodes: context indices, one example's rendering, the layout and its padding."""

import numpy as np
import pytest

from lavin_jax.data import episodes
from lavin_jax.data import tasks

RES = 16


def _source(n, value=lambda i: 10 * i + 5):
  """n photographs, example i of the constant colour value(i)."""
  return [{"image": np.full((24, 20, 3), value(i), np.uint8)} for i in range(n)]


def _value(pixels):
  """The colour of a constant colorization target (T, H, W, 3) in [-1, 1]."""
  level = (pixels + 1.0) * 127.5
  assert np.ptp(level) < 1e-3
  return int(round(level.mean()))


# ---------------------------------------------------------------------------
# Crop and resize.
# ---------------------------------------------------------------------------


def test_fit_example_crops_resizes_and_scales_annotations():
  rng = np.random.default_rng(0)
  instances = np.zeros((40, 64), np.int32)
  instances[10:30, 20:40] = 7
  example = {
    "image": rng.integers(0, 256, (40, 64, 3), dtype=np.uint8),
    "instances": instances,
    "normals": np.tile(np.array([0, 0.6, -0.8], np.float32), (40, 64, 1)),
    "boxes": np.array([[10, 20, 30, 40], [0, 0, 10, 10]], np.float32),
    "label": np.int64(3),
  }
  out = episodes.fit_example(example, 16)  # Centred 40 x 40 crop at x0 = 12, scale 0.4.
  assert set(out) == {"image", "instances", "normals", "boxes"}
  assert out["image"].shape == (16, 16, 3) and out["image"].dtype == np.uint8
  assert set(np.unique(out["instances"])) == {0, 7}
  np.testing.assert_allclose(out["normals"], np.broadcast_to([0, 0.6, -0.8], (16, 16, 3)))
  np.testing.assert_allclose(out["boxes"], [[4, 3.2, 12, 11.2]])  # The second is cut off.
  mask = out["instances"] == 7
  rows, cols = np.nonzero(mask)
  assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (4, 12, 3, 11)

  video = {
    "video": rng.integers(0, 256, (3, 64, 48, 3), dtype=np.uint8),
    "flow": np.full((2, 64, 48, 2), 6.0, np.float32),
    "depth": np.full((3, 64, 48), 2.5, np.float32),
  }
  out = episodes.fit_example(video, 32, rng=np.random.default_rng(1))
  assert out["video"].shape == (3, 32, 32, 3) and out["depth"].shape == (3, 32, 32)
  np.testing.assert_allclose(out["flow"], 4.0)  # 48 -> 32 px scales flow by 2/3.
  np.testing.assert_allclose(out["depth"], 2.5)


def test_fit_example_moves_keypoints_and_masks_like_the_pixels():
  valid = np.zeros((40, 64), bool)
  valid[:, 32:] = True
  people = np.zeros((2, 17, 3), np.float32)
  people[0, 0] = 22.0, 10.0, 2  # Inside the centred 40 x 40 crop (x0 = 12).
  people[0, 1] = 5.0, 10.0, 1  # Left of it.
  people[0, 2] = 51.5, 39.5, 2  # Inside, in the last row and column.
  people[1, 3] = 60.0, 20.0, 2  # Right of it: the person is dropped.
  example = {"image": np.zeros((40, 64, 3), np.uint8), "valid": valid, "keypoints": people}
  out = episodes.fit_example(example, 16)  # Scale 0.4.
  assert out["valid"].dtype == bool and out["valid"].shape == (16, 16)
  np.testing.assert_array_equal(out["valid"], np.arange(16)[None].repeat(16, 0) >= 8)
  assert out["keypoints"].shape == (1, 17, 3) and out["keypoints"].dtype == np.float32
  want = np.zeros((17, 3), np.float32)
  want[0] = 4.0, 4.0, 2
  want[2] = 15.8, 15.8, 2
  np.testing.assert_allclose(out["keypoints"][0], want, atol=1e-5)
  with pytest.raises(ValueError, match="17 .x, y, v. triples"):
    episodes.fit_example(dict(example, keypoints=np.zeros((2, 16, 3))), 16)


# ---------------------------------------------------------------------------
# Context indices.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("pool_size, num_pairs", [(2, 1), (5, 4), (9, 3)])
def test_context_never_holds_the_query_and_is_distinct(pool_size, num_pairs):
  for seed in range(50):
    query = seed % pool_size
    context = episodes.context_indices(np.random.default_rng(seed), num_pairs, pool_size, query)
    assert len(context) == num_pairs == len(set(context.tolist()))
    assert query not in context
    assert context.min() >= 0 and context.max() < pool_size


def test_context_draws_are_one_choice_among_the_others():
  """The draws of `rng.choice(others)`: a pipeline's batches depend on them."""
  for seed in range(20):
    rng, want_rng = np.random.default_rng(seed), np.random.default_rng(seed)
    got = episodes.context_indices(rng, 3, 7, seed % 7)
    want = want_rng.choice(np.delete(np.arange(7), seed % 7), 3, replace=False)
    np.testing.assert_array_equal(got, want)
    assert rng.random() == want_rng.random()  # The generators are left alike.


def test_a_small_pool_repeats_only_when_allowed():
  seen = []
  for seed in range(30):
    context = episodes.context_indices(np.random.default_rng(seed), 5, 3, query=1, repeat=True)
    assert len(context) == 5 and set(context.tolist()) <= {0, 2}
    seen.append(context)
  assert {0, 2} <= set(np.concatenate(seen).tolist())
  # While the pool allows, repeat draws distinct examples all the same.
  context = episodes.context_indices(np.random.default_rng(0), 2, 3, query=1, repeat=True)
  assert sorted(context.tolist()) == [0, 2]
  with pytest.raises(ValueError, match="pool of 2 besides the query"):
    episodes.context_indices(np.random.default_rng(0), 3, 3, query=1)
  with pytest.raises(ValueError, match="pool of 3.$"):
    episodes.context_indices(np.random.default_rng(0), 4, 3)


def test_a_separate_pool_may_give_any_example():
  seen = set()
  for seed in range(30):
    context = episodes.context_indices(np.random.default_rng(seed), 3, 3)
    assert sorted(context.tolist()) == [0, 1, 2]
    seen.add(int(context[0]))
  assert seen == {0, 1, 2}


# ---------------------------------------------------------------------------
# Rendering and the layout.
# ---------------------------------------------------------------------------


def test_render_pair_is_window_crop_task():
  rng = np.random.default_rng(0)
  video = {
    "video": rng.integers(0, 256, (12, 24, 32, 3), dtype=np.uint8),
    "depth": rng.uniform(1, 9, (12, 24, 32)).astype(np.float32),
  }
  task = tasks.get_task("video_depth")  # 5 frames out of 12.
  got = episodes.render_pair(task, video, RES, np.random.default_rng(1), random_crop=True)
  rng = np.random.default_rng(1)
  example = episodes.fit_example(task.window(video, rng), RES, rng)
  for a, b in zip(got, task(example, rng)):
    np.testing.assert_array_equal(a, b)
  first = episodes.render_pair(task, video, RES, np.random.default_rng(1), window=False)
  want = task(episodes.fit_example(tasks.take_frames(video, 0, 5), RES), None)
  for a, b in zip(first, want):
    np.testing.assert_array_equal(a, b)


def test_assemble_pads_the_context_with_zeros():
  rng = np.random.default_rng(0)
  query = tuple(rng.uniform(-1, 1, (2, 1, 4, 4, 3)).astype(np.float32))
  context = tuple(rng.uniform(-1, 1, (2, 3, 1, 4, 4, 3)).astype(np.float32))
  episode = episodes.assemble(query, context, task_id=7, k_max=5)
  assert set(episode) == {
    "context_inputs",
    "context_targets",
    "query",
    "target",
    "num_pairs",
    "task_id",
  }
  for key, pairs in (("context_inputs", context[0]), ("context_targets", context[1])):
    assert episode[key].shape == (5, 1, 4, 4, 3) and episode[key].dtype == np.float32
    np.testing.assert_array_equal(episode[key][:3], pairs)
    assert not episode[key][3:].any()
  np.testing.assert_array_equal(episode["query"], query[0])
  np.testing.assert_array_equal(episode["target"], query[1])
  assert episode["num_pairs"] == 3 and episode["num_pairs"].dtype == np.int32
  assert episode["task_id"] == 7 and episode["task_id"].dtype == np.int32
  unpadded = episodes.assemble(query, context, task_id=7)
  assert unpadded["context_inputs"].shape == (3, 1, 4, 4, 3)


def test_render_episode_renders_the_query_and_the_context_examples():
  task = tasks.get_task("colorization")
  source = _source(6)
  rng = np.random.default_rng(0)
  episode = episodes.render_episode(task, source, 4, [0, 5], [rng] * 3, RES, k_max=4)
  assert _value(episode["target"]) == 45
  assert [_value(t) for t in episode["context_targets"][:2]] == [5, 55]
  assert not episode["context_inputs"][2:].any() and not episode["context_targets"][2:].any()
  assert episode["num_pairs"] == 2 and episode["task_id"] == task.id
  assert episode["query"].shape == (1, RES, RES, 3)
  # A separate pool gives the context; each slot's generator renders it.
  pool = _source(3, value=lambda i: 200 + i)
  rngs = [np.random.default_rng(s) for s in range(3)]
  episode = episodes.render_episode(task, source, 0, [2, 0], rngs, RES, pool=pool)
  assert _value(episode["target"]) == 5
  assert [_value(t) for t in episode["context_targets"]] == [202, 200]
  assert episode["context_inputs"].shape == (2, 1, RES, RES, 3)
  with pytest.raises(ValueError):  # One generator per context slot and the query.
    episodes.render_episode(task, source, 0, [2, 0], rngs[:2], RES, pool=pool)
  assert "query_example" not in episode


def test_render_episode_keeps_the_query_example_on_request():
  task = tasks.get_task("foreground_segmentation")
  rng = np.random.default_rng(0)
  instances = np.zeros((24, 20), np.int32)
  instances[4:12, 2:10] = 3
  source = [{"image": np.zeros((24, 20, 3), np.uint8), "instances": instances}] * 2
  episode = episodes.render_episode(task, source, 1, [0], [rng] * 2, RES, keep_query=True)
  fitted = episodes.fit_example(source[1], RES)
  assert set(episode["query_example"]) == {"image", "instances"}
  np.testing.assert_array_equal(episode["query_example"]["instances"], fitted["instances"])
  np.testing.assert_array_equal(episode["target"], task(fitted, rng)[1])


def test_render_episode_names_the_example_that_does_not_fit():
  task = tasks.get_task("depth_estimation")
  source = [
    {"image": np.zeros((RES, RES, 3), np.uint8), "depth": np.ones((RES, RES), np.float32)}
    for _ in range(3)
  ]
  pool = [dict(source[0]), {"image": np.zeros((RES, RES, 3), np.uint8)}]
  rngs = [np.random.default_rng(0)] * 2
  with pytest.raises(ValueError, match="Context example 1: Task 'depth_estimation' needs"):
    episodes.render_episode(task, source, 0, [1], rngs, RES, pool=pool)
  del source[2]["depth"]
  with pytest.raises(ValueError, match="Source example 2: Task 'depth_estimation' needs"):
    episodes.render_episode(task, source, 0, [2], rngs, RES)
  with pytest.raises(ValueError, match="Source example 1: .*smaller than the resolution"):
    episodes.render_episode(task, source, 1, [0], rngs, 2 * RES)
