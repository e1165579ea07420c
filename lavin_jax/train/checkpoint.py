"""Training checkpoints with orbax: train state, data-iterator state and the config.

One step directory holds three items: `state` (any pytree of arrays, e.g. the
TrainState: params, EMA params, optimizer state, step, raw uint32 RNG key), `data` (a
Grain iterator's position, optional) and `config` (JSON). Saves are asynchronous and
atomic: orbax writes into a temporary directory and renames it when complete, so a
process killed mid-save leaves the previous checkpoints intact and the half-written
one is ignored (and removed when the next manager opens the directory).

Typical loop:

    with StopGuard() as guard, CheckpointManager(workdir, save_every=1000) as ckpt:
      if ckpt.latest_step() is not None:
        state, _ = ckpt.restore(abstract_state, data_iterator=it)  # onto any mesh
      while step < total_steps:
        state = train_step(state, next(it)); step += 1
        stopping = guard.stop_requested
        ckpt.save(step, state, config=config, data_iterator=it, force=stopping)
        if stopping:
          break

`lavin_jax.train.loop.run` is this loop, with metrics and non-finite checks.

`abstract_state` is the jax.eval_shape of the state with the NamedShardings of the
current mesh (`with_shardings`), so a checkpoint written on one mesh restores onto
another.
"""

import contextlib
import json
import os
import signal
from typing import Optional

from absl import logging
import grain
import jax
import ml_collections
import orbax.checkpoint as ocp

from lavin_jax.io import bundle
from lavin_jax.io import coordination
from lavin_jax.io import tree_fit


def with_shardings(abstract_tree, shardings):
  """ShapeDtypeStructs of `abstract_tree` placed on `shardings` (a matching pytree)."""
  return jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_tree, shardings
  )


def _abstract(target):
  """Restore target: arrays -> their shape, dtype and sharding; structs kept.

  A ShapeDtypeStruct without a sharding restores onto the first local device.
  """

  def leaf(x):
    sharding = getattr(x, "sharding", None)
    if sharding is None:
      sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

  return jax.tree.map(leaf, target)


