"""Task mixtures over named sources: which source feeds which task, how often, in which batch.

A run weights tasks (`config.task_weights`) and names its sources. Task t draws from every
source that carries what it reads (`tasks.Task.needs`, its media and annotations, among
the source's `keys`), in proportion to the sources' sizes, as their concatenation would:
P(t) = w_t / sum(w), and P(s | t) = n_s / (the examples of t's sources).

Each source is one stream of query examples (shuffled, repeated, with its own seed); an
episode of it picks one of the tasks the source feeds by P(t | s). The sources of one
frame count (stills: 1; clips: the video tasks' num_frames) are mixed example by example
into one stream. Its episode at position q draws from (seed, q) and from the context
size of global batch q // batch_size (lavin_jax.data.buckets). The processes split the
stream (process p of n takes positions p, p + n, ...) and batch it; the frame counts'
batch streams are mixed batch by batch, so every batch has one frame count and one
context size, the same on every process at every step. Both mixings keep the
proportions exactly, in an order drawn from the seed (`SeededMix`). Everything is a
Grain MapDataset until the end: a batch depends on the seed, the step and the process
split only, and an iterator's state is its position.
"""

import dataclasses
import math
import sys
from typing import Callable, Mapping, Sequence
import zlib

from absl import flags
from absl import logging
import grain
import ml_collections
import numpy as np

from lavin_jax.data import buckets
from lavin_jax.data import episodes
from lavin_jax.data import tasks

# ---------------------------------------------------------------------------
# Checks.
# ---------------------------------------------------------------------------


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises a ValueError on a bad resolution, pair counts or worker setting.

  Worker processes need absl flags parsed (see lavin_jax.data.pipeline).
  """
  if config.resolution <= 0:
    raise ValueError(
      f"resolution must be positive, got {config.resolution}; the model "
      "fixes its multiple (lavin_jax.configs.models.pixel_multiple)."
    )
  if not 1 <= config.k_min <= config.k_max:
    raise ValueError(f"Need 1 <= k_min <= k_max, got k_min={config.k_min}, k_max={config.k_max}.")
  buckets.bounds(config)  # Raises on a bad k_buckets.
  if config.worker_count < 0 or config.read_threads < 0:
    raise ValueError("worker_count and read_threads must be >= 0.")
  if config.worker_count and not flags.FLAGS.is_parsed():
    raise ValueError(
      "worker_count > 0 starts Grain worker processes, and Grain reads its absl flags "
      "to start them, but the flags are not parsed: run the program with "
      "absl.app.run(main), or call flags.FLAGS(sys.argv[:1]) in its main, or set "
      "worker_count = 0."
    )


def shard_options(
  config: ml_collections.ConfigDict, process_index: int | None, process_count: int | None
) -> grain.sharding.ShardOptions:
  """This process's shard (default: the JAX process); checks the batch splits over them."""
  if (process_index is None) != (process_count is None):
    raise ValueError("Give both process_index and process_count, or neither.")
  if process_index is None:
    shard = grain.sharding.ShardByJaxProcess()
  else:
    shard = grain.sharding.ShardOptions(process_index, process_count)
  if config.batch_size % shard.shard_count:
    raise ValueError(
      f"batch_size {config.batch_size} does not split evenly over {shard.shard_count} processes."
    )
  return shard


def weighted_tasks(config: ml_collections.ConfigDict) -> tuple[list[tasks.Task], np.ndarray]:
  """The tasks with non-zero weight and their probabilities; checks the weights."""
  weights = dict(config.task_weights)
  for name, weight in weights.items():
    tasks.task_id(name)  # Raises on an unknown name.
    if not weight >= 0:
      raise ValueError(f"Task weight of {name!r} must be >= 0, got {weight}.")
  chosen = [tasks.get_task(n, config.task) for n, w in weights.items() if w > 0]
  if not chosen:
    raise ValueError(
      "All task weights are 0; give at least one task a positive weight "
      f"in config.task_weights (tasks: {', '.join(tasks.TASK_NAMES)})."
    )
  probs = np.array([weights[t.name] for t in chosen], np.float64)
  return chosen, probs / probs.sum()


def describe(sources: Mapping) -> dict[str, tuple[int, tuple[str, ...]]]:
  """{name: (size, example keys)} of sources, what `plan` reads; a source without
  `keys` is described by its first example's."""
  described = {}
  for name, source in sources.items():
    keys = getattr(source, "keys", None)
    if keys is None:
      keys = source[0] if len(source) else ()
    described[name] = (len(source), tuple(keys))
  return described


