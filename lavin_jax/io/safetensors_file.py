"""Reading .safetensors files as host numpy arrays, with errors that name the file.

The safetensors library opens and validates the file (header, offsets, size); tensors
are then read with plain file reads at the header's offsets rather than through its
memory map, whose touched pages would stay in the process's resident set until the
file is closed: reading a released 3.4B file tensor by tensor then costs about the
size of the arrays kept, not twice it.
"""

import contextlib
import json
import os
from typing import Iterator

import ml_dtypes
import numpy as np
import safetensors
from safetensors import safe_open

_DTYPES = {
  "BOOL": np.bool_,
  "U8": np.uint8,
  "I8": np.int8,
  "I16": np.int16,
  "I32": np.int32,
  "I64": np.int64,
  "F16": np.float16,
  "BF16": ml_dtypes.bfloat16,
  "F32": np.float32,
  "F64": np.float64,
}


class SafetensorsFileError(ValueError):
  """A .safetensors file that cannot be read (truncated, corrupt, or not safetensors)."""


class _Reader:
  """Shapes and arrays of an open file; every failure names the file."""

  def __init__(self, handle, path: str):
    self._handle, self._path = handle, path
    with open(path, "rb") as f:  # already validated by safe_open
      length = int.from_bytes(f.read(8), "little")
      self._header = json.loads(f.read(length))
    self._data_start = 8 + length

  def keys(self) -> list[str]:
    return list(self._handle.keys())

  def shape(self, key: str) -> tuple[int, ...]:
    return tuple(self._handle.get_slice(key).get_shape())

  def array(self, key: str) -> np.ndarray:
    try:
      entry = self._header[key]
      dtype = np.dtype(_DTYPES[entry["dtype"]])
      begin, end = entry["data_offsets"]
      count = (end - begin) // dtype.itemsize
      array = np.fromfile(self._path, dtype, count, offset=self._data_start + begin)
      if array.size != count:
        raise ValueError(f"{array.size} of {count} values present")
      return array.reshape(entry["shape"])
    except (KeyError, OSError, ValueError) as e:
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
