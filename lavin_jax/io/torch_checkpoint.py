"""Reading PyTorch state dicts (`torch.save` files) into numpy, without torch.

    state = load_state_dict("stvae.pt")  # {'encoder.conv_in.conv.weight': array, ...}

Both formats of `torch.save` are read:
- zip (torch >= 1.6): an archive whose one top folder holds `data.pkl` (the pickled
  object), `data/<key>` (the raw bytes of each storage) and `byteorder`;
- legacy (older torch; the LPIPS, torchvision VGG16 and pytorch-fid weight files): five
  pickles in a row (magic number, protocol version, system info, the object, its
  storage keys), then each storage as an int64 element count and its little-endian bytes.

The pickle is read by an unpickler that knows only the globals a state dict needs
(OrderedDict, torch's tensor-rebuild functions and storage types, mapped to local
stand-ins): any other global, e.g. `posix.system`, is refused before anything can call
it, so loading a file runs no code from it. A tensor is copied out of its storage by
offset, shape and strides only after checking that it lies inside the bytes read.

Arrays keep their stored dtype, except bfloat16, which numpy lacks: it is widened
exactly to float32.
"""

import collections
import io
import os
import pickle
from typing import NamedTuple
import zipfile

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_LEGACY_HEAD = pickle.dumps(_LEGACY_MAGIC, protocol=2)  # how every legacy file starts
_TAR_MAGIC_AT = 257  # offset of b'ustar' in a tar header (torch < 0.4's tar format)


class TorchCheckpointError(ValueError):
  """A file that is not a readable PyTorch state dict; the message names the file."""


class _MalformedError(Exception):
  """A broken record inside a checkpoint; `_load` adds the file name."""


# The stand-ins the pickle can reach are named tuples: immutable, so a pickle's BUILD
# opcode cannot change them.
class _StorageType(NamedTuple):
  """Stand-in for torch.<Name>Storage: the element type of a storage."""

  name: str
  dtype: np.dtype  # as stored; bfloat16 as its 16-bit pattern


class _Storage(NamedTuple):
  """A storage named by a persistent id; its bytes are read after unpickling."""

  key: str
  type: _StorageType
  numel: int


class _Tensor(NamedTuple):
  """A tensor named by the pickle: a strided view of a storage, checked when copied."""

  storage: _Storage
  offset: int
  size: tuple[int, ...]
  stride: tuple[int, ...]


_STORAGE_TYPES = {
  name: _StorageType(name, np.dtype(code))
  for name, code in (
    ("FloatStorage", "f4"),
    ("HalfStorage", "f2"),
    ("BFloat16Storage", "u2"),
    ("DoubleStorage", "f8"),
    ("LongStorage", "i8"),
    ("IntStorage", "i4"),
    ("ShortStorage", "i2"),
    ("CharStorage", "i1"),
    ("ByteStorage", "u1"),
    ("BoolStorage", "?"),
  )
}


def _rebuild_tensor(storage, storage_offset, size, stride):
  """Stand-in for torch._utils._rebuild_tensor."""
  return _Tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(
  storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None
):
  """Stand-in for torch._utils._rebuild_tensor_v2; gradients and hooks are dropped."""
  del requires_grad, backward_hooks, metadata
  return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad, backward_hooks):
  """Stand-in for torch._utils._rebuild_parameter: a parameter is its tensor."""
  del requires_grad, backward_hooks
  return data


_GLOBALS = {
  ("collections", "OrderedDict"): collections.OrderedDict,
  ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
  ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
  ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
  **{("torch", name): t for name, t in _STORAGE_TYPES.items()},
}


def _is_index(x) -> bool:
  return isinstance(x, int) and not isinstance(x, bool) and x >= 0


