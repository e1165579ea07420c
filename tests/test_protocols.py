"""The paper's evaluation protocols on fixtures in the real formats, against hand-computed
scores."""

import pathlib

import dataset_files
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from lavin_jax.configs import evaluate as evaluate_configs
from lavin_jax.configs import tasks as task_table
from lavin_jax.data import tasks
from lavin_jax.eval import protocols
from lavin_jax.eval import runner


def _config(name, **overrides):
  c = evaluate_configs.get_config(name)
  c.update(dict(num_pairs=1, batch_size=4, grid_examples=1))
  c.update(overrides)
  return c


def _evaluate(config, predict, out: pathlib.Path):
  """Every run of the protocol, then its summary (as lavin_jax.eval.model_eval does)."""
  runs = protocols.plan(config)
  reports = [
    runner.evaluate(predict, r.source, r.config, out / r.name, context_source=r.context_source)
    for r in runs
  ]
  return runs, protocols.summarize(config, runs, reports)


def _constant(pixel):
  """A predictor answering every query with one colour."""

  def predict(context_inputs, context_targets, query, *, seed):
    del context_inputs, context_targets, seed
    return np.broadcast_to(np.asarray(pixel, np.float32), query.shape).copy()

  return predict


def _oracle(runs, change=None):
  """A predictor answering each query with its target (passed through `change`)."""
  targets = {}
  for run in runs:
    task = tasks.get_task(run.config.task, run.config.task_options)
    for i in range(run.config.num_examples):
      episode = runner.make_episode(task, run.source, run.context_source, i, run.config)
      target = episode["target"] if change is None else change(episode["target"].copy())
      targets[episode["query"].tobytes()] = target

  def predict(context_inputs, context_targets, query, *, seed):
    del context_inputs, context_targets, seed
    return np.stack([targets[q.tobytes()] for q in query])

  return predict


def test_protocol_configs():
  assert set(evaluate_configs.PROTOCOLS) >= {
    "nyuv2_depth",
    "nyuv2_normals",
    "pascal5i_segmentation",
    "pascal5i_detection",
    "colorization",
    "inpainting",
    "coco_panoptic",
  }
  for name, settings in evaluate_configs.PROTOCOLS.items():
    config = evaluate_configs.get_config(name)
    assert config.protocol == name and config.task in task_table.TASKS
    assert all(config[k] == v for k, v in settings.items())
  assert evaluate_configs.get_config("depth_estimation").protocol == ""
  with pytest.raises(ValueError, match="Unknown task or protocol 'nyu'.*protocols: nyuv2_depth"):
    evaluate_configs.get_config("nyu")
  with pytest.raises(ValueError, match="Unknown protocol 'nyu'"):
    protocols.plan(_config("", protocol="nyu", source="photos"))
  with pytest.raises(ValueError, match="Set config.source .* --config.source=voc:ROOT,split=val"):
    protocols.plan(_config("pascal5i_detection"))


# ---------------------------------------------------------------------------
# NYUv2.
# ---------------------------------------------------------------------------


def test_nyuv2_depth_reads_the_tfds_test_split():
  config = _config("nyuv2_depth", num_examples=2, resolution=32)
  with tfds.testing.mock_data(num_examples=3):
    (run,) = protocols.plan(config)
    assert run.source.keys == ("image", "depth", "valid") and len(run.source) == 3
    valid = run.source[0]["valid"]
    assert valid.shape == (480, 640) and not valid[:45].any() and not valid[:, 601:].any()
    runner.validate(run.config, run.source)


def _nyu_folder(root: pathlib.Path, count: int = 3) -> str:
  """480x640 images with .npy depth: 1 m left and 3 m right of column 320 inside the
  Eigen crop, 9 m outside it."""
  depth = np.full((480, 640), 9.0, np.float32)
  depth[45:471, 41:320] = 1.0
  depth[45:471, 320:601] = 3.0
  for i in range(count):
    dataset_files.save(root / "images" / f"{i}.png", dataset_files.photo(i, 480, 640))
    (root / "depth").mkdir(exist_ok=True)
    np.save(root / "depth" / f"{i}.npy", depth)
  return f"pseudo:{root / 'images'},depth={root / 'depth'}"


