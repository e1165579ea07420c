"""Generated bad input to the public readers and parsers: each works or says what is wrong.

Every case either returns a well-formed result or raises the package's documented error
(ValueError and its subclasses, FileNotFoundError): never another exception, a hang, a
partial output file, or code execution. A fixed seed (`derandomize`) keeps CI stable.
"""

import io
import json
import os
import pathlib
import tempfile

import hypothesis
from hypothesis import strategies as st
import ml_collections
import numpy as np
from PIL import Image
import pytest
from safetensors.numpy import save_file
import torch_files

from lavin_jax.configs import common
from lavin_jax.configs import models as model_configs
from lavin_jax.data import sources
from lavin_jax.data import specs
from lavin_jax.io import bundle
from lavin_jax.io import safetensors_file
from lavin_jax.io import torch_checkpoint

FUZZ = hypothesis.settings(
  derandomize=True,
  deadline=None,
  max_examples=60,
  suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)
DOCUMENTED = (ValueError, FileNotFoundError)


def _png_bytes(seed: int, size=(5, 7)) -> bytes:
  pixels = np.random.default_rng(seed).integers(0, 256, size + (3,), dtype=np.uint8)
  out = io.BytesIO()
  Image.fromarray(pixels).save(out, format="PNG")
  return out.getvalue()


def _damaged(data: bytes, draw_cut, flips) -> bytes:
  """`data` cut at a point and with some bytes flipped."""
  data = bytearray(data[:draw_cut])
  for position, mask in flips:
    if data:
      data[position % len(data)] ^= mask
  return bytes(data)


_cuts = st.integers(min_value=0, max_value=4096)
_flips = st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(1, 255)), max_size=4)


def _write(tmp: pathlib.Path, name: str, data: bytes) -> pathlib.Path:
  path = tmp / name
  path.write_bytes(data)
  return path


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
  return tmp_path_factory.mktemp("fuzz")


@FUZZ
@hypothesis.given(cut=_cuts, flips=_flips, seed=st.integers(0, 3))
def test_images_read_or_raise_value_error(scratch, cut, flips, seed):
  path = _write(scratch, "image.png", _damaged(_png_bytes(seed), cut, flips))
  try:
    image = sources.read_image(path)
  except ValueError as e:
    assert str(path) in str(e)
    return
  assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3


@FUZZ
@hypothesis.given(
  mode=st.sampled_from(["1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I", "F", "CMYK"]),
  height=st.integers(1, 9),
  width=st.integers(1, 9),
  fmt=st.sampled_from(["PNG", "TIFF", "BMP", "WEBP", "JPEG"]),
)
def test_every_image_mode_reads_as_rgb(scratch, mode, height, width, fmt):
  rng = np.random.default_rng(height * 10 + width)
  image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)
  path = scratch / f"mode.{fmt.lower()}"
  try:
    image.save(path, format=fmt)
  except (OSError, ValueError, KeyError):  # this format cannot store this mode
    hypothesis.reject()
  try:
    array = sources.read_image(path)
  except ValueError as e:
    assert str(path) in str(e)
    return
  assert array.shape == (height, width, 3) and array.dtype == np.uint8


def _tensors(seed: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  return {"a": rng.standard_normal((3, 4)).astype(np.float32), "b": np.arange(5)}


@pytest.fixture(scope="module")
def safetensors_bytes(scratch):
  path = scratch / "clean.safetensors"
  save_file(_tensors(0), str(path))
  return path.read_bytes()


@FUZZ
@hypothesis.given(cut=_cuts, flips=_flips)
def test_safetensors_files_read_or_name_the_file(scratch, safetensors_bytes, cut, flips):
  path = _write(scratch, "x.safetensors", _damaged(safetensors_bytes, cut, flips))
  try:
    with safetensors_file.open_file(path) as f:
      arrays = {k: f.array(k) for k in f.keys()}
  except safetensors_file.SafetensorsFileError as e:
    assert str(path) in str(e)
    return
  assert all(isinstance(a, np.ndarray) for a in arrays.values())


@pytest.fixture(scope="module")
def torch_bytes(scratch):
  path = scratch / "clean.pt"
  torch_files.save({"state_dict": {"w": np.ones((2, 3), np.float32)}}, path)
  return path.read_bytes()


@FUZZ
@hypothesis.given(cut=_cuts, flips=_flips)
def test_torch_files_read_or_name_the_file(scratch, torch_bytes, cut, flips):
  marker = scratch / "ran"
  path = _write(scratch, "x.pt", _damaged(torch_bytes, cut, flips))
  try:
    state = torch_checkpoint.load_state_dict(path)
  except torch_checkpoint.TorchCheckpointError as e:
    assert str(path) in str(e)
  else:
    assert all(isinstance(a, np.ndarray) for a in state.values())
  assert not marker.exists()


@FUZZ
@hypothesis.given(text=st.text(max_size=200) | st.binary(max_size=200).map(repr))
def test_bundle_configs_load_or_say_the_bundle_is_damaged(scratch, text):
  folder = scratch / "bundle"
  folder.mkdir(exist_ok=True)
  (folder / bundle.CONFIG_FILE).write_text(text)
  try:
    config = bundle.load_config(folder)
  except ValueError as e:
    assert bundle.CONFIG_FILE in str(e)
    return
  assert isinstance(config, ml_collections.ConfigDict)
  assert json.loads(text) == config.to_dict()


@FUZZ
@hypothesis.given(spec=st.text(max_size=60))
def test_source_specs_parse_or_raise_value_error(spec):
  try:
    fields = specs.parse_spec(spec)
  except ValueError:
    return
  assert fields["kind"] in spec


@FUZZ
@hypothesis.given(
  spec=st.sampled_from(
    ["folder:", "templates:", "tfds:", "photos,", "synthetic:", "nope:"]
  ).flatmap(lambda kind: st.text(max_size=20).map(lambda rest: kind + rest))
)
def test_source_specs_never_crash(spec):
  hypothesis.assume("data_dir" not in spec and "synthetic" not in spec)  # no builds here
  try:
    source = specs.get_source(spec)
  except DOCUMENTED:
    return
  assert isinstance(len(source), int)  # a source that constructs answers len()


@FUZZ
@hypothesis.given(arg=st.text(max_size=30))
def test_config_arguments_parse_or_raise_value_error(arg):
  try:
    name, flags = common.parse_arg(arg, model_configs.JDIT_SIZES, "0.1b", ("runlocal",))
  except ValueError as e:
    assert "Unknown config" in str(e)
    return
  assert name in model_configs.JDIT_SIZES and flags <= {"runlocal"}


_names = st.text(
  alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="/\\\0"),
  min_size=1,
  max_size=12,
)


@FUZZ
@hypothesis.given(
  names=st.lists(
    st.tuples(_names, st.sampled_from(["_input.png", "_target.png", ".png", ""])), max_size=5
  )
)
def test_template_folders_with_odd_names(names):
  with tempfile.TemporaryDirectory() as folder:
    for stem, suffix in names:
      try:
        (pathlib.Path(folder) / f"{stem}{suffix}").write_bytes(_png_bytes(len(stem)))
      except OSError:  # a name this file system refuses
        hypothesis.reject()
    try:
      pairs = sources.TemplateFolderSource(folder)
    except ValueError as e:
      assert folder in str(e)
      return
    assert len(pairs) >= 1
    first = pairs[0]
    assert first["input"].shape[-1] == 3 and first["target"].shape[-1] == 3
    assert os.listdir(folder)  # reading wrote nothing and removed nothing