class _Unpickler(pickle.Unpickler):
  """Unpickles with `_GLOBALS` only; records the storages the persistent ids name."""

  def __init__(self, file, path: str, storage_id_length: int = 5):
    super().__init__(file, encoding="utf-8")  # as torch.load decodes py2 strings
    self._path = path
    self._storage_id_length = storage_id_length  # legacy ids add view metadata
    self.storages: dict[str, _Storage] = {}

  def find_class(self, module, name):
    try:
      return _GLOBALS[(module, name)]
    except KeyError:
      raise TorchCheckpointError(
        f"{self._path} refers to the global {module}.{name}, which a state dict never "
        "needs (loading it could run code): refused; use weights from a trusted source "
        "saved as a plain state dict"
      ) from None

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) == self._storage_id_length and pid[0] == "storage"):
      raise _MalformedError(f"unknown persistent id {pid!r:.80}")
    _, storage_type, key, _, numel, *view = pid  # the device location is ignored
    if any(v is not None for v in view):
      raise _MalformedError(f"storage {key!r:.40} is a storage view (torch < 0.4): unsupported")
    if not (isinstance(storage_type, _StorageType) and isinstance(key, str) and _is_index(numel)):
      raise _MalformedError(f"bad storage record {pid!r:.80}")
    storage = self.storages.setdefault(key, _Storage(key, storage_type, numel))
    if storage != (key, storage_type, numel):
      raise _MalformedError(f"storage {key} is named twice with different types or sizes")
    return storage


def _nbytes(storage: _Storage) -> int:
  return storage.numel * storage.type.dtype.itemsize


def _size_error(storage: _Storage, where: str, nbytes: int) -> _MalformedError:
  return _MalformedError(
    f"{where} holds {nbytes} bytes, storage {storage.key} needs "
    f"{storage.numel} x {storage.type.dtype.itemsize} = {_nbytes(storage)}"
  )


def _decode(data: bytes, storage: _Storage, byteorder: str) -> np.ndarray:
  """The storage's elements as a native-order 1-D array (bfloat16 widened to float32)."""
  if len(data) != _nbytes(storage):
    raise _size_error(storage, "the data read", len(data))
  stored = storage.type.dtype.newbyteorder("<" if byteorder == "little" else ">")
  flat = np.frombuffer(data, stored).astype(storage.type.dtype, copy=False)
  if storage.type.name == "BFloat16Storage":  # bf16 is the top half of a float32
    return (flat.astype(np.uint32) << 16).view(np.float32)
  return flat


def _copy_tensor(tensor: _Tensor, storages: dict[str, np.ndarray], where: str):
  """The tensor as a new array, after checking that it lies inside its storage."""
  offset, size, stride = tensor.offset, tensor.size, tensor.stride
  if not (
    isinstance(tensor.storage, _Storage)
    and type(size) is tuple
    and type(stride) is tuple
    and len(size) == len(stride)
    and all(map(_is_index, (offset, *size, *stride)))
  ):
    raise _MalformedError(
      f"tensor {where} has storage {type(tensor.storage).__name__}, offset "
      f"{offset!r:.40}, size {size!r:.80}, stride {stride!r:.80}; want "
      "non-negative ints, one stride per dimension"
    )
  flat = storages[tensor.storage.key]
  extent = 0 if 0 in size else 1 + sum((n - 1) * s for n, s in zip(size, stride))
  if offset + extent > flat.size:
    raise _MalformedError(
      f"tensor {where} (offset {offset}, size {size}, stride {stride}) "
      f"reaches past the end of its storage ({flat.size} elements)"
    )
  view = np.lib.stride_tricks.as_strided(
    flat[offset:], size, [s * flat.itemsize for s in stride], writeable=False
  )
  return np.array(view, copy=True)


def _materialize(obj, storages: dict[str, np.ndarray], where: str = ""):
  """`obj` with every tensor copied into a numpy array, dicts as plain dicts."""
  if isinstance(obj, _Tensor):
    return _copy_tensor(obj, storages, where or "/")
  if isinstance(obj, dict):
    return {k: _materialize(v, storages, f"{where}/{k}") for k, v in obj.items()}
  if type(obj) in (list, tuple):
    return type(obj)(_materialize(v, storages, f"{where}/{i}") for i, v in enumerate(obj))
  return obj


