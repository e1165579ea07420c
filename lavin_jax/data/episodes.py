"""In-context episodes: which examples, each rendered to a task's pair, in one layout.

An episode of a task holds the (input, target) pair of a query example and K context
pairs of other examples. Every builder (the Grain pipeline, the latent pipeline,
evaluation) makes it with these pieces:
  `context_indices`  which K examples: distinct, never the query;
  `render_pair`      one example -> (input, target): a frame window (video tasks), a
                     square crop resized to the resolution (`fit_example`), the task;
  `render_episode`   the query and its context examples rendered and assembled;
  `assemble`         the layout below;
  `finite_episode`   an episode without NaN or inf: the example holding them named, or
                     redrawn and counted ('skipped').

Layout (numpy, unbatched; pixels float32 in [-1, 1], or stored ST-VAE moments):
  'context_inputs', 'context_targets': (S, T, H, W, C), S >= K context slots (the
      pipelines' batch context size, lavin_jax.data.buckets); slots >= num_pairs are zero
  'query', 'target': (T, H, W, C)
  'num_pairs': int32 K in [1, S]
  'task_id': int32, the task's index in `tasks.TASK_NAMES`
  'skipped': int32, the non-finite examples redrawn (`finite_episode` only)
"""

from typing import Callable, Sequence

from absl import logging
import cv2
import numpy as np

from lavin_jax.data import keypoints as keypoints_lib
from lavin_jax.data import tasks

PIXEL_KEYS = ("image", "video")
NEAREST_KEYS = ("depth", "normals", "instances", "semantic", "flow", "valid")
_CHANNELS = {
  "depth": 0,
  "instances": 0,
  "semantic": 0,
  "valid": 0,
  "normals": 3,
  "flow": 2,
  "image": 3,
  "video": 3,
}


# ---------------------------------------------------------------------------
# Crop and resize.
# ---------------------------------------------------------------------------


def _resize_frames(array: np.ndarray, key: str, side: int, size: int) -> np.ndarray:
  """Resizes the (side, side) plane of (..., side, side[, C]) to (size, size)."""
  channels = _CHANNELS[key]
  plane = (side, side) + ((channels,) if channels else ())
  lead = array.shape[: array.ndim - len(plane)]
  if key in PIXEL_KEYS:
    interpolation = cv2.INTER_AREA if size < side else cv2.INTER_LINEAR
  else:
    interpolation = cv2.INTER_NEAREST_EXACT
  frames = array.reshape((-1,) + plane)
  if array.dtype == bool:  # OpenCV does not resize booleans.
    frames = frames.view(np.uint8)
  out = [cv2.resize(f, (size, size), interpolation=interpolation) for f in frames]
  return np.stack(out).reshape(lead + (size, size) + plane[2:]).astype(array.dtype, copy=False)


def fit_example(
  example: dict,
  resolution: int,
  rng: np.random.Generator | None = None,
  allow_upscale: bool = False,
) -> dict:
  """Square crop of `example` (random with `rng`, else centred) resized to resolution.

  Pixels are resized with area (down) or bilinear (up) interpolation, dense
  annotations with nearest neighbours; flow vectors, boxes and keypoints are scaled to
  match, boxes are clipped to the crop (emptied boxes dropped) and keypoints outside it
  unlabelled (`keypoints.fit`). Other keys are dropped.
  """
  pixel_key = next((k for k in PIXEL_KEYS if k in example), None)
  if pixel_key is None:
    raise ValueError(f"Example has no 'image' or 'video' (keys {sorted(example)}).")
  height, width = example[pixel_key].shape[-3:-1]
  side = min(height, width)
  if side < resolution and not allow_upscale:
    raise ValueError(
      f"{pixel_key} is {height}x{width}, smaller than the resolution {resolution}; "
      "use a source of larger images, lower the resolution, or set allow_upscale."
    )
  if rng is None:
    y0, x0 = (height - side) // 2, (width - side) // 2
  else:
    y0, x0 = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
  scale = resolution / side
  out = {}
  for key in PIXEL_KEYS + NEAREST_KEYS:
    if key in example:
      array = np.asarray(example[key])
      crop = (slice(y0, y0 + side), slice(x0, x0 + side))
      if _CHANNELS[key]:
        crop += (slice(None),)
      cropped = array[(Ellipsis,) + crop]
      out[key] = _resize_frames(cropped, key, side, resolution)
  if "flow" in out:
    out["flow"] = (out["flow"] * scale).astype(np.float32)
  if "boxes" in example:
    boxes = np.asarray(example["boxes"], np.float32).reshape(-1, 4)
    boxes = np.clip((boxes - [y0, x0, y0, x0]) * scale, 0, resolution)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    out["boxes"] = boxes[keep]
  if "keypoints" in example:
    out["keypoints"] = keypoints_lib.fit(example["keypoints"], y0, x0, side, resolution)
  return out


