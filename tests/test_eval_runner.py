"""Evaluation runner: episodes, metrics against numpy / scikit-image, outputs, bad inputs."""

import json
import pathlib

import jax
import numpy as np
from PIL import Image
import pytest
from skimage import metrics as skm
import splitmix_weights
import tiny_model

from lavin_jax.configs import evaluate as evaluate_configs
from lavin_jax.configs import tasks as task_table
from lavin_jax.data import episodes as episodes_lib
from lavin_jax.data import tasks
from lavin_jax.eval import fid
from lavin_jax.eval import lpips
from lavin_jax.eval import panoptic
from lavin_jax.eval import pose
from lavin_jax.eval import runner
from lavin_jax.inference import pipeline as inference
from lavin_jax.io import pixels

H, W, FRAMES, RES = 40, 48, 10, 32
NUM_IMAGES, NUM_VIDEOS = 5, 3
FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "metrics"


def _annotations(rng, lead, shift):
  normals = rng.normal(size=lead + (H, W, 3)).astype(np.float32)
  instances = np.zeros(lead + (H, W), np.int32)
  instances[..., 4 + shift : 18, 8:26] = 1
  instances[..., 20:36, 18 + shift : 44] = 2
  return {
    "depth": rng.uniform(0.5, 30.0, lead + (H, W)).astype(np.float32),
    "normals": normals / np.linalg.norm(normals, axis=-1, keepdims=True),
    "instances": instances,
    "semantic": np.where(instances > 0, 1, 3).astype(np.int32),
  }


class Source(list):
  """Examples in a list, with the thing classes of their panoptic labels."""

  thing_classes = (1,)


def _person(i):
  """Four labelled joints far apart (nose, left shoulder, left hip, left ankle)."""
  person = np.zeros((1, 17, 3), np.float32)
  person[0, [0, 5, 11, 15]] = [[10 + i, 8, 2], [34, 8 + i, 2], [10, 30, 1], [34 - i, 30, 2]]
  return person


@pytest.fixture(scope="module")
def image_source():
  rng = np.random.default_rng(0)
  return Source(
    {
      "image": rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
      "boxes": np.array([[4 + i, 8, 18, 26], [20, 18 + i, 36, 44]], np.float32),
      "keypoints": _person(i),
      **_annotations(rng, (), i),
    }
    for i in range(NUM_IMAGES)
  )


@pytest.fixture(scope="module")
def video_source():
  rng = np.random.default_rng(1)
  return [
    {
      "video": rng.integers(0, 256, (FRAMES, H, W, 3), dtype=np.uint8),
      "flow": rng.normal(0, 6, (FRAMES - 1, H, W, 2)).astype(np.float32),
      **_annotations(rng, (FRAMES,), i),
    }
    for i in range(NUM_VIDEOS)
  ]


def _config(task, num_examples=3, num_pairs=2, batch_size=2, **kw):
  c = evaluate_configs.get_config()
  c.task = task
  c.num_examples = num_examples
  c.num_pairs = num_pairs
  c.batch_size = batch_size
  c.resolution = RES
  c.update(kw)
  return c


def _source(name, image_source, video_source):
  return image_source if task_table.TASKS[name].media == "image" else video_source


def _episodes(config, source, context_source=None):
  task = tasks.get_task(config.task, config.task_options)
  return [
    runner.make_episode(task, source, context_source, i, config) for i in range(config.num_examples)
  ]


def copy_query(context_inputs, context_targets, query, *, seed):
  del context_inputs, context_targets, seed
  return query


def oracle(episodes):
  """A predict_fn answering each query with its ground-truth target."""
  targets = {e["query"].tobytes(): e["target"] for e in episodes}

  def predict(context_inputs, context_targets, query, *, seed):
    del context_inputs, context_targets, seed
    return np.stack([targets[q.tobytes()] for q in query])

  return predict


def must_not_run(*args, **kwargs):
  raise AssertionError("predict_fn ran although the input was bad.")


