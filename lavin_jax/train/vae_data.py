"""ST-VAE training batches: 1-frame stills and 1 + 4k-frame clips, one frame count a batch.

Global step s (0-based) is a clip batch with probability `clip_fraction` in stage
'images+clips', drawn from (seed, s); otherwise, and always in stage 'images', a
still batch. Its examples are positions s * B ... s * B + B - 1 of that kind's order,
`grain.MapDataset.range(n).seed(seed).shuffle().repeat()`, each cropped (a random
square, for clips a random first frame) by a generator seeded with (seed, s, row).
A batch is a function of the seed and the step only: any number of processes reads
the same global batches, each preparing just its own rows, and a resumed run sees
the batches an uninterrupted one would.

  it = make_input(stills, clips, config)  # Grain iterator: its position is checkpointed
  next(it)                                # this process's rows, (B / P, T, H, W, 3)
"""

import sys

import grain
import jax
import numpy as np

from lavin_jax.configs import train_vae as train_vae_configs
from lavin_jax.data import episodes
from lavin_jax.io import pixels as pixels_lib


def uses_clips(config) -> bool:
  return config.stage == train_vae_configs.STAGES[1]


def is_clip_step(config, step: int) -> bool:
  """Whether global step `step` (0-based) trains on clips."""
  return uses_clips(config) and bool(
    np.random.default_rng((config.seed, step)).random() < config.clip_fraction
  )


def _order(source, seed):
  return grain.MapDataset.range(len(source)).seed(seed).shuffle().repeat()


class Batches:
  """Random access for Grain: step -> rows p * B / P ... (p + 1) * B / P - 1 of the
  global batch, for process p of P."""

  def __init__(self, stills, clips, config, process_index, process_count):
    self._config = config
    self._kinds = {False: (stills, _order(stills, config.seed), config.batch_size)}
    if clips is not None:
      self._kinds[True] = (clips, _order(clips, config.seed), config.clip_batch_size)
    self._process = (process_index, process_count)

  def __len__(self):
    return sys.maxsize

  def _example(self, source, index, rng, clip):
    example = source[int(index)]
    if not clip:
      return pixels_lib.to_float(
        episodes.fit_example(example, self._config.resolution, rng)["image"]
      )[None]
    frames = self._config.clip_frames
    start = int(rng.integers(0, len(example["video"]) - frames + 1))
    video = {"video": example["video"][start : start + frames]}
    return pixels_lib.to_float(episodes.fit_example(video, self._config.resolution, rng)["video"])

  def __getitem__(self, step):
    clip = is_clip_step(self._config, step)
    source, order, batch = self._kinds[clip]
    p, count = self._process
    rows = range(batch // count * p, batch // count * (p + 1))
    return np.stack(
      [
        self._example(
          source,
          order[step * batch + row],
          np.random.default_rng((self._config.seed, step, row)),
          clip,
        )
        for row in rows
      ]
    )


def _check_source(source, key, what, config):
  if len(source) < 1:
    raise ValueError(f"The ST-VAE {what} source is empty.")
  example = source[0]
  if key not in example:
    raise ValueError(
      f"The ST-VAE {what} source yields {sorted(example)}, not {key!r}; give "
      f"a source of {what} (e.g. synthetic content="
      f"{'images' if key == 'image' else 'clips'})."
    )
  episodes.fit_example(example, config.resolution)  # size errors before training
  if key == "video" and len(example["video"]) < config.clip_frames:
    raise ValueError(
      f"The clips have {len(example['video'])} frames, fewer than "
      f"config.clip_frames = {config.clip_frames}; lower clip_frames or "
      "give longer clips."
    )


def check_sources(stills, clips, config) -> None:
  """Raises ValueError unless the sources give what the config trains on."""
  _check_source(stills, "image", "stills", config)
  if uses_clips(config):
    if clips is None:
      raise ValueError(f"config.stage={config.stage!r} needs clips: set config.clip_source.")
    _check_source(clips, "video", "clips", config)


def make_input(stills, clips, config) -> grain.DatasetIterator:
  """This process's batches (B / P, T, H, W, 3) in [-1, 1], as a checkpointable iterator."""
  check_sources(stills, clips, config)
  batches = Batches(
    stills, clips if uses_clips(config) else None, config, jax.process_index(), jax.process_count()
  )
  options = grain.ReadOptions(
    num_threads=config.data_threads, prefetch_buffer_size=config.prefetch_batches
  )
  return iter(grain.MapDataset.source(batches).to_iter_dataset(options))
