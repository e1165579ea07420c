"""Writes PyTorch checkpoints (`torch.save` files, zip or legacy format) without torch.

    torch_files.save({"state_dict": {"w": np.ones((2, 3), np.float32)}}, "stvae.pt")

The bytes follow torch.save: a protocol-2 pickle in which each tensor is
`torch._utils._rebuild_tensor_v2(<storage>, offset, size, stride, False, OrderedDict())`,
each storage a persistent id ('storage', torch.<Type>Storage, key, 'cpu', numel), and
the storages' raw bytes beside the pickle. The pickle is written opcode by opcode:
pickling a reference to one of torch's globals would otherwise need torch itself.
"""

import collections
import dataclasses
import io
import pathlib
import pickle
import struct
import zipfile

import ml_dtypes
import numpy as np

_STORAGE_NAMES = {
  np.dtype(np.float32): "FloatStorage",
  np.dtype(np.float16): "HalfStorage",
  np.dtype(ml_dtypes.bfloat16): "BFloat16Storage",
  np.dtype(np.float64): "DoubleStorage",
  np.dtype(np.int64): "LongStorage",
  np.dtype(np.int32): "IntStorage",
  np.dtype(np.int16): "ShortStorage",
  np.dtype(np.int8): "CharStorage",
  np.dtype(np.uint8): "ByteStorage",
  np.dtype(np.bool_): "BoolStorage",
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_SYS_INFO = {
  "protocol_version": 1001,
  "little_endian": True,
  "type_sizes": {"short": 2, "int": 4, "long": 4},
}


@dataclasses.dataclass(frozen=True)
class Global:
  """A reference to `module.name` (the GLOBAL opcode)."""

  module: str
  name: str


@dataclasses.dataclass(frozen=True)
class Call:
  """`func(*args)` (the REDUCE opcode), as pickle rebuilds objects; e.g. os.system."""

  func: Global
  args: tuple = ()


@dataclasses.dataclass(frozen=True, eq=False)
class Strided:
  """A tensor viewing the 1-D `storage` at element `offset` by `size` and `stride`.

  Written as given, unchecked; tensors sharing a storage array share one storage record.
  """

  storage: np.ndarray
  offset: int
  size: tuple[int, ...]
  stride: tuple[int, ...]


def contiguous(array: np.ndarray) -> Strided:
  """The C-order tensor of `array`, with a storage of its own."""
  strides = np.cumprod((1,) + array.shape[:0:-1])[::-1] if array.ndim else ()
  return Strided(
    np.ascontiguousarray(array).reshape(-1), 0, array.shape, tuple(int(s) for s in strides)
  )


@dataclasses.dataclass(frozen=True)
class _StorageId:
  key: str
  name: str
  numel: int


class _Pickler:
  """Emits protocol-2 opcodes; collects the storages in order of first use."""

  def __init__(self, legacy: bool):
    self._legacy = legacy
    self._out = io.BytesIO()
    self.storages: dict[int, tuple[str, np.ndarray]] = {}  # id(array) -> (key, array)

  def dumps(self, obj) -> bytes:
    self._out = io.BytesIO()
    self._out.write(pickle.PROTO + b"\x02")
    self._save(obj)
    self._out.write(pickle.STOP)
    return self._out.getvalue()

  def _items(self, items, end: bytes):
    """MARK, the items, `end` (TUPLE, APPENDS or SETITEMS); nothing when empty."""
    items = list(items)
    if not items:
      self._out.write(pickle.EMPTY_TUPLE if end == pickle.TUPLE else b"")
      return
    self._out.write(pickle.MARK)
    for item in items:
      self._save(item)
    self._out.write(end)

  def _save(self, obj):  # pylint: disable=too-many-branches
    w = self._out.write
    if obj is None:
      w(pickle.NONE)
    elif isinstance(obj, bool):
      w(pickle.NEWTRUE if obj else pickle.NEWFALSE)
    elif isinstance(obj, int) and -(2**31) <= obj < 2**31:
      w(pickle.BININT + struct.pack("<i", obj))
    elif isinstance(obj, int):
      data = obj.to_bytes((obj.bit_length() >> 3) + 1, "little", signed=True)
      w(pickle.LONG1 + bytes([len(data)]) + data)
    elif isinstance(obj, float):
      w(pickle.BINFLOAT + struct.pack(">d", obj))
    elif isinstance(obj, str):
      data = obj.encode("utf-8")
      w(pickle.BINUNICODE + struct.pack("<I", len(data)) + data)
    elif isinstance(obj, tuple):
      self._items(obj, pickle.TUPLE)
    elif isinstance(obj, list):
      w(pickle.EMPTY_LIST)
      self._items(obj, pickle.APPENDS)
    elif isinstance(obj, dict):
      if isinstance(obj, collections.OrderedDict):
        self._save(Call(Global("collections", "OrderedDict")))
      else:
        w(pickle.EMPTY_DICT)
      self._items((x for kv in obj.items() for x in kv), pickle.SETITEMS)
    elif isinstance(obj, Global):
      w(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("utf-8"))
    elif isinstance(obj, Call):
      self._save(obj.func)
      self._save(tuple(obj.args))
      w(pickle.REDUCE)
    elif isinstance(obj, _StorageId):
      pid = ("storage", Global("torch", obj.name), obj.key, "cpu", obj.numel)
      self._save(pid + (None,) if self._legacy else pid)  # legacy: no storage view
      w(pickle.BINPERSID)
    elif isinstance(obj, np.ndarray):
      self._save(contiguous(obj))
    elif isinstance(obj, Strided):
      key, _ = self.storages.setdefault(id(obj.storage), (str(len(self.storages)), obj.storage))
      storage = _StorageId(key, _STORAGE_NAMES[obj.storage.dtype], obj.storage.size)
      self._save(
        Call(
          Global("torch._utils", "_rebuild_tensor_v2"),
          (
            storage,
            obj.offset,
            tuple(obj.size),
            tuple(obj.stride),
            False,
            collections.OrderedDict(),
          ),
        )
      )
    else:
      raise TypeError(f"torch_files cannot write a {type(obj).__name__}")


def _raw(array: np.ndarray, byteorder: str) -> bytes:
  """The elements' bytes in `byteorder` (bfloat16 as its 16-bit pattern)."""
  words = np.dtype(f"u{array.itemsize}")
  return (
    array.view(words).astype(words.newbyteorder("<" if byteorder == "little" else ">")).tobytes()
  )


def save(obj, path, *, legacy: bool = False, byteorder: str = "little"):
  """Writes `obj` as torch.save(obj, path) would; numpy arrays become tensors.

  Args:
    obj: dicts (OrderedDict kept as such), lists, tuples, str, int, float, bool, None,
      numpy arrays (float32/16/64, ml_dtypes.bfloat16, ints, bool), Strided views,
      Global and Call.
    path: the file to write.
    legacy: the format of torch < 1.6 (pickles and storages in a row) instead of zip.
    byteorder: of the zip format's storages ('little' or 'big'; its byteorder record).

  Returns:
    path.
  """
  pickler = _Pickler(legacy)
  data = pickler.dumps(obj)
  storages = list(pickler.storages.values())
  if legacy:
    with open(path, "wb") as f:
      for header in (_LEGACY_MAGIC, _LEGACY_SYS_INFO["protocol_version"], _LEGACY_SYS_INFO):
        f.write(pickler.dumps(header))
      f.write(data)
      f.write(pickler.dumps([key for key, _ in storages]))
      for _, array in storages:
        f.write(struct.pack("<q", array.size) + _raw(array, "little"))
    return path
  folder = pathlib.Path(path).stem
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
    archive.writestr(f"{folder}/data.pkl", data)
    archive.writestr(f"{folder}/byteorder", byteorder)
    for key, array in storages:
      archive.writestr(f"{folder}/data/{key}", _raw(array, byteorder))
    archive.writestr(f"{folder}/version", "3\n")
  return path
