"""Grain input pipeline: batches of in-context episodes, one task per episode.

For each query example of the (shuffled, repeated, process-sharded) source:
  1. pick a task by `config.task_weights` and K uniformly in [k_min, k_max];
  2. pick K context examples from the whole source, never the query itself (distinct
     while the source allows);
  3. for each example: a random window of frames (video tasks), a square crop (random
     or centred) resized to `resolution`, then the task -> (input, target);
  4. stack the context into k_max slots, zeros past K.
Steps 2-4 are `lavin_jax.data.episodes`, shared with the latent pipeline and evaluation.

Batches are dicts of numpy arrays, pixels float32 in [-1, 1]:
  'context_inputs', 'context_targets': (B, k_max, T, H, W, 3)
  'query', 'target': (B, T, H, W, 3)
  'num_pairs': (B,) int32 in [1, k_max]; context slots >= num_pairs are zero padding
  'task_id': (B,) int32, the task's index in `tasks.TASK_NAMES`
with B = batch_size / process_count per process. T is the frame count of every task
with a non-zero weight (1 for image tasks, task.num_frames for video tasks).

Determinism: every draw comes from the generator Grain derives from `config.seed` and
the element's position in the global, unsharded stream. Process p of n takes positions
p, p + n, ... (in each epoch the processes see disjoint sets of query examples that
together cover the source), and a batch depends on the seed, the step and the process
split only, not on the worker count. The iterator of the returned dataset saves and
restores its position with `get_state` / `set_state`, or through orbax with
`grain.checkpoint.CheckpointSave` / `CheckpointRestore`.

Worker processes (`config.worker_count > 0`): Grain reads its absl flags when it starts
them (--grain_enable_multiprocess_worker_profiling), so the program must have parsed
absl flags first: `absl.app.run(main)` does; a script without absl calls
`flags.FLAGS(sys.argv[:1])` in its main. This module never changes the flags.
"""

from absl import flags
import grain
import ml_collections
import numpy as np

from lavin_jax.data import episodes
from lavin_jax.data import tasks

# ---------------------------------------------------------------------------
# Episodes.
# ---------------------------------------------------------------------------


class EpisodeMaker(grain.transforms.RandomMap):
  """Query index -> one in-context episode (unbatched arrays, see the module doc)."""

  def __init__(
    self,
    source,
    task_list: list[tasks.Task],
    weights: np.ndarray,
    config: ml_collections.ConfigDict,
  ):
    self._source = source
    self._tasks = task_list
    self._weights = weights
    self._config = config

  def random_map(self, index: int, rng: np.random.Generator) -> dict:
    c = self._config
    task = self._tasks[rng.choice(len(self._tasks), p=self._weights)]
    num_pairs = int(rng.integers(c.k_min, c.k_max + 1))
    context = episodes.context_indices(rng, num_pairs, len(self._source), int(index), repeat=True)
    return episodes.render_episode(
      task,
      self._source,
      int(index),
      context,
      [rng] * (num_pairs + 1),
      c.resolution,
      c.k_max,
      random_crop=c.random_crop,
      allow_upscale=c.allow_upscale,
    )


# ---------------------------------------------------------------------------
# Checks and the entry point.
# ---------------------------------------------------------------------------


def active_tasks(config: ml_collections.ConfigDict) -> tuple[list[tasks.Task], np.ndarray]:
  """The tasks with non-zero weight and their sampling probabilities; checks config."""
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
  frames = {t.name: t.num_frames for t in chosen}
  if len(set(frames.values())) > 1:
    raise ValueError(
      f"One pipeline has one frame count, but the tasks have {frames}; "
      "make separate image and video pipelines."
    )
  probs = np.array([weights[t.name] for t in chosen], np.float64)
  return chosen, probs / probs.sum()


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises a ValueError on a bad resolution, pair count or worker setting.

  Worker processes need absl flags parsed (see the module docstring).
  """
  if config.resolution <= 0:
    raise ValueError(
      f"resolution must be positive, got {config.resolution}; the model "
      "fixes its multiple (lavin_jax.configs.models.pixel_multiple)."
    )
  if not 1 <= config.k_min <= config.k_max:
    raise ValueError(f"Need 1 <= k_min <= k_max, got k_min={config.k_min}, k_max={config.k_max}.")
  if config.worker_count < 0 or config.read_threads < 0:
    raise ValueError("worker_count and read_threads must be >= 0.")
  if config.worker_count and not flags.FLAGS.is_parsed():
    raise ValueError(
      "worker_count > 0 starts Grain worker processes, and Grain reads its absl flags "
      "to start them, but the flags are not parsed: run the program with "
      "absl.app.run(main), or call flags.FLAGS(sys.argv[:1]) in its main, or set "
      "worker_count = 0."
    )


def make_pipeline(
  config: ml_collections.ConfigDict,
  source,
  process_index: int | None = None,
  process_count: int | None = None,
) -> grain.IterDataset:
  """The Grain dataset of this process's batches; `iter()` it for a checkpointable iterator.

  Args:
    config: a `lavin_jax.configs.data.pipeline()`.
    source: random-access source (len + getitem) of examples as in
      `lavin_jax.data.sources`; every example must carry what the weighted tasks need.
    process_index, process_count: this process's shard; default the JAX processes.
  """
  check_config(config)
  task_list, probs = active_tasks(config)
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
  if len(source) < 2:
    raise ValueError(
      f"The source has {len(source)} examples; episodes need at least 2 "
      "(a query and a different context example)."
    )
  first = source[0]
  for task in task_list:
    task.check(first)
  episodes.fit_example(first, config.resolution, allow_upscale=config.allow_upscale)

  ds = grain.MapDataset.range(len(source)).seed(config.seed).shuffle().repeat()
  ds = ds.random_map(EpisodeMaker(source, task_list, probs, config))
  ds = ds[shard.shard_index :: shard.shard_count]
  ds = ds.batch(config.batch_size // shard.shard_count, drop_remainder=True)
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
