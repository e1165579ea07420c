"""Inference bundles: a directory with the model config and the params, nothing else.

    <path>/config.json   the ConfigDict, with sub-configs `jdit` and `stvae`
    <path>/params/       orbax checkpoint of {'jdit': ..., 'stvae': ...} (those present)

Writes are atomic: the bundle is written to `<path>.partial` and renamed into place, so
a crash never leaves a half-written bundle where a good one was.
"""

import json
import os
import shutil

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from lavin_jax.io import coordination
from lavin_jax.io import files

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
MODELS = ("jdit", "stvae")

# Host arrays are written as they are: orbax's default deep copy of each one (for
# writes that overlap the caller's updates) would double a 3.4B conversion's peak
# memory, and save_bundle returns only once the write is finished. Arrays go to disk in
# chunks of _CHUNK_BYTES, at most _WRITE_CONCURRENT_GB in flight, one file set per
# array (no OCDBT, whose transaction buffers what it writes): measured on 2 GB of
# arrays, the write then needs 0.3 GB beyond them instead of 1.5 GB.
_WRITE_CONCURRENT_GB = 1
_CHUNK_BYTES = 64 * 2**20
_HANDLERS = ocp.type_handlers.create_type_handler_registry(
  (np.ndarray, ocp.type_handlers.NumpyHandler(deepcopy_host_arrays=False)),
)


def save_bundle(
  path, config: ml_collections.ConfigDict, jdit_params=None, stvae_params=None, dtype=None
) -> None:
  """Writes an inference bundle to the directory `path` (replacing any bundle there).

  Args:
    path: the bundle directory.
    config: ConfigDict with a sub-config per model saved (`jdit`, `stvae`).
    jdit_params: J-DiT params (e.g. the EMA params), or None.
    stvae_params: ST-VAE params, or None. Host or device arrays, sharded over
      processes too (every process then calls save_bundle); stored as whole arrays.
    dtype: optional dtype (e.g. 'bfloat16') floating-point params are stored in.
  """
  path = os.path.abspath(os.fspath(path))
  params = {k: p for k, p in zip(MODELS, (jdit_params, stvae_params)) if p is not None}
  if not params:
    raise ValueError("save_bundle needs jdit_params, stvae_params or both.")
  missing = [k for k in params if k not in config]
  if missing:
    raise ValueError(
      f"The bundle config needs sub-configs {missing} for the params saved; "
      f"it has {sorted(config.keys())}."
    )
  params = jax.tree.map(_host, params)  # no device layout: a bundle loads on any mesh
  if dtype is not None:
    params = jax.tree.map(lambda a: _cast(a, jnp.dtype(dtype)), params)

  partial = path + ".partial"
  primary = jax.process_index() == 0
  if primary and os.path.exists(partial):
    shutil.rmtree(partial)  # left by an interrupted save
  coordination.barrier("bundle_clean")
  try:
    checkpointer = ocp.Checkpointer(
      ocp.PyTreeCheckpointHandler(
        type_handler_registry=_HANDLERS,
        save_concurrent_gb=_WRITE_CONCURRENT_GB,
        use_ocdbt=False,
      )
    )
    chunked = jax.tree.map(lambda _: ocp.SaveArgs(chunk_byte_size=_CHUNK_BYTES), params)
    checkpointer.save(
      os.path.join(partial, PARAMS_DIR), args=ocp.args.PyTreeSave(params, save_args=chunked)
    )
    if primary:
      files.atomic_write_text(os.path.join(partial, CONFIG_FILE), config.to_json(indent=1))
  except Exception as e:
    if primary:
      shutil.rmtree(partial, ignore_errors=True)
    raise OSError(
      f"Writing the bundle {path} failed ({' '.join(str(e).split())[:300]}); "
      f"{'the bundle already there is intact' if os.path.exists(path) else 'nothing was written'}"
      ". Free space or choose another path, then write it again."
    ) from e
  if primary:
    files.replace_dir(partial, path)
  coordination.barrier("bundle_done")


def load_config(path) -> ml_collections.ConfigDict:
  """The config of the bundle at `path`, read without its params."""
  path = os.path.abspath(os.fspath(path))
  config_file = os.path.join(path, CONFIG_FILE)
  if not os.path.isfile(config_file):
    raise FileNotFoundError(
      f"No inference bundle at {path!r} (missing {CONFIG_FILE}); write one with "
      f"launch/convert.py or lavin_jax.io.bundle.save_bundle."
    )
  try:
    with open(config_file) as f:
      return ml_collections.ConfigDict(json.load(f))
  except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as e:
    raise ValueError(
      f"The bundle config {config_file} is not a JSON object ({e}); the "
      "bundle is damaged: write it again."
    ) from e


def load_bundle(path):
  """Reads a bundle: (config, {'jdit': params or None, 'stvae': params or None}).

  Params come back as host numpy arrays in the stored dtype.
  """
  config = load_config(path)
  checkpointer = ocp.StandardCheckpointer()
  params_dir = os.path.join(os.path.abspath(os.fspath(path)), PARAMS_DIR)
  stored = checkpointer.metadata(params_dir).item_metadata.tree
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), stored)
  params = jax.tree.map(np.asarray, checkpointer.restore(params_dir, target))
  return config, {k: params.get(k) for k in MODELS}


def _host(a) -> np.ndarray:
  """A leaf as a whole host array; a collective for arrays spread over processes."""
  if isinstance(a, jax.Array) and not a.is_fully_addressable:
    return np.asarray(multihost_utils.process_allgather(a, tiled=True))
  return np.asarray(a)


def _cast(a, dtype):
  return a.astype(dtype, copy=False) if jnp.issubdtype(a.dtype, jnp.floating) else a