def _load_zip(path: str):
  with zipfile.ZipFile(path) as archive:
    names = set(archive.namelist())
    pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
    if len(pickles) != 1:
      raise TorchCheckpointError(
        f"{path} is a zip archive with {len(pickles)} <folder>/data.pkl records, not a "
        "torch.save file (which has one): check that this is the right file"
      )
    folder = pickles[0][: -len("data.pkl")]
    byteorder = "little"
    if f"{folder}byteorder" in names:
      byteorder = archive.read(f"{folder}byteorder").decode("ascii", "replace")
      if byteorder not in ("little", "big"):
        raise _MalformedError(f"unknown byteorder record {byteorder!r:.20}")
    unpickler = _Unpickler(io.BytesIO(archive.read(pickles[0])), path)
    obj = unpickler.load()
    storages = {}
    for key, storage in unpickler.storages.items():
      record = f"{folder}data/{key}"
      if record not in names:
        raise _MalformedError(f"record {record} is missing")
      if (nbytes := archive.getinfo(record).file_size) != _nbytes(storage):
        raise _size_error(storage, f"record {record}", nbytes)  # before reading it
      storages[key] = _decode(archive.read(record), storage, byteorder)
  return _materialize(obj, storages)


def _load_legacy(path: str):
  with open(path, "rb") as f:
    f.seek(len(_LEGACY_HEAD))
    if (version := _Unpickler(f, path).load()) != _LEGACY_PROTOCOL:
      raise _MalformedError(f"legacy protocol version {version!r:.20}, want {_LEGACY_PROTOCOL}")
    _Unpickler(f, path).load()  # system info; the data are little-endian regardless
    unpickler = _Unpickler(f, path, storage_id_length=6)
    obj = unpickler.load()
    keys = _Unpickler(f, path).load()
    if not (isinstance(keys, list) and sorted(keys) == sorted(unpickler.storages)):
      raise _MalformedError("the list of storage keys does not match the storages used")
    storages = {}
    for key in keys:
      storage = unpickler.storages[key]
      if len(header := f.read(8)) < 8:
        raise _MalformedError(f"the file ends before storage {key}")
      if (numel := int.from_bytes(header, "little", signed=True)) != storage.numel:
        raise _MalformedError(
          f"storage {key} has {numel} elements, the pickle says {storage.numel}"
        )
      if (left := os.fstat(f.fileno()).st_size - f.tell()) < _nbytes(storage):
        raise _size_error(storage, "the rest of the file", left)  # before reading it
      storages[key] = _decode(f.read(_nbytes(storage)), storage, "little")
  return _materialize(obj, storages)


def _load(path: str):
  """The object in a torch.save file, tensors as numpy arrays."""
  with open(path, "rb") as f:
    head = f.read(_TAR_MAGIC_AT + 5)
  try:
    if head.startswith(_LEGACY_HEAD):  # first: raw tensor bytes may look like a zip end
      return _load_legacy(path)
    if zipfile.is_zipfile(path):
      return _load_zip(path)
  except TorchCheckpointError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # a damaged pickle raises anything
    detail = " ".join(str(e).split()) or type(e).__name__
    raise TorchCheckpointError(
      f"{path} is a damaged PyTorch checkpoint ({detail}): re-download it"
    ) from e
  if head[_TAR_MAGIC_AT:] == b"ustar":
    raise TorchCheckpointError(
      f"{path} is in the tar format of torch < 0.4, which is not supported: load it with "
      "that torch and torch.save it again with torch >= 1.6"
    )
  if head.startswith(b"PK"):
    raise TorchCheckpointError(
      f"{path} is a damaged zip archive (truncated?), not a readable PyTorch checkpoint: "
      "re-download it"
    )
  raise TorchCheckpointError(
    f"{path} is not a PyTorch checkpoint (neither torch.save's zip nor its legacy "
    "format): check that this is the right file, or re-download it"
  )


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """The state dict in a torch.save file (.pt/.pth) as {name: numpy array}.

  A file holding a dict with a 'state_dict' dict inside (a training checkpoint) gives
  that inner dict; its other entries are ignored. Raises TorchCheckpointError for a
  file that is damaged, not a torch.save file, not a state dict, or names any global
  beyond those of tensors.
  """
  path = os.fspath(path)
  state = _load(path)
  if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
    state = state["state_dict"]
  if not isinstance(state, dict):
    raise TorchCheckpointError(
      f"{path} holds a {type(state).__name__}, not a state dict: save model.state_dict()"
    )
  others = [k for k, v in state.items() if not (isinstance(k, str) and isinstance(v, np.ndarray))]
  if others:
    raise TorchCheckpointError(
      f"{path} is not a state dict: the entries {others[:5]!r:.200} are not named "
      "tensors; save model.state_dict()"
    )
  return state
