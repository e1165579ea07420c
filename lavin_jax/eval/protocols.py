"""The paper's evaluation protocols (its appendix B) as runs of the evaluation runner.

A protocol (`lavin_jax.configs.evaluate.PROTOCOLS`) fixes the task, the data and how
queries and contexts are drawn. `plan(config)` makes its runs, every source made and
wrapped; the caller scores each run with `runner.evaluate` into `<output>/<run.name>`,
and `summarize` gathers the reports into the protocol's figures:
  nyuv2_depth       the 654 NYUv2 test images (TFDS nyu_depth_v2 'validation'), depth
                    scored inside the Eigen crop and within (1 mm, 10 m]: the source's
                    examples gain a 'valid' mask before they are cropped and resized.
  nyuv2_normals     NYUv2 test images with normals from a folder ('pseudo:...').
  pascal5i_segmentation, pascal5i_detection
                    VOC 2012 ('voc:ROOT,split=val'): fold f holds classes 5f+1..5f+5;
                    for each class c, the queries are the images holding c (detection:
                    the images with one object, of class c, whose box covers at most
                    max_box_fraction of the image), the target shows c's objects only,
                    and the context pairs are other images of c. A class's IoU pools
                    its queries; a fold's mIoU is the mean over its classes.
  colorization, inpainting, de_raining, de_motion_blur
                    num_examples images drawn at random (seed) from the source (the
                    paper: ImageNet-1K validation).
  coco_panoptic     COCO val2017 panoptic labels ('coco:ROOT,split=val2017,
                    annotations=panoptic'), panoptic quality.
Without a protocol, one run scores config.task on config.source.
"""

import copy
import dataclasses
import functools
from typing import Any, Sequence

import ml_collections
import numpy as np

from lavin_jax.configs import evaluate as evaluate_configs
from lavin_jax.data import specs
from lavin_jax.data import views
from lavin_jax.data import voc

# The sources of the protocols that have no default, as the user gives them.
_SOURCE_EXAMPLES = {
  "nyuv2_normals": "pseudo:NYU_TEST_IMAGES,normals=NYU_TEST_NORMALS",
  "pascal5i_segmentation": "voc:ROOT,split=val",
  "pascal5i_detection": "voc:ROOT,split=val",
  "colorization": "folder:IMAGENET_VAL",
  "inpainting": "folder:IMAGENET_VAL",
  "de_raining": "folder:IMAGENET_VAL",
  "de_motion_blur": "folder:IMAGENET_VAL",
  "coco_panoptic": "coco:ROOT,split=val2017,annotations=panoptic",
}


@dataclasses.dataclass(frozen=True)
class Run:
  """One call of `runner.evaluate`."""

  name: str  # Its folder under the output ('' for the output itself).
  config: ml_collections.ConfigDict
  source: Any
  context_source: Any = None


def _is_pascal(config) -> bool:
  return config.protocol.startswith("pascal5i_")


# ---------------------------------------------------------------------------
# Scored pixels (NYUv2).
# ---------------------------------------------------------------------------


def scored_region(config: ml_collections.ConfigDict, example: dict) -> dict:
  """`example` with 'valid' limited to config.eval_crop and config.depth_range."""
  height, width = example["image"].shape[:2]
  valid = np.asarray(example.get("valid", np.ones((height, width), bool)), bool)
  if config.eval_crop:
    if (height, width) != tuple(config.eval_crop_size):
      size = "x".join(str(s) for s in config.eval_crop_size)
      raise ValueError(
        f"Protocol {config.protocol!r} scores the crop {tuple(config.eval_crop)} of {size} "
        f"images, but the source's image is {height}x{width}; use the data set the "
        "protocol names (lavin_jax.configs.evaluate.PROTOCOLS)."
      )
    top, bottom, left, right = config.eval_crop
    crop = np.zeros((height, width), bool)
    crop[top:bottom, left:right] = True
    valid = valid & crop
  if config.depth_range:
    low, high = config.depth_range
    valid = valid & (example["depth"] > low) & (example["depth"] <= high)
  return dict(example, valid=valid)


# ---------------------------------------------------------------------------
# Pascal-5i.
# ---------------------------------------------------------------------------