def check_examples(plans, sources: Mapping, config: ml_collections.ConfigDict) -> None:
  """Raises a ValueError unless each source's first example fits its tasks and the size."""
  for plan in plans:
    first = sources[plan.name][0]
    for task in plan.tasks:
      task.check(first)
    episodes.fit_example(first, config.resolution, allow_upscale=config.allow_upscale)


# ---------------------------------------------------------------------------
# The plan: what each source feeds.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class SourcePlan:
  """One source's part of a mixture.

  Attributes:
    name: the source's name.
    size: its examples.
    tasks: the weighted tasks it feeds.
    probs: P(task | source), aligned with `tasks`.
    weight: P(source): the share of all episodes drawn from it.
    frames: T of its tasks' clips (1: stills).
  """

  name: str
  size: int
  tasks: tuple[tasks.Task, ...]
  probs: np.ndarray
  weight: float
  frames: int


def plan(
  config: ml_collections.ConfigDict, sources: Mapping[str, tuple[int, Sequence[str]]]
) -> list[SourcePlan]:
  """The sources feeding the weighted tasks, by name, from {name: (size, keys)}.

  Raises:
    ValueError: a weighted task that no source carries, a source of fewer than 2
      examples, or a source feeding both stills and clips.
  """
  task_list, probs = weighted_tasks(config)
  for name, (size, _) in sources.items():
    if size < 2:
      raise ValueError(
        f"Source {name!r} has {size} examples; episodes need at least 2 (a query and a "
        "different context example)."
      )
  names = sorted(sources)
  carriers = [[n for n in names if set(t.needs) <= set(sources[n][1])] for t in task_list]
  for task, found in zip(task_list, carriers):
    if not found:
      held = "; ".join(f"{n!r} has {sorted(sources[n][1])}" for n in names)
      raise ValueError(
        f"Task {task.name!r} needs {' and '.join(map(repr, task.needs))}, but no source "
        f"has them ({held}); add a source with them, or set the task's weight to 0."
      )
  joint = {name: [] for name in names}  # name -> [(task, P(source, task))]
  for task, p, found in zip(task_list, probs, carriers):
    total = sum(sources[n][0] for n in found)
    for name in found:
      joint[name].append((task, p * sources[name][0] / total))
  plans = []
  for name in names:
    if not joint[name]:
      logging.warning("Source %r carries no weighted task; it is left out.", name)
      continue
    frames = {task.num_frames for task, _ in joint[name]}
    if len(frames) > 1:
      raise ValueError(
        f"Source {name!r} feeds tasks of {sorted(frames)} frames; a source holds "
        "stills or clips, not both."
      )
    shares = np.array([p for _, p in joint[name]])
    plans.append(
      SourcePlan(
        name,
        sources[name][0],
        tuple(task for task, _ in joint[name]),
        shares / shares.sum(),
        float(shares.sum()),
        frames.pop(),
      )
    )
  return plans


# ---------------------------------------------------------------------------
# Seeded mixing.
# ---------------------------------------------------------------------------


def derived_seed(seed: int, tag: str) -> int:
  """A seed of its own for the part of a pipeline named `tag`."""
  state = np.random.SeedSequence([seed, zlib.crc32(tag.encode())]).generate_state(1)
  return int(state[0])


class SeededMix(grain.transforms.DatasetSelectionMap):
  """Mixture position -> (dataset, position in it): exact proportions, a seeded order.

  The weights become integer counts c_i (the smallest weight 100, then divided by
  their greatest common divisor). Each cycle of sum(c) positions holds c_i elements
  of dataset i, in an order permuted by (seed, cycle); each dataset's elements come
  in their own order.
  """

  def __init__(self, weights: Sequence[float], seed: int, length: int = sys.maxsize):
    w = np.asarray(weights, np.float64)
    counts = np.maximum(np.round(w / w.min() * 100), 1).astype(np.int64)
    self._counts = counts // np.gcd.reduce(counts)
    self._slots = np.repeat(np.arange(len(counts)), self._counts)
    self._seed, self._length = seed, length
    self._cycle = (-1, None, None)  # (cycle, dataset of each position, rank in it)

  def __len__(self) -> int:
    return self._length

  def _layout(self, cycle: int):
    cached = self._cycle
    if cached[0] != cycle:
      which = np.random.default_rng((self._seed, cycle)).permutation(self._slots)
      rank = np.empty_like(which)
      for i, count in enumerate(self._counts):
        rank[which == i] = np.arange(count)
      cached = self._cycle = (cycle, which, rank)
    return cached

  def __getitem__(self, index: int) -> tuple[int, int]:
    cycle, position = divmod(int(index), len(self._slots))
    _, which, rank = self._layout(cycle)
    dataset = int(which[position])
    return dataset, cycle * int(self._counts[dataset]) + int(rank[position])


