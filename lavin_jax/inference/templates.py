"""The released command-line workflow: template folders in, [query | prediction] files out.

predict_templates(ModelFiles(bundle='b'), 'templates/depth', 'photos/', 'out/',
                  height=512, width=512, num_prompt=4, seed=0,
                  sampling=lavin_jax.configs.sampling.released(), batch_size=8)

Image tasks: pairs <name>_input.png / <name>_target.png (the released format), queries
are images, outputs [query | prediction] PNGs. Video tasks: pairs <name>_input.<clip> /
<name>_target.<clip>, a clip being a GIF, a video file or a folder of frames
(`lavin_jax.inference.media`); queries are clips; outputs are [query | prediction] GIFs
or MP4s, frame by frame. The template folder's contents decide which.

Queries go `batch_size` at a time through one template. Each template pair is encoded
once, when a query first uses it (`EncodedTemplates`); each query's posterior sample of
its pairs is drawn from those moments with its own seed, as re-encoding them would draw
it. Query i of the sorted queries gets seed + i for that sample and its noise, and its
pairs are drawn as released (`random`: with replacement, query after query, by numpy
seeded with `seed`), chosen by similarity (`nearest`), or are the same for every query
(`fixed`, `lavin_jax.inference.selection`): the output does not depend on the batch
size. `fixed` with an independent-condition J-DiT computes the pairs' keys and values
once for the whole folder (`Pipeline.context_cache`, their posterior sample drawn with
`seed`); every batch then computes only its queries'.
"""

import functools
import math
import pathlib
from typing import Callable, Sequence

import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
import tqdm

from lavin_jax.configs import sampling as sampling_configs
from lavin_jax.configs import tasks as task_configs
from lavin_jax.data import sources
from lavin_jax.inference import loading
from lavin_jax.inference import media
from lavin_jax.inference import pipeline as pipeline_lib
from lavin_jax.inference import selection
from lavin_jax.io import files
from lavin_jax.io import pixels
from lavin_jax.models import jdit as jdit_lib

GRID_PADDING = 4  # pixels of black around and between the cells, as released
PAIR_SUFFIXES = ("_input", "_target")
_SIDES = ("input", "target")


def to_pixels(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """uint8 (h, w, 3) -> float32 (height, width, 3) in [-1, 1], bicubic with antialiasing."""
  resized = Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC)
  return pixels.to_float(np.asarray(resized))


def clip_pixels(frames: np.ndarray, height: int, width: int) -> np.ndarray:
  """uint8 (h, w, 3) image or (T, h, w, 3) clip -> float32 (T, height, width, 3)."""
  frames = frames[None] if frames.ndim == 3 else frames
  return np.stack([to_pixels(f, height, width) for f in frames])


class ClipTemplateFolder:
  """Video pairs: <name>_input.<ext> and <name>_target.<ext> clips (any `media` clip).

  Examples are {'input', 'target', 'name'}: uint8 (num_frames, H, W, 3), sorted by name.
  """

  def __init__(self, folder: pathlib.Path, num_frames: int):
    self.folder, self.num_frames = folder, num_frames
    found = [{}, {}]
    for entry in folder.iterdir():
      name = _pair_name(entry)
      if name is not None:
        found[name[1]][name[0]] = entry
    self.names, self.pairs = sources.match_pairs(folder, *found, " clip")
    for pair in self.pairs:
      for path in pair:
        media.check_clip(path, num_frames)

  def __len__(self) -> int:
    return len(self.pairs)

  def __getitem__(self, index: int) -> dict:
    clips = [media.read_clip(p, self.num_frames) for p in self.pairs[index]]
    return {"input": clips[0], "target": clips[1], "name": self.names[index]}


def _pair_name(entry: pathlib.Path):
  """(name, 0 for an input / 1 for a target) of a clip entry of a template folder, or None."""
  if not media.is_clip(entry):
    return None
  stem = entry.name if entry.is_dir() else entry.stem
  for side, suffix in enumerate(PAIR_SUFFIXES):
    if stem.endswith(suffix):
      return stem[: -len(suffix)], side
  return None


def open_templates(task_dir, num_frames: int):
  """The template folder's pairs: ClipTemplateFolder if it holds clips, else images."""
  folder = pathlib.Path(task_dir)
  if not folder.is_dir():
    raise FileNotFoundError(f"Template folder {folder} does not exist.")
  if any(_pair_name(entry) is not None for entry in folder.iterdir()):
    if any(folder.glob("*_input.png")):
      raise ValueError(
        f"Template folder {folder} mixes image pairs (*_input.png) and clip pairs; keep one kind."
      )
    return ClipTemplateFolder(folder, num_frames)
  return sources.TemplateFolderSource(folder)  # unmatched names, no pairs: errors