# ---------------------------------------------------------------------------
# The table and the episodes.
# ---------------------------------------------------------------------------


def test_every_task_has_metrics():
  assert tuple(tasks.REGISTRY) == task_table.TASK_NAMES
  for name, info in task_table.TASKS.items():
    families = info.metrics
    assert families and set(families) <= set(runner.METRIC_FAMILIES), name
    if set(families) & set(runner.DECODED_FAMILIES):
      assert tasks.REGISTRY[name].decode_fn is not None, name


def test_episode_renders_the_query_and_distinct_other_examples(image_source):
  config = _config("depth_estimation", num_examples=NUM_IMAGES, num_pairs=3)
  task = tasks.get_task("depth_estimation")
  episodes = _episodes(config, image_source)
  for i, episode in enumerate(episodes):
    want = task(episodes_lib.fit_example(image_source[i], RES), np.random.default_rng(0))
    np.testing.assert_array_equal(episode["query"], want[0])
    np.testing.assert_array_equal(episode["target"], want[1])
    context = episode["context_indices"]
    assert len(set(context.tolist())) == 3 and i not in context
    assert context.min() >= 0 and context.max() < NUM_IMAGES
    for slot, j in enumerate(context):
      pair = task(episodes_lib.fit_example(image_source[j], RES), np.random.default_rng(0))
      np.testing.assert_array_equal(episode["context_inputs"][slot], pair[0])
      np.testing.assert_array_equal(episode["context_targets"][slot], pair[1])
  again = _episodes(config, image_source)
  assert all(
    np.array_equal(a["context_indices"], b["context_indices"]) for a, b in zip(episodes, again)
  )
  config.seed = 1
  other_seed = _episodes(config, image_source)
  assert any(
    not np.array_equal(a["context_indices"], b["context_indices"])
    for a, b in zip(episodes, other_seed)
  )


def test_context_source_supplies_the_pairs(image_source, tmp_path):
  rng = np.random.default_rng(5)
  contexts = [
    {
      "image": np.full((H, W, 3), 10 * k, np.uint8),
      "depth": rng.uniform(1, 9, (H, W)).astype(np.float32),
    }
    for k in range(3)
  ]
  seen = []

  def predict(context_inputs, context_targets, query, *, seed):
    seen.append(context_inputs)
    return query

  config = _config("depth_estimation", num_pairs=3)
  report = runner.evaluate(predict, image_source, config, tmp_path, context_source=contexts)
  for example in report["examples"]:
    assert sorted(example["context"]) == [0, 1, 2]  # All of the context source.
  values = np.unique(np.concatenate(seen))
  np.testing.assert_allclose(values, pixels.to_float(np.array([0, 10, 20], np.uint8)))


# ---------------------------------------------------------------------------
# Metrics: an exact predictor scores perfectly; a copy of the query scores as numpy says.
# ---------------------------------------------------------------------------

PERFECT = {
  "mse": 0.0,
  "ssim": 1.0,
  "abs_rel": 0.0,
  "delta1": 1.0,
  "mean_angle": 0.0,
  "within_11.25": 1.0,
  "miou": 1.0,
  "segment_miou": 1.0,
  "epe": 0.0,
  "pck": 1.0,
  "keypoint_precision": 1.0,
  "pq": 1.0,
  "sq": 1.0,
  "rq": 1.0,
}


@pytest.mark.parametrize("name", tasks.TASK_NAMES)
def test_ground_truth_scores_perfectly(name, image_source, video_source, tmp_path):
  source = _source(name, image_source, video_source)
  config = _config(name, num_examples=2, num_pairs=1)
  report = runner.evaluate(oracle(_episodes(config, source)), source, config, tmp_path)
  scores = report["metrics"]
  assert scores, name
  for key, value in scores.items():
    if key == "psnr":
      assert value is None  # Infinite: written as null.
    else:
      np.testing.assert_allclose(value, PERFECT[key], atol=1e-4, err_msg=f"{name} {key}")


