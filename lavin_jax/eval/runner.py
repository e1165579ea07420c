"""Evaluation runner: in-context predictions on a data source, scored by the task's metrics.

For query example i = 0 .. N-1 of the source (the first N, so runs with different seeds
score the same queries):
  1. K context examples are drawn without replacement by a generator seeded by
     (seed, i): from `context_source` when given, else from the source without example i;
  2. every example is centre-cropped to a square, resized to `resolution` and rendered by
     the task (each rendering seeded by (seed, i, slot)) -> context pairs, query, target;
  3. `predict_fn` predicts the targets of a batch of queries from their context pairs;
  4. predictions are scored against the targets with the task's metric families
     (`lavin_jax.configs.tasks.TASKS`), rendered annotations (depth, normals, masks,
     instance ids, flow) being decoded back to values with the task's decoder first;
     keypoints and panoptic segments are scored against the query example's own
     annotations (cropped and resized like the query). Pixels where the query example's
     'valid' is False (and, for depth, where its depth is unknown) are not scored.
     Video tasks are scored per frame.

Metrics (keys of the report; pixel metrics on [-1, 1] pixels, so PSNR has data range 2):
  mse, psnr, ssim      per frame (`lavin_jax.eval.metrics`, Gaussian SSIM window)
  lpips                per frame (VGG16 v0.1); only when its weight files are given
  fid                  predicted vs target frames; only when its weight file is given
  abs_rel, delta1      depth after least-squares scale-and-shift alignment, per frame
  mean_angle, within_11.25   normals, degrees, per frame
  miou                 binary masks; intersections and unions pooled over the data set
  segment_miou         instance ids: per frame, mean IoU over the ids in target or
                       prediction (background included)
  epe                  optical flow end-point error in pixels, per frame pair
  pck, keypoint_precision   pose: joints found within pose_pck_threshold of the side
                       (`lavin_jax.eval.pose`); counts pooled over the data set
  pq, sq, rq           panoptic quality (`lavin_jax.eval.panoptic`), pooled; needs the
                       source's `thing_classes`
Data-set values are means over all frames (miou, pck, pq and fid: pooled). A non-finite value
(PSNR of an exact prediction) is written as null.

Outputs, each replaced atomically: `<out_dir>/<task>.json` (metric means, the settings,
per-example values and context indices) and `<out_dir>/<task>.png` (one row per query:
context pairs | query | prediction | ground truth; video cells stack the first, middle
and last frames).

  config = lavin_jax.configs.evaluate.get_config('depth_estimation')
  report = evaluate(predict_fn, source, config, out_dir='eval/')
"""

import functools
import json
import pathlib
from typing import Callable, Optional, Protocol, Sequence

from absl import logging
import jax
import ml_collections
import numpy as np
from PIL import Image
import tqdm

from lavin_jax.data import episodes as episodes_lib
from lavin_jax.data import tasks as tasks_lib
from lavin_jax.eval import fid as fid_lib
from lavin_jax.eval import lpips as lpips_lib
from lavin_jax.eval import metrics
from lavin_jax.eval import panoptic as panoptic_lib
from lavin_jax.eval import pose as pose_lib
from lavin_jax.eval import weights as weights_lib
from lavin_jax.io import files
from lavin_jax.io import pixels

_NEEDS_WEIGHTS = ("lpips", "fid")


class PredictFn(Protocol):
  """(B, K, T, H, W, 3) context inputs and targets, (B, T, H, W, 3) queries -> targets."""

  def __call__(
    self, context_inputs: np.ndarray, context_targets: np.ndarray, query: np.ndarray, *, seed: int
  ) -> np.ndarray: ...


# ---------------------------------------------------------------------------
# Metric accumulators: update(pred, target, truth) with (B, T, H, W, 3) pixel clips and
# the B query examples the targets were rendered from returns per-example values
# {name: (B,)}; result() returns the data-set values.
# ---------------------------------------------------------------------------

