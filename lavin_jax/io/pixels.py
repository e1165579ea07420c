"""The one pixel coding: uint8 [0, 255] <-> float32 [-1, 1] (the models' pixel range)."""

import numpy as np


def to_float(image: np.ndarray) -> np.ndarray:
  """uint8 [0, 255] -> float32 [-1, 1], any shape."""
  return np.asarray(image).astype(np.float32) / 127.5 - 1.0


def to_uint8(pixels: np.ndarray) -> np.ndarray:
  """float [-1, 1] -> uint8 [0, 255], clipped and rounded to nearest, any shape."""
  return np.round((np.clip(np.asarray(pixels, np.float32), -1.0, 1.0) + 1.0) * 127.5).astype(
    np.uint8
  )
