"""Any source packed once into ArrayRecord shards, and read back as a source ('packed:DIR').

Training hosts then read records with Grain's ArrayRecord reader instead of parsing
annotation files, decoding label PNGs and opening many small files. Layout of DIR:
  source.json                      {'format', 'count', 'keys', 'class_names',
                                    'thing_classes', 'shards', 'source'}
  shard-00000-of-000NN.array_record ...   example i is record i of the shards in order
Each record is one example as an uncompressed .npz (numpy's format, no pickles), arrays
as the source gave them (pixels stay uint8), strings as 0-d unicode arrays; the
shards are zstd-compressed record by record, so any record is read alone.

  pack(specs.get_source('coco:/data/coco,split=train2017'), 'packed/coco_train', 1024)
  source = specs.get_source('packed:packed/coco_train')
"""

import io
import json
import os
import pathlib
import shutil
import tempfile
from typing import Any

from array_record.python import array_record_module
import grain
import numpy as np
import tqdm

from lavin_jax.io import files

FORMAT = 1
METADATA = "source.json"
_OPTIONS = "group_size:1,zstd:3"  # One record per chunk: random access.


def encode(example: dict[str, Any]) -> bytes:
  """One example as .npz bytes."""
  buffer = io.BytesIO()
  np.savez(buffer, **{key: np.asarray(value) for key, value in example.items()})
  return buffer.getvalue()


def decode(record: bytes) -> dict[str, Any]:
  """The example of `encode`; 0-d unicode arrays come back as str."""
  with np.load(io.BytesIO(record), allow_pickle=False) as arrays:
    return {
      key: str(value) if value.dtype.kind == "U" and not value.ndim else value
      for key, value in arrays.items()
    }


def _list_or_none(values) -> list | None:
  return None if values is None else [v if isinstance(v, str) else int(v) for v in values]


def _shard_name(index: int, count: int) -> str:
  return f"shard-{index:05d}-of-{count:05d}.array_record"


def pack(source, output: str | os.PathLike, examples_per_shard: int, spec: str = "") -> dict:
  """Writes every example of `source` to `output` (replaced whole); returns the metadata.

  Args:
    source: any random-access source (`lavin_jax.data.sources` schema).
    output: the directory to write; an existing one is replaced once the new one is
      complete.
    examples_per_shard: records per ArrayRecord file.
    spec: the source's spec, recorded in source.json.
  """
  if examples_per_shard < 1:
    raise ValueError(f"examples_per_shard must be >= 1, got {examples_per_shard}.")
  count = len(source)
  if not count:
    raise ValueError(f"The source {source!r} has no examples to pack.")
  output = pathlib.Path(output)
  output.parent.mkdir(parents=True, exist_ok=True)
  num_shards = -(-count // examples_per_shard)
  shards = [_shard_name(i, num_shards) for i in range(num_shards)]
  metadata = {
    "format": FORMAT,
    "count": count,
    "keys": list(source.keys),
    "class_names": _list_or_none(source.class_names),
    "thing_classes": _list_or_none(getattr(source, "thing_classes", None)),
    "shards": shards,
    "source": spec,
  }
  staging = tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.", suffix=".partial")
  try:
    progress = tqdm.tqdm(total=count, desc=f"pack {spec or output.name}", unit="example")
    for shard_index, name in enumerate(shards):
      writer = array_record_module.ArrayRecordWriter(os.path.join(staging, name), _OPTIONS)
      try:
        stop = min((shard_index + 1) * examples_per_shard, count)
        for index in range(shard_index * examples_per_shard, stop):
          writer.write(encode(source[index]))
          progress.update()
      finally:
        writer.close()
    progress.close()
    pathlib.Path(staging, METADATA).write_text(json.dumps(metadata, indent=1))
    files.replace_dir(staging, output)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return metadata


class PackedSource:
  """The examples of a directory `pack` wrote, read through Grain's ArrayRecord reader."""

  def __init__(self, folder: str | os.PathLike):
    self.folder = pathlib.Path(folder)
    path = self.folder / METADATA
    if not path.is_file():
      raise FileNotFoundError(
        f"No packed source in {self.folder} (no {METADATA}). Pack one with "
        "`python launch/pack_source.py --source=SPEC --output=DIR`."
      )
    metadata = json.loads(path.read_text())
    if metadata.get("format") != FORMAT:
      raise ValueError(
        f"Packed source {self.folder} has format {metadata.get('format')}, not {FORMAT}; "
        "pack it again with this version."
      )
    missing = [s for s in metadata["shards"] if not (self.folder / s).is_file()]
    if missing:
      raise FileNotFoundError(
        f"Packed source {self.folder} lacks {len(missing)} shard(s), first {missing[0]}; "
        "copy the whole directory or pack it again."
      )
    self._records = grain.sources.ArrayRecordDataSource(
      [os.fspath(self.folder / s) for s in metadata["shards"]]
    )
    if len(self._records) != metadata["count"]:
      raise ValueError(
        f"Packed source {self.folder} holds {len(self._records)} records, not the "
        f"{metadata['count']} of {METADATA}; pack it again."
      )
    self.spec = metadata["source"]
    self.keys = tuple(metadata["keys"])
    names = metadata["class_names"]
    self.class_names = None if names is None else tuple(names)
    if metadata["thing_classes"] is not None:
      self.thing_classes = tuple(metadata["thing_classes"])

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return decode(self._records[index])

  def __repr__(self) -> str:
    return f"PackedSource({self.folder}, {len(self)} examples of {self.spec or 'a source'})"
