r"""Full-size released weights: conversion peak memory and a first sampling call at 3.4B.

  python bench/full_size_weights.py --workdir=/tmp/full_size [--dtype=bfloat16]

Writes a J-DiT file of the released size (3.4B, the released key layout, random values)
and a released-size ST-VAE file, tensor by tensor; converts both into a bundle with
`launch/convert.py` in a subprocess (its peak resident memory from the kernel); then
loads the bundle and runs one short guided sampling call (16 px, one pair, 2 time
points) in another subprocess. One JSON line per figure. Needs disk for the files and
the bundle (about 2 x 7.2 GB in bf16).

safetensors writes from a dict held in memory; the writer below streams the same format
(an 8-byte header length, the JSON header, then the raw tensors) so that writing the
test file does not itself need the full size in memory.
"""

import json
import os
import pathlib
import subprocess
import sys
import time

from absl import app
from absl import flags
import common
import jax
import ml_dtypes
import numpy as np

from lavin_jax import configs
from lavin_jax.configs import models as config_models
from lavin_jax.convert import jdit as convert_jdit
from lavin_jax.convert import stvae as convert_stvae
from lavin_jax.models import jdit
from lavin_jax.models import stvae

_WORKDIR = flags.DEFINE_string("workdir", None, "Where the file and the bundle go.")
_DTYPE = flags.DEFINE_enum("dtype", "bfloat16", ["bfloat16", "float32"], "File dtype.")
_SIZE = flags.DEFINE_enum("size", "3.4b", configs.JDIT_SIZES, "J-DiT size.")
_ROOT = pathlib.Path(__file__).resolve().parents[1]
_SAFETENSORS_DTYPES = {"bfloat16": "BF16", "float32": "F32"}


def released_shapes(size: str) -> dict[str, tuple[int, ...]]:
  """{released key: PyTorch shape} of the J-DiT of `size`, without allocating it."""
  config = convert_jdit.released_config(configs.jdit(size))
  config.scan_layers = False
  p = config.patch_size
  x = jax.ShapeDtypeStruct((1, 1, p, p, config.in_channels), np.float32)
  t = jax.ShapeDtypeStruct((1,), np.float32)
  params = jax.eval_shape(jdit.JDiT(config).init, jax.random.key(0), x, t, x)["params"]
  shapes = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    names = tuple(getattr(k, "key", getattr(k, "name", None)) for k in path)
    names = tuple(n for n in names if n != "value")  # logical-partitioning boxes
    shape = tuple(leaf.shape)
    shapes[convert_jdit.released_key(names)] = shape[::-1] if names[-1] == "kernel" else shape
  return shapes


def released_stvae_shapes() -> dict[str, tuple[int, ...]]:
  """{released key: PyTorch shape} of the released ST-VAE, without allocating it."""
  config = configs.stvae("released")
  f = config_models.spatial_factor(config)
  video = jax.ShapeDtypeStruct((1, 1, f, f, config.in_channels), np.float32)
  params = jax.eval_shape(stvae.STVAE(config).init, jax.random.key(0), video)["params"]
  shapes = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    names = tuple(getattr(k, "key", getattr(k, "name", None)) for k in path)
    names = tuple(n for n in names if n != "value")
    shape = tuple(leaf.shape)  # Flax (*k, in, out) is PyTorch (out, in, *k)
    torch_shape = shape if len(shape) < 2 else (shape[-1], shape[-2], *shape[:-2])
    shapes[convert_stvae.released_key(names)] = torch_shape
  return shapes


def write_streamed(path: pathlib.Path, shapes: dict, dtype: str) -> int:
  """Writes random tensors of `shapes` as one .safetensors file; returns its bytes."""
  np_dtype = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(np.float32)
  header, offset = {}, 0
  for key, shape in shapes.items():
    size = int(np.prod(shape)) * np_dtype.itemsize
    header[key] = {
      "dtype": _SAFETENSORS_DTYPES[dtype],
      "shape": list(shape),
      "data_offsets": [offset, offset + size],
    }
    offset += size
  text = json.dumps(header).encode()
  text += b" " * (-len(text) % 8)
  rng = np.random.default_rng(0)
  with open(path, "wb") as f:
    f.write(len(text).to_bytes(8, "little") + text)
    for shape in shapes.values():
      f.write((0.02 * rng.standard_normal(shape, np.float32)).astype(np_dtype).tobytes())
  return path.stat().st_size


def _child_peak_gib(command: list[str]) -> tuple[float, float]:
  """(peak resident GiB of the child, seconds) of running `command` to completion."""
  start = time.perf_counter()
  child = subprocess.Popen(command, cwd=_ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  _, status, usage = os.wait4(child.pid, 0)
  child.returncode = os.waitstatus_to_exitcode(status)
  if child.returncode:
    raise subprocess.CalledProcessError(child.returncode, command)
  return usage.ru_maxrss / 2**20, time.perf_counter() - start


_SAMPLE = """
import sys, numpy as np
from lavin_jax.inference import pipeline
pipe = pipeline.Pipeline.from_bundle(sys.argv[1])
x = np.zeros((1, 1, 1, 16, 16, 3), np.float32)
out = pipe(x, x, x[:, 0], num_steps=2)
assert out.shape == (1, 1, 16, 16, 3) and np.isfinite(out).all()
"""


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  workdir = pathlib.Path(_WORKDIR.value)
  workdir.mkdir(parents=True, exist_ok=True)
  shapes = released_shapes(_SIZE.value)
  file = workdir / "lavin_dit.safetensors"
  file_bytes = write_streamed(file, shapes, _DTYPE.value)
  vae_file = workdir / "stvae.safetensors"
  file_bytes += write_streamed(vae_file, released_stvae_shapes(), _DTYPE.value)
  params = sum(int(np.prod(s)) for s in shapes.values())
  figure = {
    "size": _SIZE.value,
    "dtype": _DTYPE.value,
    "params_b": round(params / 1e9, 3),
    "file_gib": round(file_bytes / 2**30, 3),
  }

  bundle = workdir / "bundle"
  peak, seconds = _child_peak_gib(
    [
      sys.executable,
      str(_ROOT / "launch" / "convert.py"),
      f"--dit_path={file}",
      f"--vae_path={vae_file}",
      f"--size={_SIZE.value}",
      f"--dtype={_DTYPE.value}",
      f"--output={bundle}",
    ]
  )
  common.print_figure(
    {
      "figure": "convert_full_size",
      **figure,
      "seconds": round(seconds, 1),
      "peak_rss_gib": round(peak, 3),
      "peak_over_file": round(peak / (file_bytes / 2**30), 3),
    }
  )

  peak, seconds = _child_peak_gib([sys.executable, "-c", _SAMPLE, str(bundle)])
  common.print_figure(
    {
      "figure": "sample_full_size_bundle",
      **figure,
      "seconds": round(seconds, 1),
      "peak_rss_gib": round(peak, 3),
    }
  )


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