FrameFn = Callable[..., dict[str, np.ndarray]]
MaskFn = Callable[[Sequence[dict], tuple[int, ...]], np.ndarray]


def _frames(clips: np.ndarray) -> np.ndarray:
  """(B, T, ...) -> (B * T, ...)."""
  return clips.reshape((-1,) + clips.shape[2:])


def _decode(task: tasks_lib.Task, clips: np.ndarray) -> np.ndarray:
  """Rendered clips (B, T, H, W, 3) -> values (B, T', ...) by the task's decoder."""
  return np.stack([task.decode(clip) for clip in clips])


def _per_frame(truth: Sequence[dict], key: str, shape: tuple[int, ...]) -> np.ndarray:
  """(B * T, H, W) of each example's `key`, stills as one frame, of clips (B, T, H, W)."""
  return _frames(np.stack([np.reshape(example[key], shape[1:4]) for example in truth]))


def _valid(truth: Sequence[dict], shape: tuple[int, ...]) -> np.ndarray:
  """(B * T, H, W): the examples' 'valid' masks (all True where absent)."""
  masks = [np.broadcast_to(example.get("valid", True), shape[1:4]) for example in truth]
  return _frames(np.stack(masks))


def _valid_depth(truth: Sequence[dict], shape: tuple[int, ...]) -> np.ndarray:
  """`_valid`, less the pixels of unknown depth (0 or not finite)."""
  depth = _per_frame(truth, "depth", shape)
  return _valid(truth, shape) & np.isfinite(depth) & (depth > 0)


class FrameMeans:
  """Metrics of single frames (after an optional decoding), averaged over all frames.

  With `mask`, `fn(pred, target, mask(truth, shape))` scores the pixels it selects.
  """

  def __init__(
    self,
    fn: FrameFn,
    decode: Optional[Callable[[np.ndarray], np.ndarray]] = None,
    mask: Optional[MaskFn] = None,
  ):
    self._fn = fn
    self._decode = decode
    self._mask = mask
    self._values: dict[str, list[np.ndarray]] = {}

  def update(self, pred, target, truth):
    shape = pred.shape
    if self._decode is not None:
      pred, target = self._decode(pred), self._decode(target)
    batch = pred.shape[0]
    masks = () if self._mask is None else (self._mask(truth, shape),)
    values = self._fn(_frames(pred), _frames(target), *masks)
    for name, v in values.items():
      self._values.setdefault(name, []).append(np.asarray(v, np.float64))
    return {
      name: np.asarray(v, np.float64).reshape(batch, -1).mean(1) for name, v in values.items()
    }

  def result(self):
    return {name: float(np.mean(np.concatenate(v))) for name, v in self._values.items()}


class PooledIoU:
  """IoU of decoded binary masks on valid pixels, pooled over the data set."""

  def __init__(self, decode: Callable[[np.ndarray], np.ndarray]):
    self._decode = decode
    self._intersection, self._union = [], []

  def update(self, pred, target, truth):
    valid = _valid(truth, pred.shape).reshape(pred.shape[:4])
    intersection, union = (
      np.asarray(c, np.float64)
      for c in metrics.iou_counts(self._decode(pred) & valid, self._decode(target) & valid)
    )
    self._intersection.append(intersection.ravel())
    self._union.append(union.ravel())
    inter, uni = intersection.sum(1), union.sum(1)  # (B,) over frames
    return {"miou": np.where(uni > 0, inter / np.maximum(uni, 1), 1.0)}

  def result(self):
    return {
      "miou": metrics.mean_iou(np.concatenate(self._intersection), np.concatenate(self._union))
    }