def _np_depth(pred, target, config):
  """AbsRel and delta1 per frame, the alignment by numpy least squares."""
  p = tasks.decode_depth(pred, config.task_options).reshape(len(pred), -1).astype(np.float64)
  g = tasks.decode_depth(target, config.task_options).reshape(len(pred), -1).astype(np.float64)
  abs_rel, delta1 = [], []
  for pf, gf in zip(p, g):
    (scale, shift), *_ = np.linalg.lstsq(np.stack([pf, np.ones_like(pf)], 1), gf, rcond=None)
    aligned = np.maximum(scale * pf + shift, 1e-3)
    abs_rel.append(np.mean(np.abs(aligned - gf) / gf))
    delta1.append(np.mean(np.maximum(aligned / gf, gf / aligned) < 1.25))
  return {"abs_rel": abs_rel, "delta1": delta1}


def _np_normals(pred, target, config):
  del config
  p, g = tasks.decode_normals(pred), tasks.decode_normals(target)
  cos = np.sum(p * g, -1) / np.linalg.norm(p, axis=-1) / np.linalg.norm(g, axis=-1)
  angle = np.degrees(np.arccos(np.clip(cos, -1, 1))).reshape(len(pred), -1)
  return {"mean_angle": angle.mean(1), "within_11.25": (angle < 11.25).mean(1)}


def _np_restoration(pred, target, config):
  del config
  kw = dict(
    data_range=2.0, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
  )
  return {
    "psnr": [skm.peak_signal_noise_ratio(t, p, data_range=2.0) for p, t in zip(pred, target)],
    "ssim": [skm.structural_similarity(t, p, **kw) for p, t in zip(pred, target)],
  }


def _np_flow(pred, target, config):
  p = tasks.decode_flow(pred[1:], config.task_options)
  g = tasks.decode_flow(target[1:], config.task_options)
  return {"epe": np.sqrt(((p - g) ** 2).sum(-1)).mean((1, 2))}


def _np_segments(pred, target, config):
  del config
  out = []
  for p, t in zip(tasks.decode_palette(pred), tasks.decode_palette(target)):
    ids = set(np.unique(p)) | set(np.unique(t))
    out.append(np.mean([((p == k) & (t == k)).sum() / ((p == k) | (t == k)).sum() for k in ids]))
  return {"segment_miou": out}


def _np_masks(pred, target, config):
  del config
  p, t = pred.mean(-1) > 0, target.mean(-1) > 0
  return {"intersection": (p & t).sum(), "union": (p | t).sum()}


NUMPY_METRICS = {
  "depth_estimation": _np_depth,
  "video_depth": _np_depth,
  "normal_estimation": _np_normals,
  "de_raining": _np_restoration,
  "de_motion_blur": _np_restoration,
  "optical_flow": _np_flow,
  "instance_segmentation": _np_segments,
  "foreground_segmentation": _np_masks,
  "detection": _np_masks,
}


@pytest.mark.parametrize("name", sorted(NUMPY_METRICS))
def test_query_copy_scores_match_numpy(name, image_source, video_source, tmp_path):
  source = _source(name, image_source, video_source)
  config = _config(name, num_examples=3, num_pairs=1)
  report = runner.evaluate(copy_query, source, config, tmp_path)
  per_example = [
    NUMPY_METRICS[name](e["query"], e["target"], config) for e in _episodes(config, source)
  ]
  if name in ("foreground_segmentation", "detection"):  # Pooled over the data set.
    inter = sum(v["intersection"] for v in per_example)
    union = sum(v["union"] for v in per_example)
    np.testing.assert_allclose(report["metrics"]["miou"], inter / union, rtol=1e-6)
    for example, v in zip(report["examples"], per_example):
      np.testing.assert_allclose(example["metrics"]["miou"], v["intersection"] / v["union"])
    assert report["metrics"]["miou"] < 0.9
    return
  for key in per_example[0]:
    frames = np.array([v[key] for v in per_example], np.float64)  # (N, T)
    got = [e["metrics"][key] for e in report["examples"]]
    np.testing.assert_allclose(got, frames.mean(1), rtol=1e-4, atol=1e-4, err_msg=key)
    np.testing.assert_allclose(report["metrics"][key], frames.mean(), rtol=1e-4, atol=1e-4)
    assert not np.allclose(frames, PERFECT.get(key, np.inf)), key  # Not trivially perfect.


