"""Precomputed ST-VAE latents: a mixture's task pairs encoded once, episodes read from disk.

With input 'pixels' the J-DiT step encodes every clip of every episode, (2K + 2) ST-VAE
passes per example. `encode_latents` instead renders, for each source of the mixture
(lavin_jax.data.mixture) and each task it feeds, every example's (input, target) pair in
`views` renderings, runs the frozen ST-VAE once on both sides and writes the posterior
moments as ArrayRecord shards (lavin_jax.data.shards). A clip several tasks share (the
photograph that is one task's input and another's target) is encoded once. The
processes split the shards (process p of n takes shards p, p + n, ... of the list of
all); a finished shard is never redone, so a killed job picks up where it stopped.

Views: view 0 is the centred crop of the first frames; views 1, 2, ... draw a frame
window and, with `random_crop`, a crop. Every view draws the task's own randomness
(degradations, hole positions) from the generator (seed, example, view). The stored views
are all the augmentation this path has: it sees no other crop, window or degradation.

`make_latent_pipeline` draws the pixel pipeline's episodes from the shards through
Grain, from disk: the same mixture, task and K draws and layout (lavin_jax.data.episodes),
a stored view picked uniformly for each example, the context padded to the
batch's context size (lavin_jax.data.buckets). Batches have the pipeline's layout with
posterior moments (T', h, w, 2C), mean | log-variance in bfloat16, in place of pixels;
the J-DiT step draws the posterior sample and normalises it on the device
(lavin_jax.train.dit), as it does after encoding pixels. A stored pair holding NaN or
inf is named or skipped as in the pixel pipeline (`episodes.finite_episode`).
"""

import functools
import hashlib
import pathlib
from typing import Callable, Mapping

from absl import logging
import grain
import ml_collections
import numpy as np
import tqdm

from lavin_jax.data import episodes
from lavin_jax.data import mixture
from lavin_jax.data import shards
from lavin_jax.data import tasks as tasks_lib

# ---------------------------------------------------------------------------
# Rendering.
# ---------------------------------------------------------------------------


def render_view(
  task: tasks_lib.Task,
  example: dict,
  index: int,
  view: int,
  resolution: int,
  seed: int = 0,
  *,
  random_crop: bool = False,
  allow_upscale: bool = False,
) -> tasks_lib.Pair:
  """View `view` of example `index`'s (input, target) for `task` (see the module doc)."""
  return episodes.render_pair(
    task,
    example,
    resolution,
    np.random.default_rng((seed, index, view)),
    random_crop=random_crop and view > 0,
    window=view > 0,
    allow_upscale=allow_upscale,
  )


def render_task_pairs(source, task: tasks_lib.Task, resolution: int, seed: int = 0):
  """View 0 of every example's (input, target) pixels for `task`: two (N, T, H, W, 3)."""
  pairs = [render_view(task, source[i], i, 0, resolution, seed) for i in range(len(source))]
  return tuple(np.stack(clips) for clips in zip(*pairs))


# ---------------------------------------------------------------------------
# Settings.
# ---------------------------------------------------------------------------


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises a ValueError unless a `configs.data.latents()` has usable sizes."""
  for name in ("views", "examples_per_shard", "batch_size"):
    if config[name] < 1:
      raise ValueError(f"latents.{name} must be >= 1, got {config[name]}.")


def settings(
  data_config: ml_collections.ConfigDict, latents_config: ml_collections.ConfigDict, vae: dict
) -> dict:
  """What stored latents depend on: rendering, views and the ST-VAE (settings.json)."""
  return {
    "resolution": data_config.resolution,
    "random_crop": data_config.random_crop and latents_config.views > 1,  # view 0 is centred
    "allow_upscale": data_config.allow_upscale,
    "task_options": data_config.task.to_dict(),
    "views": latents_config.views,
    "seed": latents_config.seed,
    "vae": vae,
  }


# ---------------------------------------------------------------------------
# Encoding.
# ---------------------------------------------------------------------------


def _moments(clips: np.ndarray, encode: Callable, batch_size: int) -> np.ndarray:
  """Clips (N, T, H, W, 3) -> moments (N, T', h, w, 2C), in batches of one size."""
  out = []
  for start in range(0, len(clips), batch_size):
    batch = clips[start : start + batch_size]
    size = len(batch)
    batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - size, axis=0)])
    mean, logvar = encode(batch)
    out.append(np.concatenate([np.asarray(mean), np.asarray(logvar)], axis=-1)[:size])
  return np.concatenate(out)