class PooledKeypoints:
  """PCK and precision of decoded joints against the examples' keypoints, pooled."""

  def __init__(self, task: tasks_lib.Task):
    self._task = task
    self._counts = np.zeros(3, np.int64)

  def update(self, pred, target, truth):
    del target
    radius = self._task.config.pose_pck_threshold * pred.shape[2]
    per_example = []
    for points, example in zip(_decode(self._task, pred), truth):
      counts = sum(pose_lib.match_counts(frame, example["keypoints"], radius) for frame in points)
      self._counts += counts
      per_example.append(pose_lib.scores(counts))
    return {k: np.array([e[k] for e in per_example]) for k in per_example[0]}

  def result(self):
    return pose_lib.scores(self._counts)


class PooledPanoptic:
  """Panoptic quality of decoded segments against the examples' classes and instances."""

  def __init__(self, task: tasks_lib.Task, thing_classes):
    self._task = task
    self._things = thing_classes
    self._total = panoptic_lib.PanopticQuality(thing_classes)

  def update(self, pred, target, truth):
    del target
    shape = pred.shape
    semantic = np.where(_valid(truth, shape), _per_frame(truth, "semantic", shape), 0)
    instances = _per_frame(truth, "instances", shape)
    decoded = _frames(_decode(self._task, pred))
    frames = shape[1]
    per_example = []
    for b in range(shape[0]):
      example = panoptic_lib.PanopticQuality(self._things)
      for f in range(b * frames, (b + 1) * frames):
        for quality in (example, self._total):
          quality.add(decoded[f, ..., 0], decoded[f, ..., 1], semantic[f], instances[f])
      per_example.append(example.result())
    return {k: np.array([e[k] for e in per_example]) for k in per_example[0]}

  def result(self):
    return self._total.result()


@functools.partial(jax.jit, static_argnums=0)
def _apply(module, variables, *inputs):
  """module.apply, compiled once per (module, shapes) for every run of the process."""
  return module.apply(variables, *inputs)


class FrechetDistance:
  """FID between the predicted and the target frames."""

  def __init__(self, module: fid_lib.InceptionV3Pool3, variables):
    self._features = functools.partial(_apply, module, variables)
    self._pred = fid_lib.RunningStats(2048)
    self._target = fid_lib.RunningStats(2048)

  def update(self, pred, target, truth):
    del truth
    for stats, clips in ((self._pred, pred), (self._target, target)):
      stats.update(np.asarray(self._features(_frames(clips))))
    return {}

  def result(self):
    return {
      "fid": fid_lib.frechet_distance(
        self._pred.mean, self._pred.covariance(), self._target.mean, self._target.covariance()
      )
    }


def _named(name: str, fn) -> FrameFn:
  return lambda pred, target: {name: fn(pred, target)}


def segment_iou(pred_ids: np.ndarray, target_ids: np.ndarray) -> np.ndarray:
  """Per frame, mean IoU over the ids present in either map; (F, H, W) -> (F,)."""
  out = []
  for p, t in zip(pred_ids, target_ids):
    ids = np.union1d(np.unique(p), np.unique(t))
    inter, union = metrics.iou_counts(p[None] == ids[:, None, None], t[None] == ids[:, None, None])
    out.append(np.mean(np.asarray(inter, np.float64) / np.asarray(union, np.float64)))
  return np.asarray(out)


def end_point_error(pred_flow: np.ndarray, target_flow: np.ndarray) -> np.ndarray:
  """Mean length of the flow difference per frame; (F, H, W, 2) -> (F,)."""
  return np.linalg.norm(pred_flow - target_flow, axis=-1).mean(axis=(-2, -1))


def _pixel_metric(name):
  fn = jax.jit(getattr(metrics, name))
  return lambda task, nets, source: FrameMeans(_named(name, fn))


def _lpips_metric(task, nets, source):
  del task, source
  module, params = nets["lpips"]
  return FrameMeans(_named("lpips", functools.partial(_apply, module, {"params": params})))


def _decoded_metric(make):
  """A family scoring decoded values: make(decode) -> accumulator."""
  return lambda task, nets, source: make(functools.partial(_decode, task))


def _panoptic_metric(task, nets, source):
  del nets
  return PooledPanoptic(task, source.thing_classes)


