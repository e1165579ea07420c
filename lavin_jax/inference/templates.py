"""The released command-line workflow: template folders in, [query | prediction] PNGs out.

predict_templates(ModelFiles(bundle='b'), 'templates/depth', 'photos/', 'out/',
                  height=512, width=512, num_prompt=4, seed=0,
                  sampling=lavin_jax.configs.sampling.released())
"""

import math
import pathlib
from typing import Sequence

import ml_collections
import numpy as np
from PIL import Image
import tqdm

from lavin_jax.data import sources
from lavin_jax.inference import loading
from lavin_jax.io import files
from lavin_jax.io import pixels

GRID_PADDING = 4  # pixels of black around and between the cells, as released


def to_pixels(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """uint8 (h, w, 3) -> float32 (height, width, 3) in [-1, 1], bicubic with antialiasing."""
  resized = Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC)
  return pixels.to_float(np.asarray(resized))


def load_image(path, height: int, width: int) -> np.ndarray:
  """An image file as (height, width, 3) pixels in [-1, 1]; clear errors for bad files."""
  return to_pixels(sources.read_image(path), height, width)


def choose_prompts(
  pairs: sources.TemplateFolderSource,
  num_prompt: int,
  height: int,
  width: int,
  rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
  """Draws `num_prompt` pairs with replacement from a template folder, as released.

  Returns context inputs and targets, each (K, 1, height, width, 3).
  """
  if num_prompt < 1:
    raise ValueError(f"--num_prompt must be >= 1; got {num_prompt}.")
  picks = rng.integers(0, len(pairs), size=num_prompt)
  examples = [pairs[int(i)] for i in picks]
  inputs = np.stack([to_pixels(e["input"], height, width) for e in examples])
  targets = np.stack([to_pixels(e["target"], height, width) for e in examples])
  return inputs[:, None], targets[:, None]


def query_files(query) -> list[pathlib.Path]:
  """One image file, or every image of a folder (sorted)."""
  path = pathlib.Path(query)
  if path.is_dir():
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in sources.IMAGE_EXTENSIONS)
    if not files:
      raise ValueError(f"Query folder {path} holds no images ({sources.IMAGE_EXTENSIONS}).")
    return files
  if not path.is_file():
    raise FileNotFoundError(f"No query image or folder at {path}.")
  return [path]


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
  height: int, width: int, multiple: int, num_prompt: int, sampling: ml_collections.ConfigDict
) -> None:
  """Raises ValueError on a size, pair count or sampler setting the model cannot run."""
  if height <= 0 or width <= 0 or height % multiple or width % multiple:
    raise ValueError(
      f"--height and --width must be positive multiples of {multiple} (the "
      f"ST-VAE's downsampling times J-DiT's patch size); got {height}x{width}."
    )
  if num_prompt < 1:
    raise ValueError(f"--num_prompt must be >= 1; got {num_prompt}.")
  if sampling.num_steps < 2:
    raise ValueError(
      f"--timesteps counts time-grid points and must be >= 2; got {sampling.num_steps}."
    )
  if not math.isfinite(sampling.cfg_scale):
    raise ValueError(f"--cfg_scale must be a finite number; got {sampling.cfg_scale}.")


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
) -> list[pathlib.Path]:
  """Predicts every query image with pairs drawn from a template folder; writes PNGs.

  Every input is checked before the model is loaded. `output` is a PNG path for one
  query, a folder (one `<query stem>.png` each) when `query` is a folder. Returns the
  files written.
  """
  check_settings(height, width, model.pixel_multiple(), num_prompt, sampling)
  queries = query_files(query)
  for path in queries:  # an unreadable image fails here, not after the model loads
    sources.read_image(path)
  pairs = sources.TemplateFolderSource(task_dir)  # unmatched names, no pairs: errors
  folder_mode = pathlib.Path(query).is_dir()
  pipe = model.load()
  rng = np.random.default_rng(seed)
  written = []
  for i, path in enumerate(tqdm.tqdm(queries, desc="queries", disable=len(queries) == 1)):
    context_inputs, context_targets = choose_prompts(pairs, num_prompt, height, width, rng)
    clip = load_image(path, height, width)[None]  # (T=1, H, W, 3)
    prediction = pipe(context_inputs, context_targets, clip, seed=seed + i, **sampling.to_dict())[
      0, 0
    ]
    out = pathlib.Path(output) / f"{path.stem}.png" if folder_mode else pathlib.Path(output)
    write_png(out, side_by_side([pixels.to_uint8(clip[0]), pixels.to_uint8(prediction)]))
    written.append(out)
  return written