# ---------------------------------------------------------------------------
# Episodes.
# ---------------------------------------------------------------------------


def context_indices(
  rng: np.random.Generator,
  num_pairs: int,
  pool_size: int,
  query: int | None = None,
  repeat: bool = False,
) -> np.ndarray:
  """`num_pairs` indices into range(pool_size), never `query` (an index of the pool).

  Distinct while the pool, less the query, holds num_pairs examples; a smaller pool is
  drawn from with replacement when `repeat`, else it is a ValueError.
  """
  available = pool_size - (query is not None)
  replace = num_pairs > available
  if replace and not repeat:
    besides = " besides the query" if query is not None else ""
    raise ValueError(
      f"{num_pairs} distinct context examples asked of a pool of {available}{besides}."
    )
  if query is None:
    return rng.choice(pool_size, num_pairs, replace=replace)
  others = rng.choice(available, num_pairs, replace=replace)
  return others + (others >= query)  # Skips the query.


def prepare_example(
  task: tasks.Task,
  example: dict,
  resolution: int,
  rng: np.random.Generator,
  *,
  random_crop: bool = False,
  window: bool = True,
  allow_upscale: bool = False,
) -> dict:
  """The example `render_pair` renders: its frame window and square crop (`fit_example`).

  `rng` draws, in turn, the frame window of a video task (with `window` False, its
  first frames) and the crop when `random_crop` (else it is centred).
  """
  if window:
    example = task.window(example, rng)
  return fit_example(example, resolution, rng if random_crop else None, allow_upscale)


def render_pair(
  task: tasks.Task,
  example: dict,
  resolution: int,
  rng: np.random.Generator,
  *,
  random_crop: bool = False,
  window: bool = True,
  allow_upscale: bool = False,
) -> tasks.Pair:
  """`task`'s (input, target) of one source example, each float32 (T, H, W, 3).

  `rng` draws as in `prepare_example`, then the task's own randomness.
  """
  example = prepare_example(
    task,
    example,
    resolution,
    rng,
    random_crop=random_crop,
    window=window,
    allow_upscale=allow_upscale,
  )
  return task(example, rng)


def assemble(
  query: tasks.Pair, context: tasks.Pair, task_id: int, k_max: int | None = None
) -> dict:
  """The episode of a query pair and K context pairs stacked (K, ...), in k_max slots.

  k_max defaults to K (no padding); the slots have the context's dtype.
  """
  inputs, targets = context
  num_pairs = len(inputs)
  k_max = num_pairs if k_max is None else k_max
  slots = np.zeros((2, k_max) + inputs.shape[1:], inputs.dtype)
  slots[0, :num_pairs] = inputs
  slots[1, :num_pairs] = targets
  return {
    "context_inputs": slots[0],
    "context_targets": slots[1],
    "query": query[0],
    "target": query[1],
    "num_pairs": np.int32(num_pairs),
    "task_id": np.int32(task_id),
  }