def query_items(query, video: bool) -> tuple[list[pathlib.Path], bool]:
  """(query paths, folder mode): one image or clip, or every one of a folder (sorted).

  For video tasks a folder holding clips (GIFs, videos, frame folders) is a folder of
  queries; a folder holding only images is one clip of frames.
  """
  path = pathlib.Path(query)
  if not path.exists():
    raise FileNotFoundError(f"No query {'clip' if video else 'image'} or folder at {path}.")
  if not path.is_dir():
    return [path], False
  if video:
    clips = sorted(p for p in path.iterdir() if media.is_clip(p))
    if clips:
      return clips, True
    if media.frame_files(path):
      return [path], False
    raise ValueError(f"Query folder {path} holds no clips and no frames.")
  images = sorted(p for p in path.iterdir() if p.suffix.lower() in sources.IMAGE_EXTENSIONS)
  if not images:
    raise ValueError(f"Query folder {path} holds no images ({sources.IMAGE_EXTENSIONS}).")
  return images, True


def side_by_side(images: Sequence[np.ndarray]) -> np.ndarray:
  """uint8 (H, W, 3) images in one row, 4 px of black around and between them."""
  p = GRID_PADDING
  row = np.concatenate([np.pad(im, ((0, p), (0, p), (0, 0))) for im in images], axis=1)
  return np.pad(row, ((p, 0), (p, 0), (0, 0)))


def write_png(path, image: np.ndarray) -> None:
  """Writes a PNG atomically, so no half-written file is ever left at `path`."""
  files.atomic_write(
    path, lambda tmp: Image.fromarray(image).save(tmp, format="PNG", compress_level=9)
  )


def check_settings(
  height: int,
  width: int,
  multiple: int,
  num_prompt: int,
  sampling: ml_collections.ConfigDict,
  batch_size: int = 1,
  select_context: str = "random",
  num_frames: int = 1,
  fps: int = sampling_configs.VIDEO_FPS,
  independent_condition: bool = False,
) -> None:
  """Raises ValueError on a size, count or sampler setting that cannot run
  (`independent_condition`: the J-DiT's)."""
  if height <= 0 or width <= 0 or height % multiple or width % multiple:
    raise ValueError(
      f"--height and --width must be positive multiples of {multiple} (the "
      f"ST-VAE's downsampling times J-DiT's patch size); got {height}x{width}."
    )
  if num_frames < 1 or (num_frames - 1) % 4:
    raise ValueError(f"--num_frames must be 1 + 4k (1, 5, 9, ...); got {num_frames}.")
  for flag, value in (("num_prompt", num_prompt), ("batch_size", batch_size), ("fps", fps)):
    if value < 1:
      raise ValueError(f"--{flag} must be >= 1; got {value}.")
  if select_context not in selection.SELECTIONS:
    raise ValueError(
      f"--select_context={select_context!r} is unknown; choose one of {selection.SELECTIONS}."
    )
  if sampling.num_steps < 2:
    raise ValueError(
      f"--timesteps counts time-grid points and must be >= 2; got {sampling.num_steps}."
    )
  if not math.isfinite(sampling.cfg_scale):
    raise ValueError(f"--cfg_scale must be a finite number; got {sampling.cfg_scale}.")
  pipeline_lib.check_sampling(
    **sampling.to_dict(), flag_prefix="--", independent_condition=independent_condition
  )


class EncodedTemplates:
  """A template's pairs as posterior moments, each pair encoded once, on first use.

  Pairs are encoded `chunk` at a time (a short chunk padded), so encoding compiles once.
  """

  def __init__(self, pipe, pairs, to_clip: Callable[[np.ndarray], np.ndarray], chunk: int):
    self._pipe, self._pairs, self._to_clip, self._chunk = pipe, pairs, to_clip, chunk
    self._moments = {}  # pair index -> (input Moments, target Moments), one clip each

  def _encode(self, indices) -> None:
    missing = [i for i in dict.fromkeys(int(i) for i in indices) if i not in self._moments]
    for start in range(0, len(missing), self._chunk):
      part = missing[start : start + self._chunk]
      examples = [self._pairs[i] for i in part]
      sides = [_pad_to([self._to_clip(e[k]) for e in examples], self._chunk) for k in _SIDES]
      moments = self._pipe.encode(np.concatenate(sides))
      for j, i in enumerate(part):
        self._moments[i] = tuple(
          pipeline_lib.Moments(*(m[row] for m in moments)) for row in (j, self._chunk + j)
        )

  def pairs(self, picks: np.ndarray):
    """(input Moments, target Moments), (B, K, T', h, w, 16) each, of the picked pairs."""
    self._encode(picks.ravel())
    return tuple(
      pipeline_lib.Moments(
        *(
          jnp.stack([jnp.stack([self._moments[int(i)][side][m] for i in row]) for row in picks])
          for m in range(2)
        )
      )
      for side in range(2)
    )

  def input_means(self) -> np.ndarray:
    """Posterior means of every pair's input, (N, T', h, w, 16)."""
    self._encode(range(len(self._pairs)))
    return np.stack([np.asarray(self._moments[i][0].mean) for i in range(len(self._pairs))])