def _dotted(path) -> str:
  """Key path -> orbax's dotted array name ('opt_state.0.mu.w')."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
  return ".".join(parts)


def _check_fits(metadata, target, where: str) -> None:
  """Raises ValueError listing every missing, unexpected or reshaped array."""
  stored = {m.name: tuple(m.shape) for m in jax.tree.leaves(metadata) if hasattr(m, "shape")}
  wanted = {_dotted(p): tuple(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(target)}
  tree_fit.check_fits(
    stored,
    wanted,
    f"The checkpoint {where}",
    "was it written with another model or optimizer config?",
  )


def _summary(error: BaseException, width: int = 160) -> str:
  """A long storage-library message on one line: its start and its end (the cause)."""
  text = " ".join(str(error).split())
  return text if len(text) <= 2 * width else f"{text[:width]} ... {text[-width:]}"


class CorruptCheckpointError(ValueError):
  """A checkpoint whose files cannot be read back."""


class CheckpointManager:
  """Saves every `save_every` steps, keeps the latest `keep`, restores onto any mesh.

  Call `save` and `restore` on every process (multi-host); orbax coordinates them.
  """

  def __init__(
    self, directory: str | os.PathLike, *, save_every: int, keep: int = 3, async_save: bool = True
  ):
    if save_every < 1 or keep < 1:
      raise ValueError(f"save_every ({save_every}) and keep ({keep}) must be >= 1.")
    options = ocp.CheckpointManagerOptions(
      save_decision_policy=ocp.checkpoint_managers.FixedIntervalPolicy(save_every),
      preservation_policy=ocp.checkpoint_managers.LatestN(keep),
      enable_async_checkpointing=async_save,
      cleanup_tmp_directories=True,
    )
    handlers = {
      "state": ocp.StandardCheckpointHandler(),
      "data": grain.checkpoint.CheckpointHandler(),
      "config": ocp.JsonCheckpointHandler(),
    }
    self._pending = None  # the step of a save started but not known to be complete
    self._manager = ocp.CheckpointManager(
      os.path.abspath(os.fspath(directory)), options=options, item_handlers=handlers
    )

  @property
  def directory(self):
    return self._manager.directory

  def all_steps(self) -> list[int]:
    """Steps of the complete checkpoints, ascending."""
    return sorted(self._manager.all_steps())

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def should_save(self, step: int) -> bool:
    return self._manager.should_save(step)

  def save(
    self,
    step: int,
    state,
    *,
    config: Optional[ml_collections.ConfigDict] = None,
    data_iterator=None,
    force: bool = False,
  ) -> bool:
    """Starts saving `state` (and the config and iterator position) as `step`.

    Saves only when `step` is a multiple of save_every, or with force=True (e.g.
    on a stop request). Returns whether a save started; the arrays are written in
    the background (`wait_until_finished` to block).
    """
    if not force and not self.should_save(step):
      return False
    items = {"state": ocp.args.StandardSave(state)}
    if config is not None:
      items["config"] = ocp.args.JsonSave(json.loads(config.to_json()))
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    with self._saving(step):
      started = self._manager.save(step, args=ocp.args.Composite(**items), force=force)
    self._pending = step if started else self._pending
    return started

  @contextlib.contextmanager
  def _saving(self, step: int):
    """Reports a failed save (this one, or the pending one it waits for) clearly."""
    try:
      yield
    except Exception as e:  # orbax and tensorstore raise bare Exceptions and ValueErrors
      failed = self._pending if self._pending is not None else step
      self._pending = None
      good = [s for s in self.all_steps() if s != failed]
      raise OSError(
        f"Saving checkpoint step {failed} in {self.directory} failed "
        f"({_summary(e)}). "
        + (f"The last complete checkpoint, step {good[-1]}, is intact. " if good else "")
        + "Free space (or point the workdir elsewhere) and rerun to resume."
      ) from e

  def restore(
    self, target, *, step: Optional[int] = None, data_iterator=None, fallback: bool = False
  ):
    """Restores a checkpoint onto the layout of `target`.

    Args:
      target: pytree like the saved state: arrays, or ShapeDtypeStructs carrying the
        shardings to restore onto (`with_shardings(jax.eval_shape(...), shardings)`).
      step: which step; the latest by default.
      data_iterator: a fresh Grain iterator of the same pipeline; its position is
        set to the saved one.
      fallback: when the latest checkpoint cannot be read (damaged on disk), restore
        the newest earlier one that can, with a warning; else raise.

    Returns:
      (state, config): config is a ConfigDict (tuples come back as lists), or None
      if none was saved.

    Raises:
      CorruptCheckpointError: the step's files cannot be read (and no fallback).
    """
    self.wait_until_finished()
    step = self.latest_step() if step is None else step
    if step is None or step not in self.all_steps():
      raise FileNotFoundError(
        f"No checkpoint for step {step} in {self.directory} (complete steps: {self.all_steps()})."
      )
    earlier = [s for s in self.all_steps() if s < step]
    try:
      return self._restore_step(target, step, data_iterator)
    except CorruptCheckpointError as e:
      if not (fallback and earlier):
        hint = (
          f"set config.restore_fallback=True to resume from step {earlier[-1]}, or "
          if earlier
          else ""
        )
        raise CorruptCheckpointError(f"{e} Fix: {hint}delete {self.directory}/{step}.") from e
      logging.warning("%s Falling back to step %d.", e, earlier[-1])
      return self.restore(target, step=earlier[-1], data_iterator=data_iterator, fallback=True)

  def _restore_step(self, target, step: int, data_iterator):
    metadata = self._manager.item_metadata(step)
    _check_fits(metadata["state"], target, f"{self.directory}/{step}")
    items = {"state": ocp.args.StandardRestore(_abstract(target))}
    if self._has_item(step, "config"):
      items["config"] = ocp.args.JsonRestore()
    if data_iterator is not None:
      if not self._has_item(step, "data"):
        raise ValueError(
          f"Checkpoint {self.directory}/{step} holds no data-iterator state; restore "
          "without data_iterator (the data then starts from the beginning)."
        )
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # tensorstore reports unreadable data as a bare Exception
      raise CorruptCheckpointError(
        f"Checkpoint step {step} in {self.directory} cannot be read ({_summary(e)}): it is damaged."
      ) from e
    config = restored.get("config", None)
    return restored["state"], (None if config is None else ml_collections.ConfigDict(config))

  def _has_item(self, step: int, name: str) -> bool:
    return (self.directory / str(step) / name).exists()

  def wait_until_finished(self) -> None:
    """Blocks until the pending save is written (OSError if it failed)."""
    with self._saving(self._pending):
      self._manager.wait_until_finished()
    self._pending = None

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    with self._saving(self._pending):
      self._manager.close()
    self._pending = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
    return False


class StopGuard:
  """Within the block, SIGTERM and SIGINT set a flag instead of killing the process.

  The training loop polls `stop_requested`, saves and leaves cleanly. A second
  signal of the same kind gets the previous behaviour (a second Ctrl-C interrupts).
  Enter it from the main thread (a Python rule for signal handlers).
  """

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
    self._signals = tuple(signals)
    self._previous = {}
    self.received: Optional[int] = None  # the first signal number caught

  def __enter__(self):
    for s in self._signals:
      self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous = {}
    return False

  def _handle(self, signum, frame):
    del frame
    if self.received is not None:
      signal.signal(signum, self._previous[signum])
      signal.raise_signal(signum)
      return
    self.received = signum

  @property
  def stop_requested(self) -> bool:
    """True once a signal arrived here or on any other process.

    Multi-host, this is a collective: poll it at the same step on every process.
    """
    return coordination.any_process(self.received is not None, "stop_request")


def export_bundle(
  path,
  ema_params,
  config: ml_collections.ConfigDict,
  vae_params=None,
  dtype: Optional[str] = "bfloat16",
) -> None:
  """Writes an inference bundle of a J-DiT run: EMA params in `dtype` and the configs.

  `config` is the training config (its `model` and `vae` sub-configs go into the
  bundle); vae_params (the frozen ST-VAE) make the bundle self-contained. Load it with
  `lavin_jax.inference.pipeline.Pipeline.from_bundle(path)`.
  """
  bundle_config = ml_collections.ConfigDict({"jdit": config.model})
  if vae_params is not None:
    bundle_config.stvae = config.vae
  bundle.save_bundle(
    path,
    bundle_config,
    jdit_params=ema_params,
    stvae_params=vae_params,
    dtype=dtype,
  )