def render_episode(
  task: tasks.Task,
  source,
  index: int,
  context: Sequence[int],
  rngs: Sequence[np.random.Generator],
  resolution: int,
  k_max: int | None = None,
  *,
  pool=None,
  random_crop: bool = False,
  allow_upscale: bool = False,
  keep_query: bool = False,
) -> dict:
  """The episode of query `source[index]` with the context examples `pool[j]`, j in context.

  Args:
    task: the task rendering every pair.
    source: random-access source examples; `index` is the query's.
    context: the K context examples' indices into `pool`.
    rngs: K + 1 generators, the query's first, then one per context slot (a generator
      repeated K + 1 times draws for all of them in turn).
    resolution, random_crop, allow_upscale: as in `render_pair` and `fit_example`.
    k_max: context slots (default K).
    pool: the examples `context` indexes; None: `source`.
    keep_query: also return 'query_example', the query's example as its target was
      rendered from (`prepare_example`): the ground truth an evaluation scores against.
  Raises:
    ValueError naming the source or context example that does not fit the task.
  """

  def render(examples, i, rng, name):
    try:
      example = prepare_example(
        task,
        examples[int(i)],
        resolution,
        rng,
        random_crop=random_crop,
        allow_upscale=allow_upscale,
      )
      return example, task(example, rng)
    except ValueError as e:
      raise ValueError(f"{name} example {i}: {e}") from e

  name, pool = ("Source", source) if pool is None else ("Context", pool)
  query_example, query = render(source, index, rngs[0], "Source")
  pairs = [render(pool, j, rng, name)[1] for j, rng in zip(context, rngs[1:], strict=True)]
  episode = assemble(query, tuple(np.stack(clips) for clips in zip(*pairs)), task.id, k_max)
  if keep_query:
    episode["query_example"] = query_example
  return episode


# ---------------------------------------------------------------------------
# Non-finite examples.
# ---------------------------------------------------------------------------

MAX_REDRAWS = 16  # Non-finite examples redrawn for one episode before giving up.


class NonFiniteExampleError(ValueError):
  """An example whose rendered (or stored) pair holds NaN or inf."""


def _nonfinite(episode: dict) -> list[int]:
  """Positions of the examples holding NaN or inf: 0 the query, 1 + j context pair j."""
  query_finite = np.isfinite(episode["query"]).all() and np.isfinite(episode["target"]).all()
  bad = [] if query_finite else [0]
  k = int(episode["num_pairs"])
  for key in ("context_inputs", "context_targets"):
    finite = np.isfinite(episode[key][:k].reshape(k, -1)).all(axis=1)
    bad += [1 + int(j) for j in np.flatnonzero(~finite)]
  return sorted(set(bad))


def finite_episode(
  render: Callable[[int, np.ndarray], dict],
  query: int,
  context: np.ndarray,
  rng: np.random.Generator,
  pool_size: int,
  skip: bool,
  name: Callable[[int], str],
) -> dict:
  """render(query, context) checked for NaN and inf, with the count 'skipped' added.

  Args:
    render: (query index, context indices) -> an episode (the layout above).
    query, context: the examples' indices into a pool of `pool_size`.
    rng: draws the examples replacing non-finite ones.
    skip: redraw a non-finite example (at most MAX_REDRAWS per episode, each logged);
      False: raise.
    name: example index -> how a message names it, e.g. "Source 'photos' example 7".
  Raises:
    NonFiniteExampleError naming the first non-finite example.
  """
  context = np.array(context)
  skipped = 0
  while True:
    episode = render(query, context)
    bad = _nonfinite(episode)
    if not bad:
      episode["skipped"] = np.int32(skipped)
      return episode
    index = query if bad[0] == 0 else int(context[bad[0] - 1])
    if not skip or skipped + len(bad) > MAX_REDRAWS:
      fix = (
        "repair or remove it, or set config.data.skip_nonfinite = True to skip such examples"
        if not skip
        else f"more than {MAX_REDRAWS} non-finite examples were redrawn for one episode"
      )
      raise NonFiniteExampleError(f"{name(index)} holds NaN or inf values; {fix}.")
    for position in bad:
      old = query if position == 0 else int(context[position - 1])
      logging.warning("Skipped %s: it holds NaN or inf values.", name(old))
      new = int(context_indices(rng, 1, pool_size, query)[0])
      if position == 0:
        query = new
      else:
        context[position - 1] = new
    skipped += len(bad)
