"""Reading torch.save files without torch: every dtype and layout, and every bad file.

Files come from tests/torch_files.py, and the torch-written fixtures check that writer
and reader agree with the real format (their numbers are checked by test_stvae.py and
test_lpips.py).
"""

import os
import pathlib
import pickle
import pickletools
import re
import subprocess
import sys
import tarfile
import zipfile

import hypothesis
from hypothesis import strategies as st
import ml_dtypes
import numpy as np
import pytest
import torch_files

from lavin_jax.io import torch_checkpoint
from lavin_jax.io.torch_checkpoint import TorchCheckpointError

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
DTYPES = [
  np.float32,
  np.float16,
  ml_dtypes.bfloat16,
  np.float64,
  np.int64,
  np.int32,
  np.int16,
  np.int8,
  np.uint8,
  np.bool_,
]
FORMATS = {"zip": {}, "zip_big_endian": {"byteorder": "big"}, "legacy": {"legacy": True}}


def _values(dtype, shape, seed=0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  if dtype == np.bool_:
    return rng.integers(0, 2, shape).astype(bool)
  if np.issubdtype(dtype, np.integer):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
  return rng.normal(0, 100, shape).astype(dtype)


def _load_error(path) -> str:
  """The TorchCheckpointError message of loading `path` (one line naming the file)."""
  with pytest.raises(TorchCheckpointError) as err:
    torch_checkpoint.load_state_dict(path)
  message = str(err.value)
  assert str(path) in message and "\n" not in message
  return message


def _rewrite_zip(path, changes: dict):
  """Replaces records of the zip at `path` by {name: bytes}; None drops a record."""
  with zipfile.ZipFile(path) as archive:
    records = {name: archive.read(name) for name in archive.namelist()}
  records.update(changes)
  with zipfile.ZipFile(path, "w") as archive:
    for name, data in records.items():
      if data is not None:
        archive.writestr(name, data)
  return path


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_every_dtype_round_trips(tmp_path, dtype, fmt):
  state = {
    "matrix": _values(dtype, (3, 5)),
    "scalar": _values(dtype, (), seed=1),
    "empty": _values(dtype, (0, 4)),
    "cube": _values(dtype, (2, 1, 3), seed=2),
  }
  path = torch_files.save(state, tmp_path / "x.pt", **FORMATS[fmt])
  got = torch_checkpoint.load_state_dict(path)
  assert list(got) == list(state)
  widened = np.float32 if dtype == ml_dtypes.bfloat16 else dtype  # numpy has no bf16
  for name, want in state.items():
    assert got[name].dtype == widened and got[name].shape == want.shape
    np.testing.assert_array_equal(got[name], want.astype(widened))


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_bfloat16_is_widened_exactly(tmp_path, fmt):
  values = np.array([1 / 3, -2.5e38, 1e-40, np.inf, np.nan, -0.0], ml_dtypes.bfloat16)
  path = torch_files.save({"v": values}, tmp_path / "bf16.pt", **FORMATS[fmt])
  got = torch_checkpoint.load_state_dict(path)["v"]
  np.testing.assert_array_equal(got, values.astype(np.float32))  # NaN == NaN here
  assert got[0] != np.float32(1 / 3) and got[2] != 0 and np.signbit(got[-1])


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_views_of_a_shared_storage(tmp_path, fmt):
  base = np.arange(30, dtype=np.float32)
  state = {
    "transposed": torch_files.Strided(base, 3, (4, 5), (1, 4)),  # a .T with an offset
    "broadcast": torch_files.Strided(base, 28, (3, 2), (0, 1)),  # an .expand()
    "tail": torch_files.Strided(base, 29, (1,), (1,)),
    "nothing": torch_files.Strided(base, 30, (0, 7), (7, 1)),
  }
  got = torch_checkpoint.load_state_dict(
    torch_files.save(state, tmp_path / "views.pt", **FORMATS[fmt])
  )
  np.testing.assert_array_equal(got["transposed"], base[3:23].reshape(5, 4).T)
  np.testing.assert_array_equal(got["broadcast"], np.broadcast_to(base[28:30], (3, 2)))
  np.testing.assert_array_equal(got["tail"], [29.0])
  assert got["nothing"].shape == (0, 7)
  for array in got.values():  # copies, not views of the file's bytes
    assert array.flags.owndata and array.flags.writeable


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
  return tmp_path_factory.mktemp("hypothesis") / "view.pt"


@hypothesis.settings(derandomize=True, max_examples=60, deadline=None)
@hypothesis.given(
  shape=st.lists(st.integers(0, 4), max_size=4),
  data=st.data(),
  dtype=st.sampled_from(DTYPES),
  offset=st.integers(0, 5),
  legacy=st.booleans(),
)
def test_permuted_blocks_inside_a_storage(scratch, shape, data, dtype, offset, legacy):
  """A C-order block at `offset` in a larger storage, its axes permuted, vs numpy."""
  perm = data.draw(st.permutations(range(len(shape))))
  n = int(np.prod(shape))
  base = _values(dtype, (offset + n + 3,))
  block = base[offset : offset + n].reshape(shape)
  want = block.transpose(perm)
  strides = tuple(s // base.itemsize for s in block.strides)
  tensor = torch_files.Strided(base, offset, want.shape, tuple(strides[p] for p in perm))
  got = torch_checkpoint.load_state_dict(torch_files.save({"t": tensor}, scratch, legacy=legacy))[
    "t"
  ]
  np.testing.assert_array_equal(got, want.astype(got.dtype))
  assert got.shape == want.shape


def test_training_checkpoint_gives_its_state_dict(tmp_path):
  state = {"b": np.ones(2, np.float32), "a": np.zeros((1, 2), np.float16)}
  checkpoint = {
    "epoch": 3,
    "lr": 1e-4,
    "name": "stvae",
    "flags": (True, None),
    "optimizer": {"state": {0: {"step": np.array(7)}}, "groups": [[0, 1]]},
    "state_dict": state,
  }
  got = torch_checkpoint.load_state_dict(torch_files.save(checkpoint, tmp_path / "c.pt"))
  assert list(got) == ["b", "a"]
  np.testing.assert_array_equal(got["a"], state["a"])


def test_reads_the_torch_written_fixtures():
  # stvae/vae_state.pt: zip format by torch 2; its first storage is the first tensor.
  path = FIXTURES / "stvae" / "vae_state.pt"
  state = torch_checkpoint.load_state_dict(path)
  assert len(state) == 236 and all(v.dtype == np.float32 for v in state.values())
  weight = state["encoder.conv_in.conv.weight"]
  with zipfile.ZipFile(path) as archive:
    raw = np.frombuffer(archive.read("vae_state/data/0"), "<f4")
  np.testing.assert_array_equal(weight, raw.reshape(32, 3, 3, 3, 3))
  # metrics/lpips_vgg_lin_v0.1.pth: the legacy format (the lpips package's own file).
  lin = torch_checkpoint.load_state_dict(FIXTURES / "metrics" / "lpips_vgg_lin_v0.1.pth")
  assert {k: v.shape for k, v in lin.items()} == {
    f"lin{i}.model.1.weight": (1, c, 1, 1) for i, c in enumerate((64, 128, 256, 512, 512))
  }
  assert all(v.min() >= 0 and v.max() > 0 for v in lin.values())  # LPIPS heads are >= 0


def test_reading_needs_no_torch(monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
  assert len(torch_checkpoint.load_state_dict(FIXTURES / "stvae" / "vae_state.pt")) == 236


# Calls a malicious pickle could make, as {"module.name": args}; each creates `marker`.
EVIL = {
  "os.system": lambda marker: (f"touch {marker}",),
  "posix.system": lambda marker: (f"touch {marker}",),
  "builtins.exec": lambda marker: (f"open({str(marker)!r}, 'w')",),
  "builtins.eval": lambda marker: (f"open({str(marker)!r}, 'w')",),
  "subprocess.Popen": lambda marker: (["touch", str(marker)],),
}


def _evil_call(target, marker) -> torch_files.Call:
  module, name = target.rsplit(".", 1)
  return torch_files.Call(torch_files.Global(module, name), EVIL[target](marker))


def _finish(result):
  """Waits for a started process, so that its effect is visible."""
  if isinstance(result, subprocess.Popen):
    result.wait()


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("target", sorted(EVIL))
def test_pickled_calls_are_refused_without_running(tmp_path, target, legacy):
  marker = tmp_path / "ran"
  state = {"w": np.ones(2, np.float32), "x": _evil_call(target, marker)}
  path = torch_files.save({"state_dict": state}, tmp_path / "evil.pt", legacy=legacy)
  message = _load_error(path)
  assert f"refers to the global {target}," in message
  assert not marker.exists()
  # The same call alone, unpickled by plain pickle, does run: the test is not vacuous.
  path = torch_files.save(_evil_call(target, marker), tmp_path / "alone.pt")
  with zipfile.ZipFile(path) as archive:
    _finish(pickle.loads(archive.read("alone/data.pkl")))
  assert marker.exists()


class _Reduce:
  """Pickles as func(*args): how a malicious pickle is made with plain pickle."""

  def __init__(self, func, args):
    self.func, self.args = func, args

  def __reduce__(self):
    return self.func, self.args


@pytest.mark.parametrize("opcodes", ["STACK_GLOBAL", "INST"])
def test_other_global_opcodes_are_refused(tmp_path, opcodes):
  marker = tmp_path / "ran"
  if opcodes == "STACK_GLOBAL":
    data = pickle.dumps(_Reduce(os.system, (f"touch {marker}",)), protocol=4)
  else:
    data = f"(S'touch {marker}'\nios\nsystem\n.".encode()
  assert opcodes in {op.name for op, _, _ in pickletools.genops(data)}
  path = _rewrite_zip(torch_files.save({}, tmp_path / "evil.pt"), {"evil/data.pkl": data})
  assert re.search(r"refers to the global (os|posix)\.system,", _load_error(path))
  assert not marker.exists()
  pickle.loads(data)
  assert marker.exists()


@pytest.fixture(name="sample")
def fixture_sample():
  rng = np.random.default_rng(3)
  return {
    "a": rng.normal(size=(64, 9)).astype(np.float32),
    "b": rng.integers(0, 9, 300).astype(np.int64),
    "c": np.ones((2, 2), np.float16),
  }


@pytest.mark.parametrize("legacy", [False, True])
def test_truncated_files(tmp_path, sample, legacy):
  data = torch_files.save(sample, tmp_path / "full.pt", legacy=legacy).read_bytes()
  for cut in (
    0,
    1,
    16,
    100,
    500,
    len(data) // 2,
    len(data) - 600,
    len(data) - 2000,
    len(data) - 30,
    len(data) - 1,
  ):
    path = tmp_path / f"cut{cut}.pt"
    path.write_bytes(data[:cut])
    message = _load_error(path)
    assert cut < 16 or re.search("damaged (zip archive|PyTorch checkpoint)", message)


def test_random_bytes(tmp_path):
  rng = np.random.default_rng(4)
  heads = [b"", b"PK\x03\x04", pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)]
  for i, head in enumerate(heads * 3):
    path = tmp_path / f"random{i}.pt"
    path.write_bytes(head + rng.bytes(int(rng.integers(0, 5000))))
    _load_error(path)


def test_other_kinds_of_file(tmp_path):
  path = tmp_path / "notes.pt"
  path.write_text("not weights")
  assert "not a PyTorch checkpoint (neither torch.save's zip nor" in _load_error(path)
  tar = tmp_path / "old.pt"
  with tarfile.open(tar, "w") as archive:
    archive.add(path, "notes")
  assert "tar format of torch < 0.4, which is not supported" in _load_error(tar)
  zipped = tmp_path / "other.zip"
  with zipfile.ZipFile(zipped, "w") as archive:
    archive.writestr("folder/weights.bin", b"\0" * 8)
  assert "with 0 <folder>/data.pkl records" in _load_error(zipped)
  with pytest.raises(FileNotFoundError):
    torch_checkpoint.load_state_dict(tmp_path / "missing.pt")


def test_broken_zip_records(tmp_path, sample):
  def broken(changes):
    return _rewrite_zip(torch_files.save(sample, tmp_path / "x.pt"), changes)

  short = np.zeros(64 * 9 - 1, np.float32).tobytes()
  assert "record x/data/0 holds 2300 bytes, storage 0 needs 576 x 4 = 2304" in _load_error(
    broken({"x/data/0": short})
  )
  assert "record x/data/1 is missing" in _load_error(broken({"x/data/1": None}))
  assert "unknown byteorder record 'middle'" in _load_error(broken({"x/byteorder": b"middle"}))
  assert "with 0 <folder>/data.pkl records" in _load_error(broken({"x/data.pkl": None}))


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize(
  "offset,size,stride,problem",
  [
    (25, (2, 3), (3, 1), "reaches past the end of its storage (30 elements)"),
    (0, (4,), (10,), "reaches past the end"),
    (30, (1,), (1,), "reaches past the end"),
    (0, (2, 2), (1,), "one stride per dimension"),
    (-1, (2,), (1,), "want non-negative ints"),
    (0, (2,), (-1,), "want non-negative ints"),
    (0, (2.0,), (1,), "want non-negative ints"),
  ],
)
def test_tensors_outside_their_storage(tmp_path, offset, size, stride, problem, legacy):
  tensor = torch_files.Strided(np.zeros(30, np.float32), offset, size, stride)
  path = torch_files.save({"t": tensor}, tmp_path / "bad.pt", legacy=legacy)
  message = _load_error(path)
  assert "damaged PyTorch checkpoint (tensor /t " in message and problem in message


def test_not_a_state_dict(tmp_path):
  listed = torch_files.save([np.ones(2, np.float32)], tmp_path / "list.pt")
  assert "holds a list, not a state dict" in _load_error(listed)
  mixed = torch_files.save({"w": np.ones(2, np.float32), "step": 3}, tmp_path / "mixed.pt")
  assert "the entries ['step'] are not named tensors" in _load_error(mixed)