# Metric family -> builder(task, nets, source) of its accumulator; nets holds the loaded
# ('lpips': (module, params), 'fid': (module, variables)) networks.
METRIC_FAMILIES = {
  "mse": _pixel_metric("mse"),
  "psnr": _pixel_metric("psnr"),
  "ssim": _pixel_metric("ssim"),
  "lpips": _lpips_metric,
  "fid": lambda task, nets, source: FrechetDistance(*nets["fid"]),
  "depth": _decoded_metric(
    functools.partial(FrameMeans, jax.jit(metrics.depth_metrics), mask=_valid_depth)
  ),
  "normals": _decoded_metric(
    functools.partial(FrameMeans, jax.jit(metrics.normal_metrics), mask=_valid)
  ),
  "mask_iou": _decoded_metric(PooledIoU),
  "segment_iou": _decoded_metric(
    functools.partial(FrameMeans, _named("segment_miou", segment_iou))
  ),
  "flow": _decoded_metric(functools.partial(FrameMeans, _named("epe", end_point_error))),
  "keypoints": lambda task, nets, source: PooledKeypoints(task),
  "panoptic": _panoptic_metric,
}
DECODED_FAMILIES = ("depth", "normals", "mask_iou", "segment_iou", "flow", "keypoints", "panoptic")


# ---------------------------------------------------------------------------
# Checks and episodes.
# ---------------------------------------------------------------------------


def _weight_paths(lpips_weights, fid_weights) -> dict:
  """{'lpips': (vgg, lin), 'fid': path} of the files given, each checked to exist."""
  paths = {}
  if lpips_weights is not None:
    if len(lpips_weights) != 2:
      raise ValueError(
        f"lpips_weights must be (VGG16 file, LPIPS linear-heads file); got {lpips_weights!r}."
      )
    paths["lpips"] = (
      weights_lib.find_weight_file(
        lpips_lib.VGG16_FILE,
        lpips_weights[0],
        what="torchvision VGG16",
        source=lpips_lib.VGG16_SOURCE,
      ),
      weights_lib.find_weight_file(
        lpips_lib.LIN_FILE,
        lpips_weights[1],
        what="LPIPS VGG linear heads",
        source=lpips_lib.LIN_SOURCE,
      ),
    )
  if fid_weights is not None:
    paths["fid"] = weights_lib.find_weight_file(
      fid_lib.INCEPTION_FILE,
      fid_weights,
      what="pytorch-fid InceptionV3",
      source=fid_lib.INCEPTION_SOURCE,
    )
  return paths


def validate(
  config: ml_collections.ConfigDict,
  source,
  context_source=None,
  lpips_weights=None,
  fid_weights=None,
) -> tasks_lib.Task:
  """Checks the settings, the sources and the weight files; returns the task.

  Raises ValueError or FileNotFoundError naming the problem; nothing is compiled.
  """
  task = tasks_lib.get_task(config.task, config.task_options)
  if config.resolution <= 0:
    raise ValueError(f"resolution must be positive, got {config.resolution}.")
  for name in ("num_examples", "num_pairs", "batch_size"):
    if config[name] < 1:
      raise ValueError(f"{name} must be >= 1, got {config[name]}.")
  if config.num_examples > len(source):
    raise ValueError(
      f"num_examples is {config.num_examples} but the source has only "
      f"{len(source)} examples; lower num_examples."
    )
  pool = len(source) - 1 if context_source is None else len(context_source)
  if config.num_pairs > pool:
    where = "the source without the query" if context_source is None else "the context source"
    raise ValueError(
      f"num_pairs is {config.num_pairs} but {where} has only {pool} "
      "examples; lower num_pairs or give a larger context source."
    )
  for name, src in (("source", source), ("context source", context_source)):
    if src is not None:
      first = src[0]
      try:
        task.check(first)
        episodes_lib.fit_example(first, config.resolution, allow_upscale=config.allow_upscale)
      except ValueError as e:
        raise ValueError(f"The {name} does not fit task {task.name!r}: {e}") from e
  if "panoptic" in task.info.metrics and getattr(source, "thing_classes", None) is None:
    raise ValueError(
      f"Task {task.name!r} is scored by panoptic quality, which needs the source's "
      "`thing_classes` (the class ids with instances); use a source that has them, "
      "e.g. coco:ROOT,annotations=panoptic."
    )
  if "fid" in task.info.metrics and fid_weights is not None:
    if config.num_examples * task.num_frames < 2:
      raise ValueError("FID needs at least 2 frames to estimate a covariance; raise num_examples.")
  _weight_paths(lpips_weights, fid_weights)
  return task