def test_nyuv2_depth_scores_inside_the_eigen_crop(tmp_path):
  config = _config("nyuv2_depth", source=_nyu_folder(tmp_path), num_examples=3, resolution=32)
  runs, summary = _evaluate(config, _constant(0.0), tmp_path / "out")
  # A constant prediction aligns (least squares) to the mean true depth, 2 m over the
  # crop: |2 - 1| / 1 and |2 - 3| / 3 on the two halves; neither within 1.25x. The 9 m
  # outside the crop would move the mean.
  np.testing.assert_allclose(summary["metrics"]["abs_rel"], (1 + 1 / 3) / 2, rtol=1e-5)
  assert summary["metrics"]["delta1"] == 0.0
  assert summary["protocol"] == "nyuv2_depth" and summary["runs"][""] == summary["metrics"]
  bad = _config("nyuv2_depth", source="photos", num_examples=2, resolution=32)
  with pytest.raises(ValueError, match="scores the crop .* of 480x640 images, but the source"):
    runner.validate(bad, protocols.plan(bad)[0].source)


def test_nyuv2_normals_mean_angle(tmp_path):
  normals = np.zeros((24, 32, 3), np.float32)
  normals[..., 2] = -1.0
  (tmp_path / "normals").mkdir()
  for i in range(3):
    dataset_files.save(tmp_path / "images" / f"{i}.png", dataset_files.photo(i))
    np.save(tmp_path / "normals" / f"{i}.npy", normals)
  source = f"pseudo:{tmp_path / 'images'},normals={tmp_path / 'normals'}"
  config = _config("nyuv2_normals", source=source, num_examples=3, resolution=16)
  angle = np.radians(20.0)
  _, summary = _evaluate(config, _constant([np.sin(angle), 0, -np.cos(angle)]), tmp_path)
  np.testing.assert_allclose(summary["metrics"]["mean_angle"], 20.0, rtol=1e-4)
  assert summary["metrics"]["within_11.25"] == 0.0


# ---------------------------------------------------------------------------
# Pascal-5i.
# ---------------------------------------------------------------------------

# Val images of fold 0's classes (1-5): two of one object per class, one holding classes
# 1 and 2, one with a class-3 object covering over half of it; and a train image.
PASCAL = {
  **{
    f"2008_{c}{k}": ("val", [(c, slice(2 + c, 12 + c + k), slice(6 + k, 16 + 2 * c))])
    for c in range(1, 6)
    for k in range(2)
  },
  "2008_both": ("val", [(1, slice(2, 8), slice(6, 14)), (2, slice(12, 20), slice(16, 26))]),
  "2008_big": ("val", [(3, slice(1, 23), slice(4, 28))]),
  "2008_train": ("train", [(4, slice(2, 8), slice(6, 14))]),
}


@pytest.fixture(scope="module")
def voc_spec(tmp_path_factory):
  root = dataset_files.write_voc(tmp_path_factory.mktemp("voc"), PASCAL)
  return f"voc:{root},split=val"


def _cropped_labels(objects):
  """Class and object maps as the protocol scores them: the centred 24x24 crop."""
  classes, _ = dataset_files.voc_labels(objects)
  return classes[:, 4:28]