def test_panoptic_quality_of_a_hand_computed_frame():
  semantic = np.array([[2, 2, 2, 2, 0, 0, 1, 1]] * 2 + [[1, 1, 1, 1, 2, 2, 1, 1]] * 2)
  instances = np.array([[0] * 8] * 2 + [[1, 1, 2, 2, 0, 0, 0, 0]] * 2)  # Columns 6-7: crowd.
  pred_classes = np.array([[2] * 6 + [1, 1]] * 2 + [[1, 1, 1, 1, 2, 2, 1, 1]] * 2)
  pred_regions = np.array([[3] * 6 + [6, 6]] * 2 + [[1, 1, 1, 2, 4, 4, 6, 6]] * 2)
  quality = panoptic.PanopticQuality(thing_classes=[1])
  quality.add(pred_classes, pred_regions, semantic, instances)
  # Class 1: region 1 matches instance 1 (IoU 4 / 6); region 2 has IoU 2 / 4 with
  # instance 2, not above 0.5: one FP, one FN; region 6 lies on the crowd: no FP.
  # Class 2 (stuff): regions 3 and 4 are one segment of 16 pixels, 4 on void: IoU 1.
  np.testing.assert_allclose(quality.counts[1], [1, 1, 1, 2 / 3])
  np.testing.assert_allclose(quality.counts[2], [1, 0, 0, 1])
  pq = quality.result()
  np.testing.assert_allclose([pq["pq"], pq["sq"], pq["rq"]], [(1 / 3 + 1) / 2, 5 / 6, 3 / 4])
  quality.add(np.zeros_like(semantic), pred_regions, semantic, instances)  # Nothing found.
  np.testing.assert_allclose(quality.counts[1], [1, 1, 3, 2 / 3])  # The crowd is no FN.
  assert panoptic.PanopticQuality([1]).result() == {"pq": 1.0, "sq": 1.0, "rq": 1.0}


def test_keypoint_matching_is_one_to_one_within_the_radius():
  truth = np.zeros((2, 17, 3), np.float32)
  truth[0, 0] = 10, 10, 2
  truth[1, 0] = 14, 10, 1
  truth[0, 5] = 30, 30, 2  # Nothing decoded near it.
  points = np.zeros((17, 3, 3), np.float32)
  points[0, :3] = [[12, 10, 2], [13, 10, 2], [40, 40, 2]]  # Two within 3 px, one far.
  points[7, 0] = 5, 5, 2  # A joint with no true keypoint.
  counts = pose.match_counts(points, truth, radius=3.0)
  # Closest first: (14, 10)-(13, 10), then (10, 10)-(12, 10); (40, 40) and joint 7 unmatched.
  np.testing.assert_array_equal(counts, [2, 3, 4])
  assert pose.scores(counts) == {"pck": 2 / 3, "keypoint_precision": 0.5}
  np.testing.assert_array_equal(pose.match_counts(points, truth, radius=1.5), [1, 3, 4])
  assert pose.scores(np.zeros(3)) == {"pck": 1.0, "keypoint_precision": 1.0}


