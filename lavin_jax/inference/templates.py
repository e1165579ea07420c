"""The released command-line workflow: template folders in, [query | prediction] PNGs out."""

import os
import pathlib
from typing import Sequence

import numpy as np
from PIL import Image

from lavin_jax.data import sources

GRID_PADDING = 4  # pixels of black around and between the cells, as released


def check_size(height: int, width: int) -> None:
  if height % 16 or width % 16 or height <= 0 or width <= 0:
    raise ValueError(f"--height and --width must be positive multiples of 16 (ST-VAE 8x and "
                     f"2x2 patches); got {height}x{width}.")


def to_pixels(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """uint8 (h, w, 3) -> float32 (height, width, 3) in [-1, 1], bicubic with antialiasing."""
  resized = Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC)
  return np.asarray(resized, np.float32) / 127.5 - 1.0


def to_uint8(pixels: np.ndarray) -> np.ndarray:
  return np.round((np.clip(pixels, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def load_image(path, height: int, width: int) -> np.ndarray:
  """An image file as (height, width, 3) pixels in [-1, 1]; clear errors for bad files."""
  return to_pixels(sources.read_image(path), height, width)


def choose_prompts(pairs: sources.TemplateFolderSource, num_prompt: int, height: int,
                   width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
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
  """Writes through a temporary file and renames it, so no half-written PNG is left."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.partial")
  Image.fromarray(image).save(tmp, format="PNG", compress_level=9)
  os.replace(tmp, path)