def test_pascal5i_segmentation_per_class_iou(voc_spec, tmp_path):
  config = _config("pascal5i_segmentation", source=voc_spec, folds=(0,), resolution=24)
  runs, summary = _evaluate(config, _constant(1.0), tmp_path)  # All foreground.
  assert [r.name for r in runs] == [f"fold0/{n}" for n in ("aeroplane", "bicycle", "bird",
                                                          "boat", "bottle")]  # fmt: skip
  want = []
  for c, run in zip(range(1, 6), runs):
    names = [
      n for n, (split, objs) in PASCAL.items() if split == "val" and c in {o[0] for o in objs}
    ]
    assert len(run.source) == run.config.num_examples == len(names)
    # All-foreground: the class's pixels over the valid (non-void) pixels, pooled.
    labels = [_cropped_labels(PASCAL[n][1]) for n in names]
    found, valid = (sum((m == c).sum() for m in labels), sum((m != 255).sum() for m in labels))
    want.append(found / valid)
    np.testing.assert_allclose(summary["runs"][run.name]["miou"], want[-1], rtol=1e-6)
    for i in range(len(run.source)):  # Every query and context image shows class c only.
      example = run.source[i]
      assert (example["semantic"][example["instances"] > 0] == c).all()
  np.testing.assert_allclose(summary["metrics"]["fold0_miou"], np.mean(want), rtol=1e-6)
  assert summary["metrics"]["miou"] == summary["metrics"]["fold0_miou"]


def test_pascal5i_detection_keeps_single_small_objects(voc_spec, tmp_path):
  config = _config("pascal5i_detection", source=voc_spec, folds=(0,), resolution=24)
  runs = protocols.plan(config)
  assert [len(r.source) for r in runs] == [2, 2, 2, 2, 2]  # Not 'both', not 'big'.
  _, summary = _evaluate(config, _oracle(runs), tmp_path)
  assert summary["metrics"] == {"fold0_miou": 1.0, "miou": 1.0}
  with pytest.raises(ValueError, match="class 'aeroplane' .* has 2 query image.*too few"):
    protocols.plan(_config("pascal5i_detection", source=voc_spec, folds=(0,), num_pairs=2))
  with pytest.raises(ValueError, match="reads Pascal VOC 2012: set config.source=voc:"):
    protocols.plan(_config("pascal5i_detection", source="photos"))


# ---------------------------------------------------------------------------
# Random queries and COCO panoptic.
# ---------------------------------------------------------------------------


def test_random_queries_are_a_seeded_subset():
  config = _config("colorization", source="photos", num_examples=4, resolution=64)
  (run,) = protocols.plan(config)
  assert len(run.source) == 4 and len(set(run.source.indices.tolist())) == 4
  assert list(run.source.indices) == sorted(run.source.indices)
  (again,) = protocols.plan(config)
  np.testing.assert_array_equal(again.source.indices, run.source.indices)
  config.seed = 1
  assert not np.array_equal(protocols.plan(config)[0].source.indices, run.source.indices)


def test_coco_panoptic_quality(tmp_path):
  root = dataset_files.write_coco(tmp_path / "coco")
  spec = f"coco:{root},split=val2017,annotations=panoptic"
  config = _config("coco_panoptic", source=spec, context_source=spec, num_examples=1)
  config.resolution = 24
  runs = protocols.plan(config)
  _, exact = _evaluate(config, _oracle(runs), tmp_path / "exact")
  assert exact["metrics"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0}

  def erase_second_person(target):
    target[:, 16:24, 0:4] = -1.0  # Its pixels in the centred crop (source columns 4-7).
    return target

  _, summary = _evaluate(config, _oracle(runs, erase_second_person), tmp_path / "erased")
  # Person: one TP (IoU 1), one FN, the crowd ignored: 1 / 1.5. Sky: 1.
  np.testing.assert_allclose(summary["metrics"]["pq"], (2 / 3 + 1) / 2)
  np.testing.assert_allclose(summary["metrics"]["rq"], (2 / 3 + 1) / 2)
  np.testing.assert_allclose(summary["metrics"]["sq"], 1.0)
  image = np.asarray(Image.open(tmp_path / "erased" / "panoptic_segmentation.png"))
  assert image.ndim == 3