def _half_valid(source):
  """The examples with 'valid' on their left half and unknown depth in the top rows."""
  out = Source()
  for example in source:
    valid = np.zeros((H, W), bool)
    valid[:, : W // 2] = True
    depth = example["depth"].copy()
    depth[:4] = 0.0
    out.append(dict(example, valid=valid, depth=depth))
  return out


@pytest.mark.parametrize("name", ["depth_estimation", "normal_estimation", "detection"])
def test_invalid_pixels_are_not_scored(name, image_source, tmp_path):
  source = _half_valid(image_source)
  config = _config(name, num_examples=3, num_pairs=1)
  truth = oracle(_episodes(config, source))

  def right_half_wrong(context_inputs, context_targets, query, *, seed):
    pred = truth(context_inputs, context_targets, query, seed=seed).copy()
    pred[..., RES // 2 :, :] = np.random.default_rng(seed).uniform(
      -1, 1, pred[..., RES // 2 :, :].shape
    )
    return pred

  masked = runner.evaluate(right_half_wrong, source, config, tmp_path)["metrics"]
  unmasked = runner.evaluate(right_half_wrong, image_source, config, tmp_path)["metrics"]
  for key, value in masked.items():
    np.testing.assert_allclose(value, PERFECT[key], atol=1e-4, err_msg=key)
    assert not np.isclose(unmasked[key], PERFECT[key], atol=1e-2), key


def test_panoptic_needs_the_thing_classes(image_source, tmp_path):
  config = _config("panoptic_segmentation")
  with pytest.raises(ValueError, match="needs the source's `thing_classes`"):
    runner.evaluate(must_not_run, list(image_source), config, tmp_path)


# ---------------------------------------------------------------------------
# LPIPS and FID, with deterministic weight files.
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
  folder = tmp_path_factory.mktemp("weights")
  vgg = splitmix_weights.save_state_dict(
    FIXTURES / "vgg16_features_keys.json", folder / lpips.VGG16_FILE
  )
  inception = splitmix_weights.save_state_dict(
    FIXTURES / "pt_inception_keys.json", folder / fid.INCEPTION_FILE
  )
  return {"lpips": (vgg, FIXTURES / "lpips_vgg_lin_v0.1.pth"), "fid": inception}


def test_lpips_and_fid_when_weights_are_given(image_source, weight_files, tmp_path):
  config = _config("inpainting", num_examples=3, num_pairs=1, batch_size=3)
  without = runner.evaluate(copy_query, image_source, config, tmp_path)
  assert set(without["metrics"]) == {"mse", "psnr"}
  assert set(without["skipped_metrics"]) == {"lpips", "fid"}

  report = runner.evaluate(
    copy_query,
    image_source,
    config,
    tmp_path,
    lpips_weights=weight_files["lpips"],
    fid_weights=weight_files["fid"],
  )
  assert not report["skipped_metrics"]
  episodes = _episodes(config, image_source)
  query = np.concatenate([e["query"] for e in episodes])  # (N, H, W, 3), T = 1
  target = np.concatenate([e["target"] for e in episodes])
  module, params = lpips.load_lpips(*weight_files["lpips"])
  want = np.asarray(jax.jit(module.apply)({"params": params}, query, target))
  np.testing.assert_allclose([e["metrics"]["lpips"] for e in report["examples"]], want, rtol=1e-5)
  np.testing.assert_allclose(report["metrics"]["lpips"], want.mean(), rtol=1e-5)
  inception, variables = fid.load_fid_inception(weight_files["fid"])
  features = jax.jit(inception.apply)
  f_pred, f_true = (np.asarray(features(variables, x), np.float64) for x in (query, target))
  # Closed form for n samples: with centred rows A (n, 2048) and S = A^T A / (n - 1),
  # tr sqrt(S1^1/2 S2 S1^1/2) is the nuclear norm of A1 A2^T / (n - 1).
  a_pred, a_true = f_pred - f_pred.mean(0), f_true - f_true.mean(0)
  n = len(query)
  want_fid = (
    np.sum((f_pred.mean(0) - f_true.mean(0)) ** 2)
    + (np.sum(a_pred**2) + np.sum(a_true**2)) / (n - 1)
    - 2 * np.linalg.norm(a_pred @ a_true.T, "nuc") / (n - 1)
  )
  np.testing.assert_allclose(report["metrics"]["fid"], want_fid, rtol=1e-4)
  assert report["metrics"]["fid"] > 0

  exact = runner.evaluate(
    oracle(episodes), image_source, config, tmp_path, lpips_weights=weight_files["lpips"]
  )
  np.testing.assert_allclose(exact["metrics"]["lpips"], 0.0, atol=1e-6)


# ---------------------------------------------------------------------------
# Outputs.
# ---------------------------------------------------------------------------


def _uint8(x):
  return np.round((x + 1) * 127.5).astype(np.uint8)


def test_report_and_grid(image_source, tmp_path):
  config = _config(
    "depth_estimation",
    num_examples=3,
    num_pairs=3,
    batch_size=2,
    grid_examples=2,
    grid_pairs=2,
    seed=7,
  )
  seeds = []

  def predict(context_inputs, context_targets, query, *, seed):
    assert context_inputs.shape == context_targets.shape == query.shape[:1] + (3, 1, RES, RES, 3)
    seeds.append(seed)
    return -query

  report = runner.evaluate(
    predict, image_source, config, tmp_path / "out", run_info={"checkpoint": "tiny"}
  )
  assert len(seeds) == 2 and seeds[0] != seeds[1]  # Batches of 2 and 1, own seeds.
  written = json.loads((tmp_path / "out" / "depth_estimation.json").read_text())
  assert written == report
  assert (
    report["task"],
    report["num_examples"],
    report["num_pairs"],
    report["seed"],
    report["resolution"],
    report["num_frames"],
  ) == ("depth_estimation", 3, 3, 7, RES, 1)
  assert report["config"] == json.loads(json.dumps(config.to_dict()))
  assert report["run"] == {"checkpoint": "tiny"}
  assert set(report["metrics"]) == {"abs_rel", "delta1"}
  assert [e["index"] for e in report["examples"]] == [0, 1, 2]
  assert all(len(e["context"]) == 3 for e in report["examples"])
  for key, value in report["metrics"].items():
    np.testing.assert_allclose(value, np.mean([e["metrics"][key] for e in report["examples"]]))

  grid = np.asarray(Image.open(tmp_path / "out" / report["grid"]))
  step = RES + 2
  assert grid.shape == (2 * step - 2, 7 * step - 2, 3)  # 2 pairs, query, pred, target.
  episodes = _episodes(config, image_source)
  for row in range(2):
    e = episodes[row]
    cells = [
      e["context_inputs"][0],
      e["context_targets"][0],
      e["context_inputs"][1],
      e["context_targets"][1],
      e["query"],
      -e["query"],
      e["target"],
    ]
    for col, clip in enumerate(cells):
      got = grid[row * step : row * step + RES, col * step : col * step + RES]
      np.testing.assert_array_equal(got, _uint8(clip[0]), err_msg=f"{row} {col}")
  assert (grid[RES:step] == 255).all()  # The gap between rows.
  again = runner.evaluate(predict, image_source, config, tmp_path / "out")
  assert seeds[2:] == seeds[:2] and again["metrics"] == report["metrics"]
  assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_video_grid_shows_first_middle_and_last_frames(video_source, tmp_path):
  config = _config("video_depth", num_examples=1, num_pairs=1, grid_pairs=1)
  report = runner.evaluate(copy_query, video_source, config, tmp_path)
  grid = np.asarray(Image.open(tmp_path / report["grid"]))
  assert grid.shape == (3 * RES, 5 * (RES + 2) - 2, 3)  # 1 pair, query, pred, target.
  target = _episodes(config, video_source)[0]["target"]  # (5, RES, RES, 3)
  want = np.concatenate([target[0], target[2], target[4]])
  np.testing.assert_array_equal(grid[:, 4 * (RES + 2) :], _uint8(want))


# ---------------------------------------------------------------------------
# Bad inputs: a clear error before anything runs.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
  "change, error, match",
  [
    (dict(task="depth"), ValueError, "Unknown task 'depth'"),
    (dict(resolution=0), ValueError, "resolution must be positive"),
    (dict(resolution=64), ValueError, "smaller than the resolution 64"),
    (dict(num_examples=NUM_IMAGES + 1), ValueError, "source has only 5"),
    (dict(num_pairs=NUM_IMAGES), ValueError, "num_pairs is 5.*only 4"),
    (dict(num_pairs=0), ValueError, "num_pairs must be >= 1"),
    (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
  ],
)
def test_bad_settings(change, error, match, image_source, tmp_path):
  config = _config("depth_estimation")
  config.update(change)
  with pytest.raises(error, match=match):
    runner.evaluate(must_not_run, image_source, config, tmp_path)
  assert not list(tmp_path.iterdir())


def test_source_without_the_annotation(image_source, tmp_path):
  plain = [{"image": e["image"]} for e in image_source]
  config = _config("depth_estimation")
  with pytest.raises(ValueError, match=r"source does not fit.*needs 'depth'"):
    runner.evaluate(must_not_run, plain, config, tmp_path)
  with pytest.raises(ValueError, match=r"context source does not fit.*needs 'depth'"):
    runner.evaluate(must_not_run, image_source, config, tmp_path, context_source=plain)
  with pytest.raises(ValueError, match=r"needs 'video'"):
    runner.evaluate(must_not_run, image_source, _config("video_depth"), tmp_path)


def test_missing_weight_files(image_source, weight_files, tmp_path):
  config = _config("inpainting")
  with pytest.raises(FileNotFoundError, match=lpips.LIN_FILE):
    runner.evaluate(
      must_not_run,
      image_source,
      config,
      tmp_path,
      lpips_weights=(weight_files["lpips"][0], tmp_path / "nope.pth"),
    )
  with pytest.raises(FileNotFoundError, match=f"{fid.INCEPTION_FILE}.*{fid.INCEPTION_SOURCE}"):
    runner.evaluate(must_not_run, image_source, config, tmp_path, fid_weights=tmp_path / "nope.pth")
  with pytest.raises(ValueError, match="lpips_weights must be"):
    runner.evaluate(
      must_not_run, image_source, config, tmp_path, lpips_weights=(weight_files["lpips"][0],)
    )


def test_fid_needs_two_frames(image_source, weight_files, tmp_path):
  with pytest.raises(ValueError, match="FID needs at least 2 frames"):
    runner.evaluate(
      must_not_run,
      image_source,
      _config("inpainting", num_examples=1),
      tmp_path,
      fid_weights=weight_files["fid"],
    )


def test_prediction_of_the_wrong_shape(image_source, tmp_path):
  def crop(context_inputs, context_targets, query, *, seed):
    return query[:, :, :16]

  with pytest.raises(ValueError, match=r"predict_fn returned shape \(2, 1, 16, 32, 3\)"):
    runner.evaluate(crop, image_source, _config("depth_estimation"), tmp_path)


# ---------------------------------------------------------------------------
# End to end with a tiny random-weight model.
# ---------------------------------------------------------------------------


def test_tiny_model_end_to_end(image_source, tmp_path):
  config = tiny_model.tiny_model_config()
  pipe = inference.Pipeline(config, *tiny_model.tiny_model_params(config))
  calls = []

  def predict(context_inputs, context_targets, query, *, seed):
    calls.append((context_inputs, context_targets, query, seed))
    return pipe(context_inputs, context_targets, query, seed=seed, num_steps=3)

  eval_config = _config("depth_estimation", num_examples=2, num_pairs=2, batch_size=2)
  report = runner.evaluate(predict, image_source, eval_config, tmp_path)
  assert set(report["metrics"]) == {"abs_rel", "delta1"}
  assert report["metrics"]["abs_rel"] > 0 and 0 <= report["metrics"]["delta1"] <= 1
  context_inputs, context_targets, query, seed = calls[0]
  pred = pipe(context_inputs, context_targets, query, seed=seed, num_steps=3)
  grid = np.asarray(Image.open(tmp_path / report["grid"]))
  step = RES + 2
  for row in range(2):
    np.testing.assert_array_equal(
      grid[row * step : row * step + RES, 5 * step : 5 * step + RES], _uint8(pred[row, 0])
    )
  again = runner.evaluate(predict, image_source, eval_config, tmp_path)
  assert again["metrics"] == report["metrics"]