def _rng(seed: int, *keys: int) -> np.random.Generator:
  return np.random.default_rng([seed, *keys])


def make_episode(
  task: tasks_lib.Task, source, context_source, index: int, config: ml_collections.ConfigDict
) -> dict:
  """Query `index` with its K context pairs, unpadded (`lavin_jax.data.episodes`).

  Adds 'context_indices': the K examples of `context_source`, or of `source` when it is
  None, drawn by a generator seeded by (seed, index); and 'query_example', the query's
  example its target was rendered from.
  """
  pool_size = len(source if context_source is None else context_source)
  query = index if context_source is None else None
  context = episodes_lib.context_indices(
    _rng(config.seed, 0, index), config.num_pairs, pool_size, query
  )
  rngs = [_rng(config.seed, 1, index, slot) for slot in range(config.num_pairs + 1)]
  episode = episodes_lib.render_episode(
    task,
    source,
    index,
    context,
    rngs,
    config.resolution,
    pool=context_source,
    allow_upscale=config.allow_upscale,
    keep_query=True,
  )
  episode["context_indices"] = context.astype(np.int64)
  return episode


# ---------------------------------------------------------------------------
# Outputs.
# ---------------------------------------------------------------------------


def _cell(clip: np.ndarray) -> np.ndarray:
  """(T, H, W, 3) pixels -> (n H, W, 3) uint8: the first, middle and last frames."""
  frames = sorted({0, len(clip) // 2, len(clip) - 1})
  return pixels.to_uint8(np.concatenate([clip[t] for t in frames], axis=0))


def grid_image(rows: Sequence[Sequence[np.ndarray]], gap: int = 2) -> np.ndarray:
  """Rows of equal-shaped clips -> one uint8 image with white gaps between cells."""
  cells = [[_cell(clip) for clip in row] for row in rows]
  height, width = cells[0][0].shape[:2]
  columns = max(len(row) for row in cells)
  canvas = np.full(
    (len(cells) * (height + gap) - gap, columns * (width + gap) - gap, 3), 255, np.uint8
  )
  for r, row in enumerate(cells):
    for c, cell in enumerate(row):
      y, x = r * (height + gap), c * (width + gap)
      canvas[y : y + height, x : x + width] = cell
  return canvas


def _finite(value: float) -> Optional[float]:
  value = float(value)
  return value if np.isfinite(value) else None


# ---------------------------------------------------------------------------
# The entry point.
# ---------------------------------------------------------------------------


def evaluate(
  predict_fn: PredictFn,
  source,
  config: ml_collections.ConfigDict,
  out_dir,
  *,
  context_source=None,
  lpips_weights=None,
  fid_weights=None,
  run_info: Optional[dict] = None,
) -> dict:
  """Scores `predict_fn` on the first N examples of `source`; writes the report and grid.

  Args:
    predict_fn: `predict_fn(context_inputs, context_targets, query, seed=...)` with
      (B, K, T, H, W, 3), (B, K, T, H, W, 3), (B, T, H, W, 3) pixels in [-1, 1] ->
      (B, T, H, W, 3) predictions, e.g. a `lavin_jax.inference.pipeline.Pipeline`.
    source: random-access source of examples (`lavin_jax.data.sources` schema) with what
      the task needs.
    config: a `lavin_jax.configs.evaluate.get_config()` with the task set.
    out_dir: directory of `<task>.json` and `<task>.png` (created if missing).
    context_source: source of the context examples; None draws them from `source`
      (never the query itself).
    lpips_weights: (torchvision VGG16 .pth, LPIPS VGG v0.1 heads .pth), or None: no LPIPS.
    fid_weights: pytorch-fid's InceptionV3 .pth, or None: no FID.
    run_info: JSON-serialisable facts about the predictor for the report (checkpoint,
      sampling settings).
  Returns:
    The report (as written to `<task>.json`).
  """
  task = validate(config, source, context_source, lpips_weights, fid_weights)
  paths = _weight_paths(lpips_weights, fid_weights)
  families = task.info.metrics
  nets = {}
  if "lpips" in families and "lpips" in paths:
    nets["lpips"] = lpips_lib.load_lpips(*paths["lpips"])
  if "fid" in families and "fid" in paths:
    nets["fid"] = fid_lib.load_fid_inception(paths["fid"])
  skipped = {
    f: f"no {f.upper()} weight files given"
    for f in families
    if f in _NEEDS_WEIGHTS and f not in nets
  }
  unused = sorted(set(paths) - set(families))
  if unused:
    logging.info("Task %s does not use %s; its weights are ignored.", task.name, unused)
  accumulators = [METRIC_FAMILIES[f](task, nets, source) for f in families if f not in skipped]

  examples, grid_rows = [], []
  starts = range(0, config.num_examples, config.batch_size)
  for start in tqdm.tqdm(starts, desc=f"evaluate {task.name}", unit="batch"):
    indices = range(start, min(start + config.batch_size, config.num_examples))
    episodes = [make_episode(task, source, context_source, i, config) for i in indices]
    truth = [e.pop("query_example") for e in episodes]
    batch = {k: np.stack([e[k] for e in episodes]) for k in episodes[0]}
    seed = int(_rng(config.seed, 2, start).integers(2**31))
    pred = np.asarray(
      predict_fn(batch["context_inputs"], batch["context_targets"], batch["query"], seed=seed),
      np.float32,
    )
    if pred.shape != batch["target"].shape:
      raise ValueError(
        f"predict_fn returned shape {pred.shape}; expected the target "
        f"shape {batch['target'].shape}."
      )
    per_example = {}
    for accumulator in accumulators:
      per_example.update(accumulator.update(pred, batch["target"], truth))
    for row, i in enumerate(indices):
      examples.append(
        {
          "index": i,
          "context": batch["context_indices"][row].tolist(),
          "metrics": {k: _finite(v[row]) for k, v in per_example.items()},
        }
      )
      if len(grid_rows) < config.grid_examples:
        shown = range(min(config.grid_pairs, config.num_pairs))
        grid_rows.append(
          [
            clip
            for k in shown
            for clip in (batch["context_inputs"][row, k], batch["context_targets"][row, k])
          ]
          + [batch["query"][row], pred[row], batch["target"][row]]
        )

  results = {}
  for accumulator in accumulators:
    results.update(accumulator.result())
  out_dir = pathlib.Path(out_dir)
  grid_path = out_dir / f"{task.name}.png"
  report = {
    "task": task.name,
    "metrics": {k: _finite(v) for k, v in results.items()},
    "skipped_metrics": skipped,
    "num_examples": config.num_examples,
    "num_pairs": config.num_pairs,
    "seed": config.seed,
    "resolution": config.resolution,
    "num_frames": task.num_frames,
    "config": config.to_dict(),
    "run": run_info or {},
    "grid": grid_path.name,
    "examples": examples,
  }
  image = Image.fromarray(grid_image(grid_rows))
  files.atomic_write(grid_path, lambda tmp: image.save(tmp, format="PNG"))
  text = json.dumps(report, indent=1, allow_nan=False)
  files.atomic_write_text(out_dir / f"{task.name}.json", text)
  return json.loads(text)