def mix(datasets: Sequence[grain.MapDataset], weights: Sequence[float], seed: int):
  """The seeded mixture of datasets (`SeededMix`); a single dataset is returned as is."""
  if len(datasets) == 1:
    return datasets[0]
  length = min(len(d) for d in datasets)
  return grain.MapDataset.select_from_datasets(datasets, SeededMix(weights, seed, length))


# ---------------------------------------------------------------------------
# Batches.
# ---------------------------------------------------------------------------


class _Tag(grain.transforms.Map):
  """Query index -> (source number, query index)."""

  def __init__(self, number: int):
    self._number = number

  def map(self, index) -> tuple[int, int]:
    return self._number, int(index)


class _Episodes(grain.transforms.MapWithIndex):
  """(position, (source number, query index)) -> the episode, K and slots by `buckets`."""

  def __init__(self, makers: Sequence[Callable], sampler: buckets.Sampler, seed: int):
    self._makers, self._sampler, self._seed = makers, sampler, seed

  def map_with_index(self, position: int, element: tuple[int, int]) -> dict:
    number, index = element
    rng = np.random.default_rng((self._seed, position))
    num_pairs, slots = self._sampler(position, rng)
    return self._makers[number](index, num_pairs, slots, rng)


def batches(
  plans: Sequence[SourcePlan],
  config: ml_collections.ConfigDict,
  shard: grain.sharding.ShardOptions,
  make_episodes: Callable[[SourcePlan], Callable],
) -> grain.MapDataset:
  """This process's batches of the mixture (an endless MapDataset; see the module doc).

  Args:
    plans: the mixture (`plan`).
    config: a `lavin_jax.configs.data.pipeline()`: seed, batch_size, k_min, k_max and
      k_buckets.
    shard: this process's shard (`shard_options`).
    make_episodes: a source's plan -> episode(query index, K, slots, rng), the episode
      of K context pairs padded to `slots` (lavin_jax.data.episodes' layout).
  """
  groups = {}
  for p in plans:
    groups.setdefault(p.frames, []).append(p)
  streams, weights = [], []
  for frames in sorted(groups):
    members = groups[frames]
    queries = [
      grain.MapDataset.range(p.size)
      .seed(derived_seed(config.seed, f"source {p.name}"))
      .shuffle()
      .repeat()
      .map(_Tag(number))
      for number, p in enumerate(members)
    ]
    stream = mix(
      queries, [p.weight for p in members], derived_seed(config.seed, f"frames {frames}")
    )
    sampler = buckets.Sampler(
      config, config.batch_size, derived_seed(config.seed, f"buckets {frames}")
    )
    makers = [make_episodes(p) for p in members]
    stream = stream.map_with_index(
      _Episodes(makers, sampler, derived_seed(config.seed, f"episodes {frames}"))
    )
    stream = stream[shard.shard_index :: shard.shard_count]
    streams.append(stream.batch(config.batch_size // shard.shard_count, drop_remainder=True))
    weights.append(math.fsum(p.weight for p in members))
  return mix(streams, weights, derived_seed(config.seed, "batches"))


def iter_dataset(ds: grain.MapDataset, config: ml_collections.ConfigDict) -> grain.IterDataset:
  """`ds` read ahead by threads and, with config.worker_count, worker processes."""
  iter_ds = ds.to_iter_dataset(
    grain.ReadOptions(num_threads=config.read_threads, prefetch_buffer_size=config.read_buffer_size)
  )
  if config.worker_count:
    iter_ds = iter_ds.mp_prefetch(
      grain.MultiprocessingOptions(
        num_workers=config.worker_count, per_worker_buffer_size=config.worker_buffer_size
      )
    )
  return iter_ds