def class_objects(class_id: int, example: dict) -> dict:
  """`example` with only the objects of `class_id` as instances (1..k) and boxes."""
  instances = example["instances"]
  ids = np.unique(instances[(example["semantic"] == class_id) & (instances > 0)])
  lookup = np.zeros(int(instances.max(initial=0)) + 1, np.int32)
  lookup[ids] = np.arange(1, len(ids) + 1)
  return dict(example, instances=lookup[instances], boxes=example["boxes"][ids - 1])


def _pascal_queries(config, source: voc.VocSegmentation) -> dict[int, list[int]]:
  """Class id -> the indices of its query images (see the module docstring)."""
  queries: dict[int, list[int]] = {}
  for index in range(len(source)):
    labels = source.labels(index)
    classes = np.unique(labels["semantic"][labels["semantic"] > 0])
    if config.task == "detection":
      boxes = labels["boxes"]
      area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
      if len(boxes) != 1 or area[0] > config.max_box_fraction * labels["valid"].size:
        continue
    for class_id in classes:
      queries.setdefault(int(class_id), []).append(index)
  return queries


def _pascal_runs(config, source) -> list[Run]:
  if not isinstance(source, voc.VocSegmentation):
    raise ValueError(
      f"Protocol {config.protocol!r} reads Pascal VOC 2012: set "
      "config.source=voc:ROOT,split=val (ROOT holding VOCdevkit/)."
    )
  queries = _pascal_queries(config, source)
  runs = []
  for fold in config.folds:
    first = evaluate_configs.PASCAL_CLASSES_PER_FOLD * fold + 1
    for class_id in range(first, first + evaluate_configs.PASCAL_CLASSES_PER_FOLD):
      name = source.class_names[class_id]
      indices = queries.get(class_id, [])
      if len(indices) <= config.num_pairs:
        raise ValueError(
          f"Pascal-5i class {name!r} (fold {fold}) has {len(indices)} query image(s) in "
          f"{source!r}, too few for {config.num_pairs} context pairs besides the query; "
          "lower num_pairs or use the full val split."
        )
      view = views.Mapped(views.Subset(source, indices), functools.partial(class_objects, class_id))
      run_config = copy.deepcopy(config)
      run_config.num_examples = min(config.num_examples, len(view))
      runs.append(Run(f"fold{fold}/{name}", run_config, view))
  return runs


# ---------------------------------------------------------------------------
# Plans and summaries.
# ---------------------------------------------------------------------------


def plan(config: ml_collections.ConfigDict) -> list[Run]:
  """The runs of config.protocol (one run of config.task without one)."""
  if config.protocol and config.protocol not in evaluate_configs.PROTOCOLS:
    raise ValueError(
      f"Unknown protocol {config.protocol!r}; expected one of "
      f"{', '.join(evaluate_configs.PROTOCOLS)}."
    )
  if not config.source:
    example = _SOURCE_EXAMPLES.get(config.protocol, "synthetic:small,split=validation")
    raise ValueError(
      f"Set config.source to a source spec (lavin_jax.data.specs), e.g. --config.source={example}."
    )
  source = specs.get_source(config.source)
  context_source = specs.get_source(config.context_source) if config.context_source else None
  if _is_pascal(config):
    return _pascal_runs(config, source)
  if config.eval_crop or config.depth_range:
    keys = tuple(dict.fromkeys(source.keys + ("valid",)))
    source = views.Mapped(source, functools.partial(scored_region, config), keys)
  if config.random_queries:
    source = views.random_subset(source, min(config.num_examples, len(source)), config.seed)
  return [Run("", config, source, context_source)]


def summarize(config: ml_collections.ConfigDict, runs: Sequence[Run], reports: Sequence[dict]):
  """The protocol's figures from its runs' reports (the report itself without one)."""
  if not config.protocol:
    return reports[0]
  runs_metrics = {run.name: report["metrics"] for run, report in zip(runs, reports)}
  if _is_pascal(config):
    metrics = {}
    for fold in config.folds:
      classes = [m["miou"] for name, m in runs_metrics.items() if name.startswith(f"fold{fold}/")]
      metrics[f"fold{fold}_miou"] = float(np.mean(classes))
    metrics["miou"] = float(np.mean(list(metrics.values())))
  else:
    metrics = dict(reports[0]["metrics"])
  return {
    "protocol": config.protocol,
    "task": config.task,
    "metrics": metrics,
    "runs": runs_metrics,
    "skipped_metrics": reports[0]["skipped_metrics"],
    "config": config.to_dict(),
    "run": reports[0]["run"],
  }