def _pad_to(rows: list, size: int) -> np.ndarray:
  """The rows stacked and padded to `size` with copies of the last one."""
  return np.stack(rows + [rows[-1]] * (size - len(rows)))


def _context_chooser(select_context, encoded, num_pairs, num_prompt, seed, num_queries):
  """choose(query indices, their posterior means) -> (B, num_prompt) pair indices."""
  if select_context in ("random", "fixed"):
    draw = selection.random_picks if select_context == "random" else selection.fixed_picks
    picks = draw(np.random.default_rng(seed), num_pairs, num_prompt, num_queries)
    return lambda batch, means: picks[batch]
  pool = selection.features(encoded.input_means())
  return lambda batch, means: selection.nearest(selection.features(means), pool, num_prompt)


def predict_templates(
  model: loading.ModelFiles,
  task_dir,
  query,
  output,
  *,
  height: int,
  width: int,
  num_prompt: int,
  seed: int,
  sampling: ml_collections.ConfigDict,
  batch_size: int = 1,
  select_context: str = "random",
  num_frames: int = task_configs.options().num_frames,
  video_format: str = sampling_configs.VIDEO_FORMATS[0],
  fps: int = sampling_configs.VIDEO_FPS,
) -> list[pathlib.Path]:
  """Predicts every query with pairs of a template folder; writes the outputs.

  Every input is checked before the model is loaded. `output` is the file of one query
  (PNG for an image; .gif or .mp4 for a clip), or a folder (one `<query stem>.png`, or
  `.<video_format>` for clips) when `query` is a folder of queries. `num_frames` (video
  tasks) is taken from the start of every clip. Returns the files written.
  """
  templates = open_templates(task_dir, num_frames)
  video = isinstance(templates, ClipTemplateFolder)
  frames = num_frames if video else 1
  check_settings(
    height,
    width,
    model.pixel_multiple(),
    num_prompt,
    sampling,
    batch_size,
    select_context,
    frames,
    fps,
    jdit_lib.independent_condition(model.configs().jdit),
  )
  queries, folder_mode = query_items(query, video)
  suffix = f".{video_format}" if video else ".png"
  outputs = [pathlib.Path(output) / f"{p.stem}{suffix}" for p in queries]
  if not folder_mode:
    outputs = [pathlib.Path(output)]
  if video and outputs[0].suffix.lower() not in [f".{f}" for f in sampling_configs.VIDEO_FORMATS]:
    raise ValueError(
      f"--output {outputs[0]} must end in one of "
      f"{[f'.{f}' for f in sampling_configs.VIDEO_FORMATS]} (the clip's format)."
    )
  if select_context == "nearest" and num_prompt > len(templates):
    raise ValueError(
      f"--select_context=nearest picks {num_prompt} distinct pairs, but {task_dir} has "
      f"{len(templates)}; lower --num_prompt or add pairs."
    )
  read = functools.partial(media.read_clip, num_frames=num_frames) if video else sources.read_image
  for path in queries:  # an unreadable query fails here, not after the model loads
    if video:
      media.check_clip(path, num_frames)
    else:
      sources.read_image(path)

  pipe = model.load()
  to_clip = functools.partial(clip_pixels, height=height, width=width)
  encoded = EncodedTemplates(pipe, templates, to_clip, chunk=num_prompt)
  choose = _context_chooser(select_context, encoded, len(templates), num_prompt, seed, len(queries))
  shared = None
  if select_context == "fixed" and pipe.independent_condition:
    pairs = encoded.pairs(choose([0], None))  # (1, K, T', h, w, 16) Moments
    pairs = [pipeline_lib.Moments(*(m[0] for m in side)) for side in pairs]
    shared = pipe.context_cache(*pairs, seed=seed, posterior=sampling.posterior)
  progress = tqdm.tqdm(total=len(queries), desc="queries", unit="query", disable=len(queries) == 1)
  for start in range(0, len(queries), batch_size):
    batch = list(range(start, min(start + batch_size, len(queries))))
    clips = _pad_to([to_clip(read(queries[i])) for i in batch], batch_size)
    query_moments = pipe.encode(clips)
    seeds = _pad_to([seed + i for i in batch], batch_size)
    if shared is None:
      batch_picks = choose(batch, query_moments.mean[: len(batch)])
      context = encoded.pairs(_pad_to(list(batch_picks), batch_size))
      latents = pipe.sample(*context, query_moments, seed=seeds, **sampling.to_dict())
    else:
      latents = pipe.sample_on_context(shared, query_moments, seed=seeds, **sampling.to_dict())
    predictions = np.asarray(pipe.decode(latents))
    for row, i in enumerate(batch):
      cells = [pixels.to_uint8(c) for c in (clips[row], predictions[row])]
      frames_out = np.stack([side_by_side(pair) for pair in zip(*cells)])
      if video:
        media.write_clip(outputs[i], frames_out, fps)
      else:
        write_png(outputs[i], frames_out[0])
    progress.update(len(batch))
  progress.close()
  return outputs
