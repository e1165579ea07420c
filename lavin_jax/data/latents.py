"""In-context episodes from precomputed ST-VAE latents: the fast path for small models.

With `config.input = 'pixels'` the J-DiT step encodes every clip of every episode,
(2K + 2) ST-VAE passes per example. When every task renders deterministically (square
examples, centred crops), each task's (input, target) pair of each example can be
encoded once instead: `encode_task_pairs` builds a table of posterior moments and
`make_latent_pipeline` draws episodes from it with Grain, as `lavin_jax.data.pipeline`
does from pixels (a task by weight, K pairs uniform in [k_min, k_max], the context
indices and layout of `lavin_jax.data.episodes`), drawing a fresh posterior sample each
time and normalising it. Batches have the pipeline's layout with
normalised latents (T', h, w, 16) in place of pixels: `config.input = 'latents'` of
`lavin_jax.train.dit`.
"""

from typing import Callable

import grain
import ml_collections
import numpy as np
import tqdm

from lavin_jax.data import episodes
from lavin_jax.data import tasks as tasks_lib


def render_task_pairs(source, task: tasks_lib.Task, resolution: int, seed: int = 0):
  """Every example's centred (input, target) pixels for `task`: two (N, T, H, W, 3).

  A video task renders each clip's first frames.
  """
  pairs = [
    episodes.render_pair(
      task, source[index], resolution, np.random.default_rng((seed, index)), window=False
    )
    for index in range(len(source))
  ]
  return tuple(np.stack(clips) for clips in zip(*pairs))


def encode_task_pairs(
  source,
  task_names,
  resolution: int,
  encode_fn: Callable,
  task_config: ml_collections.ConfigDict,
  batch_size: int = 32,
) -> dict:
  """{task: {input_mean, input_logvar, target_mean, target_logvar}}, each (N, T', h, w, C).

  encode_fn maps pixels (B, T, H, W, 3) to the ST-VAE posterior (mean, logvar).
  """
  pairs = {
    name: render_task_pairs(source, tasks_lib.get_task(name, task_config), resolution)
    for name in task_names
  }
  return encode_pairs(pairs, encode_fn, batch_size)


def encode_pairs(pairs: dict, encode_fn: Callable, batch_size: int = 32) -> dict:
  """`encode_task_pairs` of rendered pairs {task: (inputs, targets)}, each (N, T, H, W, 3).

  Equal clip arrays (tasks that share their inputs) are encoded once.
  """
  encoded = []  # (clips, (mean, logvar)) of every distinct array so far

  def moments(clips):
    for done, result in encoded:
      if done.shape == clips.shape and np.array_equal(done, clips):
        return result
    starts = tqdm.tqdm(
      range(0, len(clips), batch_size), desc="encode pairs", unit="batch", leave=False
    )
    batches = [encode_fn(clips[i : i + batch_size]) for i in starts]
    result = tuple(np.concatenate([np.asarray(b[j]) for b in batches]) for j in range(2))
    encoded.append((clips, result))
    return result

  tables = {}
  for name, (inputs, targets) in pairs.items():
    (input_mean, input_logvar), (target_mean, target_logvar) = moments(inputs), moments(targets)
    tables[name] = dict(
      input_mean=input_mean,
      input_logvar=input_logvar,
      target_mean=target_mean,
      target_logvar=target_logvar,
    )
  return tables


class LatentEpisodeMaker(grain.transforms.RandomMap):
  """Query index -> one episode of normalised posterior samples (unbatched)."""

  def __init__(
    self, tables: dict, probs: np.ndarray, k_min: int, k_max: int, shift: float, scale: float
  ):
    self.tables, self.names = tables, list(tables)
    self.probs, self.k_min, self.k_max = probs, k_min, k_max
    self.shift, self.scale = shift, scale

  def _sample(self, table, prefix, indices, rng):
    mean, logvar = table[f"{prefix}_mean"][indices], table[f"{prefix}_logvar"][indices]
    z = mean + np.exp(0.5 * logvar) * rng.standard_normal(mean.shape, np.float32)
    return ((z - self.shift) * self.scale).astype(np.float32)

  def random_map(self, index, rng: np.random.Generator) -> dict:
    task = int(rng.choice(len(self.names), p=self.probs))
    table = self.tables[self.names[task]]
    size = len(table["input_mean"])
    k = int(rng.integers(self.k_min, self.k_max + 1))
    context = episodes.context_indices(rng, k, size, int(index))
    pairs = (
      self._sample(table, "input", context, rng),
      self._sample(table, "target", context, rng),
    )
    query = (
      self._sample(table, "input", [int(index)], rng)[0],
      self._sample(table, "target", [int(index)], rng)[0],
    )
    return episodes.assemble(query, pairs, tasks_lib.task_id(self.names[task]), self.k_max)


def make_latent_pipeline(
  tables: dict,
  config: ml_collections.ConfigDict,
  shift: float,
  scale: float,
  process_index: int = 0,
  process_count: int = 1,
) -> grain.IterDataset:
  """Grain batches of latent episodes; `iter()` it for a checkpointable iterator.

  config: a `lavin_jax.configs.data.pipeline()` (batch_size, k_min, k_max, seed;
  task weights over the tables' tasks). Process p of n takes every n-th episode.
  """
  names = list(tables)
  weights = np.array([config.task_weights[n] for n in names], np.float64)
  if weights.sum() <= 0:
    raise ValueError(f"No positive task weight among the encoded tasks {names}.")
  sizes = {len(t["input_mean"]) for t in tables.values()}
  if len(sizes) != 1 or min(sizes) <= config.k_max:
    raise ValueError(
      f"Every task table needs the same number of examples, more than "
      f"k_max={config.k_max}; got sizes {sorted(sizes)}."
    )
  if config.batch_size % process_count:
    raise ValueError(
      f"batch_size {config.batch_size} does not split over {process_count} processes."
    )
  maker = LatentEpisodeMaker(
    tables, weights / weights.sum(), config.k_min, config.k_max, shift, scale
  )
  ds = grain.MapDataset.range(sizes.pop()).seed(config.seed).shuffle().repeat()
  ds = ds.random_map(maker)[process_index::process_count]
  return ds.batch(config.batch_size // process_count, drop_remainder=True).to_iter_dataset()
