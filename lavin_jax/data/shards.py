"""Shard sets of ST-VAE posterior moments on disk: layout, records, atomic writes, reads.

  <dir>/settings.json                    what the set was rendered and encoded with
  <dir>/<source>/source.json             the source: size, keys, examples per shard
  <dir>/<source>/<task>/shard-00003-of-00010.array_record

Shard j of a source holds its examples [j E, (j + 1) E) (E examples per shard) for each
task, one ArrayRecord file per task; record (i - j E) * views + v of a file is view v of
example i. A record is the task's input and target moments stacked, (2, T', h, w, 2C)
bfloat16 (mean | log-variance on the last axis, as the ST-VAE's encoder emits them),
after a 16-byte header: the shape (T', h, w, 2C) as little-endian int32.

A shard file is whole or absent: it is written under a temporary name and renamed
(`lavin_jax.io.files`); temporary files a killed writer left are removed when the shard
is written again. The JSON files are written once and compared on every later use.
"""

import json
import os
import pathlib
from typing import Callable, Sequence

from array_record.python import array_record_module
import grain
import jax.numpy as jnp
import numpy as np

from lavin_jax.io import files

# ArrayRecord writer options: single-record groups for random access.
WRITER_OPTIONS = "group_size:1"
_HEADER = np.dtype("<i4")
_DIMS = 4


# ---------------------------------------------------------------------------
# Records.
# ---------------------------------------------------------------------------


def encode_record(pair: np.ndarray) -> bytes:
  """(2, T', h, w, 2C) moments (input, target) -> one record (bfloat16)."""
  pair = np.asarray(pair)
  if pair.ndim != _DIMS + 1 or pair.shape[0] != 2:
    raise ValueError(f"A record holds (2, T', h, w, 2C) moments, got shape {pair.shape}.")
  header = np.asarray(pair.shape[1:], _HEADER).tobytes()
  return header + np.ascontiguousarray(pair, jnp.bfloat16).tobytes()


def decode_record(record: bytes) -> np.ndarray:
  """One record -> the (2, T', h, w, 2C) bfloat16 moments it holds."""
  size = _HEADER.itemsize * _DIMS
  shape = tuple(int(d) for d in np.frombuffer(record[:size], _HEADER))
  return np.frombuffer(record[size:], jnp.bfloat16).reshape((2,) + shape)


# ---------------------------------------------------------------------------
# Layout.
# ---------------------------------------------------------------------------


def num_shards(size: int, examples_per_shard: int) -> int:
  return -(-size // examples_per_shard)


def shard_paths(directory, source: str, task: str, count: int) -> list[pathlib.Path]:
  """The `count` shard files of one source's task, in order."""
  folder = pathlib.Path(directory) / source / task
  return [folder / f"shard-{j:05d}-of-{count:05d}.array_record" for j in range(count)]


def source_file(directory, source: str) -> pathlib.Path:
  return pathlib.Path(directory) / source / "source.json"


def settings_file(directory) -> pathlib.Path:
  return pathlib.Path(directory) / "settings.json"


def read_json(path: pathlib.Path) -> dict:
  return json.loads(path.read_text())


def check_json(path: pathlib.Path, content: dict) -> None:
  """Raises a ValueError unless `path` holds `content` (as JSON); names differing fields."""
  content = json.loads(json.dumps(content))  # Tuples -> lists, as read back.
  held = read_json(path)
  if held != content:
    fields = sorted(k for k in held.keys() | content.keys() if held.get(k) != content.get(k))
    raise ValueError(
      f"{path} was written for other settings (they differ in {fields}); write into a "
      "new latents directory, or restore the settings it was written with."
    )


def write_once(path: pathlib.Path, content: dict) -> None:
  """Writes `content` as JSON, atomically, unless `path` exists; then `check_json`."""
  if path.exists():
    check_json(path, content)
  else:
    files.atomic_write_text(path, json.dumps(content, indent=1, sort_keys=True))


def missing(paths: Sequence[pathlib.Path]) -> list[pathlib.Path]:
  return [p for p in paths if not p.exists()]


# ---------------------------------------------------------------------------
# Writing and reading.
# ---------------------------------------------------------------------------


def _remove_leftovers(path: pathlib.Path) -> None:
  """Deletes the temporary files a killed writer of `path` left (`files.atomic_write`)."""
  for leftover in path.parent.glob(f".{path.name}.*.partial"):
    leftover.unlink(missing_ok=True)


def write_shards(paths: Sequence[pathlib.Path], write: Callable[[list], None]) -> None:
  """Calls `write(writers)` with one ArrayRecord writer per path, then puts each in place.

  Each file is written under a temporary name and renamed once `write` returns; on
  any exception none of them is renamed and the temporary files are removed.
  """
  for path in paths:
    _remove_leftovers(path)

  def nested(rest, temporary):
    if not rest:
      writers = [
        array_record_module.ArrayRecordWriter(os.fspath(t), WRITER_OPTIONS) for t in temporary
      ]
      try:
        write(writers)
      finally:
        for writer in writers:
          writer.close()
      return
    files.atomic_write(rest[0], lambda tmp: nested(rest[1:], temporary + [tmp]))

  nested(list(paths), [])


def open_records(paths: Sequence[pathlib.Path]) -> grain.sources.ArrayRecordDataSource:
  """Random access to the records of `paths`, in order, read from disk."""
  return grain.sources.ArrayRecordDataSource([os.fspath(p) for p in paths])
