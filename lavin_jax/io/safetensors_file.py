"""Reading .safetensors files as host numpy arrays, with errors that name the file."""

import contextlib
import os
from typing import Iterator

import numpy as np
import safetensors
from safetensors import safe_open


class SafetensorsFileError(ValueError):
  """A .safetensors file that cannot be read (truncated, corrupt, or not safetensors)."""


class _Reader:
  """Shapes and arrays of an open file; every failure names the file."""

  def __init__(self, handle, path: str):
    self._handle, self._path = handle, path

  def keys(self) -> list[str]:
    return list(self._handle.keys())

  def shape(self, key: str) -> tuple[int, ...]:
    return tuple(self._handle.get_slice(key).get_shape())

  def array(self, key: str) -> np.ndarray:
    try:
      return self._handle.get_tensor(key)
    except (safetensors.SafetensorError, OSError, ValueError) as e:
      raise SafetensorsFileError(
        f"{self._path}: tensor {key!r} cannot be read ({e}); the file is damaged or "
        "truncated: download or write it again."
      ) from e


@contextlib.contextmanager
def open_file(path: str | os.PathLike) -> Iterator[_Reader]:
  """Opens a .safetensors file for reading host numpy arrays one tensor at a time."""
  path = os.fspath(path)
  try:
    handle = safe_open(path, framework="numpy")
  except FileNotFoundError:
    raise
  except (safetensors.SafetensorError, OSError, ValueError) as e:
    raise SafetensorsFileError(
      f"{path} is not a readable .safetensors file ({e}); it is truncated, corrupt or of "
      "another format: download or write it again."
    ) from e
  with handle:
    yield _Reader(handle, path)
