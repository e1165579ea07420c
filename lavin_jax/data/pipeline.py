"""Grain input pipeline: batches of in-context episodes of pixels, one task per episode.

`make_mixture` mixes the weighted tasks over named sources (lavin_jax.data.mixture: which
source feeds which task, how often, batches of one frame count each); `make_pipeline` is
the mixture of one source. For each query example of a source's stream:
  1. pick a task among those the source feeds, and K in [k_min, k_max] (uniform) with
     its padded size S, one per batch (lavin_jax.data.buckets);
  2. pick K context examples from the whole source, never the query itself (distinct
     while the source allows);
  3. for each example: a random window of frames (video tasks), a square crop (random
     or centred) resized to `resolution`, then the task -> (input, target);
  4. stack the context into S slots, zeros past K;
  5. check for NaN and inf: an example holding them raises
     `episodes.NonFiniteExampleError` naming the source and the example's index, or with
     `skip_nonfinite` is redrawn and counted.
Steps 2-5 are `lavin_jax.data.episodes`, shared with the latent pipeline and evaluation.

Batches are dicts of numpy arrays, pixels float32 in [-1, 1]:
  'context_inputs', 'context_targets': (B, S, T, H, W, 3)
  'query', 'target': (B, T, H, W, 3)
  'num_pairs': (B,) int32 in [1, S]; context slots >= num_pairs are zero padding
  'task_id': (B,) int32, the task's index in `tasks.TASK_NAMES`
  'skipped': (B,) int32, non-finite examples redrawn for each episode
with B = batch_size / process_count per process. T is one frame count and S one
context size per batch (1 for image tasks, task.num_frames for video tasks); a mixture
of stills and clips interleaves batches of both. With the default buckets S is the
batch's K: nothing is padded.

Determinism: every draw comes from generators derived from `config.seed` and the
element's position in the global, unsharded stream. Process p of n takes positions
p, p + n, ... (in each epoch of a single source the processes see disjoint sets of query
examples that together cover it), and a batch depends on the seed, the step and the
process split only, not on the worker count. The iterator of the returned dataset saves
and restores its position with `get_state` / `set_state`, or through orbax with
`grain.checkpoint.CheckpointSave` / `CheckpointRestore`.

Worker processes (`config.worker_count > 0`): Grain reads its absl flags when it starts
them (--grain_enable_multiprocess_worker_profiling), so the program must have parsed
absl flags first: `absl.app.run(main)` does; a script without absl calls
`flags.FLAGS(sys.argv[:1])` in its main. This module never changes the flags."""

from typing import Mapping

import grain
import ml_collections
import numpy as np

from lavin_jax.data import episodes
from lavin_jax.data import mixture

# ---------------------------------------------------------------------------
# Episodes.
# ---------------------------------------------------------------------------


class EpisodeMaker:
  """(query index, K, slots, rng) -> one episode of a source (unbatched, see the module doc)."""

  def __init__(self, plan: mixture.SourcePlan, source, config: ml_collections.ConfigDict):
    self._plan, self._source, self._config = plan, source, config

  def __call__(self, index: int, num_pairs: int, slots: int, rng: np.random.Generator) -> dict:
    c, p = self._config, self._plan
    task = p.tasks[rng.choice(len(p.tasks), p=p.probs)]

    def render(query, context):
      return episodes.render_episode(
        task,
        self._source,
        query,
        context,
        [rng] * (num_pairs + 1),
        c.resolution,
        slots,
        random_crop=c.random_crop,
        allow_upscale=c.allow_upscale,
      )

    context = episodes.context_indices(rng, num_pairs, p.size, index, repeat=True)
    return episodes.finite_episode(
      render,
      index,
      context,
      rng,
      p.size,
      c.skip_nonfinite,
      lambda i: f"Source {p.name!r} example {i} ({task.name})",
    )


# ---------------------------------------------------------------------------
# Entry points.
# ---------------------------------------------------------------------------


def make_mixture(
  config: ml_collections.ConfigDict,
  sources: Mapping,
  process_index: int | None = None,
  process_count: int | None = None,
) -> grain.IterDataset:
  """The Grain dataset of this process's batches; `iter()` it for a checkpointable iterator.

  Args:
    config: a `lavin_jax.configs.data.pipeline()`.
    sources: {name: random-access source (len + getitem) of examples as in
      `lavin_jax.data.sources`}; each weighted task draws from those carrying what it
      reads (lavin_jax.data.mixture).
    process_index, process_count: this process's shard; default the JAX processes.
  """
  mixture.check_config(config)
  shard = mixture.shard_options(config, process_index, process_count)
  plans = mixture.plan(config, mixture.describe(sources))
  mixture.check_examples(plans, sources, config)
  ds = mixture.batches(plans, config, shard, lambda p: EpisodeMaker(p, sources[p.name], config))
  return mixture.iter_dataset(ds, config)


def make_pipeline(
  config: ml_collections.ConfigDict,
  source,
  process_index: int | None = None,
  process_count: int | None = None,
) -> grain.IterDataset:
  """`make_mixture` of one source, which must carry every weighted task (one frame count)."""
  task_list, _ = mixture.weighted_tasks(config)
  frames = {t.name: t.num_frames for t in task_list}
  if len(set(frames.values())) > 1:
    raise ValueError(
      f"One source has one frame count, but the tasks have {frames}; make separate "
      "image and video pipelines, or mix sources of stills and clips (make_mixture)."
    )
  if len(source):
    for task in task_list:
      task.check(source[0])
  return make_mixture(config, {"source": source}, process_index, process_count)