def _encode_pairs(pairs, encode: Callable, batch_size: int) -> list[list[np.ndarray]]:
  """Moments (2, T', h, w, 2C) of [[(input, target) of each task] of each unit].

  Equal clips (a photograph several tasks share) are encoded once.
  """
  found, clips = {}, []

  def slot(clip):
    key = (clip.shape, hashlib.sha1(clip.tobytes()).digest())
    if key not in found:
      found[key] = len(clips)
      clips.append(clip)
    return found[key]

  refs = [[[slot(clip) for clip in pair] for pair in unit] for unit in pairs]
  moments = _moments(np.stack(clips), encode, batch_size)
  return [[moments[ref] for ref in unit] for unit in refs]


def _encode_shard(writers, source, task_list, examples, encode, data_config, latents_config):
  """Writes one record per (example, view) of `examples` to each task's writer."""
  units = [(i, v) for i in examples for v in range(latents_config.views)]
  per_chunk = max(1, latents_config.batch_size // (2 * len(task_list)))
  example, current = None, None
  for start in range(0, len(units), per_chunk):
    pairs = []
    for index, view in units[start : start + per_chunk]:
      if index != current:
        example, current = source[index], index
      pairs.append(
        [
          render_view(
            task,
            example,
            index,
            view,
            data_config.resolution,
            latents_config.seed,
            random_crop=data_config.random_crop,
            allow_upscale=data_config.allow_upscale,
          )
          for task in task_list
        ]
      )
    for unit in _encode_pairs(pairs, encode, latents_config.batch_size):
      for writer, moments in zip(writers, unit):
        writer.write(shards.encode_record(moments))


def encode_latents(
  sources: Mapping,
  directory,
  data_config: ml_collections.ConfigDict,
  latents_config: ml_collections.ConfigDict,
  make_encoder: Callable[[], Callable],
  vae: dict,
  process_index: int = 0,
  process_count: int = 1,
) -> list[pathlib.Path]:
  """Encodes this process's shards of the mixture's task pairs; returns the files written.

  Args:
    sources: {name: source} of the mixture (lavin_jax.data.mixture).
    directory: the shard set (lavin_jax.data.shards); shards already there are kept.
    data_config: a `configs.data.pipeline()`: task weights and options, resolution.
    latents_config: a `configs.data.latents()`: views, seed, examples per shard, batch.
    make_encoder: () -> encode, which maps pixels (B, T, H, W, 3) to the ST-VAE
      posterior (mean, logvar), each (B, T', h, w, C); called once, and only when a
      shard is left to encode.
    vae: what identifies the ST-VAE (weights, architecture), kept in settings.json.
    process_index, process_count: this process's share of the shards.

  Raises:
    ValueError: the mixture does not fit its sources, or `directory` holds latents of
      other settings.
  """
  check_config(latents_config)
  mixture.check_config(data_config)
  described = mixture.describe(sources)
  plans = mixture.plan(data_config, described)
  mixture.check_examples(plans, sources, data_config)
  directory = pathlib.Path(directory)
  shards.write_once(shards.settings_file(directory), settings(data_config, latents_config, vae))
  per_shard = latents_config.examples_per_shard
  work = []  # (plan, shard index, shard count)
  for p in plans:
    keys = sorted(described[p.name][1])
    layout = {"size": p.size, "keys": keys, "examples_per_shard": per_shard}
    shards.write_once(shards.source_file(directory, p.name), layout)
    count = shards.num_shards(p.size, per_shard)
    work += [(p, j, count) for j in range(count)]

  encode, written, encoded = None, [], 0
  mine = work[process_index::process_count]
  for p, j, count in tqdm.tqdm(
    mine, desc="encode latents", unit="shard", disable=process_index != 0
  ):
    paths = {t.name: shards.shard_paths(directory, p.name, t.name, count)[j] for t in p.tasks}
    todo = [t for t in p.tasks if not paths[t.name].exists()]
    if not todo:
      continue
    encode = encode or make_encoder()
    examples = range(j * per_shard, min((j + 1) * per_shard, p.size))
    targets = [paths[t.name] for t in todo]
    shards.write_shards(
      targets,
      functools.partial(
        _encode_shard,
        source=sources[p.name],
        task_list=todo,
        examples=examples,
        encode=encode,
        data_config=data_config,
        latents_config=latents_config,
      ),
    )
    written += targets
    encoded += 1
    logging.info("Wrote %s", ", ".join(map(str, targets)))
  logging.info(
    "Process %d of %d: %d of its %d shards encoded, the others were done.",
    process_index,
    process_count,
    encoded,
    len(mine),
  )
  return written


def mean_statistics(directory) -> tuple[float, float]:
  """Mean and standard deviation of the posterior means of every record in `directory`."""
  total = total_sq = count = 0.0
  for path in sorted(pathlib.Path(directory).glob("*/*/shard-*.array_record")):
    records = shards.open_records([path])
    for record in records.__getitems__(range(len(records))):
      moments = shards.decode_record(record)
      mean = moments[..., : moments.shape[-1] // 2].astype(np.float64)
      total, total_sq, count = total + mean.sum(), total_sq + (mean**2).sum(), count + mean.size
  if not count:
    raise ValueError(f"No latent records in {directory}.")
  average = total / count
  return float(average), float(np.sqrt(max(total_sq / count - average**2, 0.0)))


# ---------------------------------------------------------------------------
# Reading: episodes of stored moments.
# ---------------------------------------------------------------------------


class LatentEpisodeMaker:
  """(query index, K, slots, rng) -> one episode of stored moments (unbatched, bfloat16)."""

  def __init__(
    self,
    records: Mapping[str, grain.sources.ArrayRecordDataSource],
    plan: mixture.SourcePlan,
    views: int,
    skip_nonfinite: bool,
  ):
    self._records, self._plan = records, plan
    self._views, self._skip = views, skip_nonfinite

  def __call__(self, index: int, num_pairs: int, slots: int, rng: np.random.Generator) -> dict:
    p = self._plan
    task = p.tasks[rng.choice(len(p.tasks), p=p.probs)]

    def render(query, context):
      examples = np.concatenate([[query], context])
      views = rng.integers(0, self._views, len(examples))
      records = self._records[task.name].__getitems__((examples * self._views + views).tolist())
      pairs = np.stack([shards.decode_record(r) for r in records])  # (K + 1, 2, T', h, w, 2C)
      return episodes.assemble(
        (pairs[0, 0], pairs[0, 1]), (pairs[1:, 0], pairs[1:, 1]), task.id, slots
      )

    context = episodes.context_indices(rng, num_pairs, p.size, index, repeat=True)
    return episodes.finite_episode(
      render,
      index,
      context,
      rng,
      p.size,
      self._skip,
      lambda i: f"Stored latents of source {p.name!r} example {i} ({task.name})",
    )


def make_latent_pipeline(
  directory,
  names,
  data_config: ml_collections.ConfigDict,
  latents_config: ml_collections.ConfigDict,
  vae: dict,
  process_index: int | None = None,
  process_count: int | None = None,
) -> grain.IterDataset:
  """The Grain dataset of this process's batches of stored latents; `iter()` it.

  Args:
    directory: a shard set `encode_latents` wrote.
    names: the mixture's source names.
    data_config, latents_config, vae: as given to `encode_latents` (checked against the
      set's settings.json); the data config's weights, batch size, k_min, k_max,
      k_buckets, skip_nonfinite, seed and readers may differ.
    process_index, process_count: this process's shard; default the JAX processes.

  Raises:
    FileNotFoundError: the set lacks a source or shards the mixture needs.
    ValueError: the set was written with other settings, or the mixture does not fit.
  """
  check_config(latents_config)
  mixture.check_config(data_config)
  shard = mixture.shard_options(data_config, process_index, process_count)
  directory = pathlib.Path(directory)
  layouts = {}
  for name in names:
    path = shards.source_file(directory, name)
    if not path.exists():
      raise FileNotFoundError(
        f"{directory} holds no latents of source {name!r} ({path} is missing); encode "
        "them first: launch/encode_latents.py with this config."
      )
    layouts[name] = shards.read_json(path)
  shards.check_json(shards.settings_file(directory), settings(data_config, latents_config, vae))
  plans = mixture.plan(data_config, {n: (s["size"], s["keys"]) for n, s in layouts.items()})
  records = {}
  for p in plans:
    count = shards.num_shards(p.size, layouts[p.name]["examples_per_shard"])
    for task in p.tasks:
      paths = shards.shard_paths(directory, p.name, task.name, count)
      absent = shards.missing(paths)
      if absent:
        raise FileNotFoundError(
          f"{len(absent)} of {count} shards of task {task.name!r} of source {p.name!r} "
          f"are missing in {directory} (first: {absent[0].name}); finish them with "
          "launch/encode_latents.py and this config."
        )
      records[p.name, task.name] = shards.open_records(paths)

  def make_episodes(p):
    mine = {task.name: records[p.name, task.name] for task in p.tasks}
    return LatentEpisodeMaker(mine, p, latents_config.views, data_config.skip_nonfinite)

  return mixture.iter_dataset(
    mixture.batches(plans, data_config, shard, make_episodes), data_config
  )
