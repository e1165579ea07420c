"""The training loop shared by J-DiT and the ST-VAE: steps, metrics, checkpoints, stops.

`run` applies a jitted step function from the state's step to `total_steps`. The host
dispatches steps without waiting for the device, except at sync points: every
`log_every` steps, at every evaluation and checkpoint, and at the last step. There it
fetches the metrics of every step since the previous sync point (one transfer), raises
FloatingPointError if any is non-finite (before saving: no checkpoint holds such a
state), writes the sync step's metrics and the interval's throughput to
workdir/metrics.jsonl and to TensorBoard event files in workdir (`MetricWriter`),
polls for a stop request (SIGTERM, SIGINT; on any process) and saves when due, on a
stop and at the last step.

Optional: an evaluation every `eval_every` steps (`eval_fn(state)` -> device scalars,
logged with that step's metrics) and a `jax.profiler` trace of the steps
`profile_steps = (start, stop)`, start to stop - 1, into workdir/profile (process 0).

    with checkpoint.CheckpointManager(...) as ckpt:
      state = ckpt.restore(...)[0] if ckpt.latest_step() is not None else fresh_state
      state = loop.run(step_fn, state, batches, ckpt=ckpt, total_steps=..., ...)
"""

import json
import os
import time
from typing import Any, Callable, Iterator, Optional

from absl import logging
import jax
import ml_collections
import numpy as np
import tensorboardX
import tqdm

from lavin_jax.train import checkpoint

PROFILE_DIR = "profile"  # under the workdir


class MetricWriter:
  """Scalars of logged steps, on process 0 only: one JSON object a step appended to
  workdir/metrics.jsonl, and the same scalars (tag = name) in TensorBoard event files
  in workdir (`tensorboard --logdir=WORKDIR`).

  purge_step: a run resumed at this step hides, in TensorBoard, the events of steps
  >= purge_step written before (by a run that went past its last checkpoint).
  """

  def __init__(self, workdir, purge_step: Optional[int] = None):
    self._file = self._events = None
    if jax.process_index() == 0:
      self._file = open(os.path.join(workdir, "metrics.jsonl"), "a")
      self._events = tensorboardX.SummaryWriter(
        workdir,
        purge_step=purge_step,
        flush_secs=30,
        # Unique and in order: event files are named by the second they are opened in.
        filename_suffix=f".{time.time_ns()}",
      )

  def write(self, step, metrics):
    if self._file is not None:
      record = {k: float(v) for k, v in metrics.items()}
      self._file.write(json.dumps({"step": step, **record}) + "\n")
      self._file.flush()
      for name, value in record.items():
        self._events.add_scalar(name, value, step)

  def close(self):
    if self._file is not None:
      self._file.close()
      self._events.close()


def check_profile_steps(profile_steps, total_steps: int) -> None:
  """Raises ValueError unless profile_steps is empty (off) or (start, stop) with
  1 <= start < stop <= total_steps + 1."""
  if not profile_steps:
    return
  ok = len(profile_steps) == 2 and all(isinstance(s, int) for s in profile_steps)
  if not (ok and 1 <= profile_steps[0] < profile_steps[1] <= total_steps + 1):
    raise ValueError(
      f"config.profile_steps must be (start, stop) with 1 <= start < stop <= total_steps "
      f"+ 1 = {total_steps + 1} (steps start to stop - 1 are traced; () is off), got "
      f"{profile_steps!r}."
    )


class ProfileWindow:
  """A jax.profiler trace of the steps start to stop - 1 into `directory` (process 0).

  The host waits for the device at both ends of the window only: the trace starts
  once earlier steps are done and stops once the window's steps are.
  """

  def __init__(self, profile_steps, directory: str):
    self._steps = tuple(profile_steps or ()) if jax.process_index() == 0 else ()
    self._directory = directory
    self._tracing = False

  def before(self, step: int, state) -> None:
    if self._steps and step == self._steps[0]:
      jax.block_until_ready(state)
      jax.profiler.start_trace(self._directory)
      self._tracing = True

  def after(self, step: int, state) -> None:
    if self._tracing and step == self._steps[1] - 1:
      jax.block_until_ready(state)
      self.close()

  def close(self) -> None:
    if self._tracing:
      jax.profiler.stop_trace()
      self._tracing = False


def _fetch_checked(pending, ckpt: checkpoint.CheckpointManager) -> dict:
  """Host metrics of the last of `pending` [(step, device metrics)], in one transfer.

  Raises:
    FloatingPointError: a pending step has a non-finite metric; the message names
      the first such step, its quantities and the last complete checkpoint.
  """
  fetched = jax.device_get([metrics for _, metrics in pending])
  for (step, _), host in zip(pending, fetched):
    bad = sorted(
      (name for name, value in host.items() if not np.isfinite(value)),
      key=lambda name: name != "loss",
    )  # the loss first
    if bad:
      ckpt.wait_until_finished()
      last_good = ckpt.latest_step()
      raise FloatingPointError(
        f"Step {step}: {bad[0]} is {host[bad[0]]} (non-finite: {', '.join(bad)}; "
        f"metrics checked at step {pending[-1][0]}); stopping without saving this "
        "state. "
        + (
          f"The last good checkpoint is step {last_good} in {ckpt.directory}."
          if last_good is not None
          else "No checkpoint was saved yet."
        )
      )
  return fetched[-1]


def _batch_size(batch) -> int:
  """Examples in a batch: the leading dimension of its (global) arrays."""
  return jax.tree.leaves(batch)[0].shape[0]


def run(
  step_fn: Callable[[Any, Any], tuple[Any, dict]],
  state,
  batches: Iterator,
  *,
  ckpt: checkpoint.CheckpointManager,
  total_steps: int,
  log_every: int,
  workdir: str,
  config: ml_collections.ConfigDict,
  data_iterator=None,
  tokens_per_example: Optional[Callable[[Any], int]] = None,
  eval_fn: Optional[Callable[[Any], dict]] = None,
  eval_every: int = 0,
  profile_steps=(),
  desc: str = "train",
):
  """Trains from `state.step` to `total_steps`; returns the last state.

  Call it on every process, with the same arguments (multi-host).

  Args:
    step_fn: (state, batch) -> (state, metrics), jitted; metrics are scalars and
      include 'loss'.
    state: a pytree with a scalar `step` (updates applied): fresh or restored.
    batches: iterator of step_fn's batches; its arrays lead with the global batch.
    ckpt: saves every save_every steps, on a stop request and at the last step.
    total_steps: the step to train to.
    log_every: metrics fetched and checked every log_every steps (and before every
      save); larger values let the host run ahead of the device.
    workdir: metrics.jsonl, the TensorBoard event files and the profile go here.
    config: saved with every checkpoint.
    data_iterator: a Grain iterator whose position is saved with every checkpoint.
    tokens_per_example: batch -> tokens of one example, for a tokens/s metric.
    eval_fn: state -> {name: device scalar}, run after every eval_every-th step and
      logged with that step's metrics (a sync point).
    eval_every: evaluation cadence in steps; 0 is off.
    profile_steps: (start, stop): trace steps start to stop - 1 into
      workdir/profile (`check_profile_steps`); () or None is off.
    desc: label of the progress bar.

  Raises:
    FloatingPointError: a step gave a non-finite metric. The message names the
      step, the quantity and the last good checkpoint; that state is never saved.
  """
  check_profile_steps(profile_steps, total_steps)
  evaluating = eval_fn is not None and eval_every > 0
  first = int(state.step)
  writer = MetricWriter(workdir, purge_step=first + 1 if first else None)
  profile = ProfileWindow(profile_steps, os.path.join(workdir, PROFILE_DIR))
  bar = tqdm.tqdm(
    total=total_steps, initial=first, desc=desc, unit="step", disable=jax.process_index() != 0
  )
  pending = []  # (step, device metrics) since the last sync point
  examples = tokens = 0
  since = time.perf_counter()
  try:
    with checkpoint.StopGuard() as stop:
      for step in range(first + 1, total_steps + 1):
        batch = next(batches)
        profile.before(step, state)
        state, metrics = step_fn(state, batch)
        profile.after(step, state)
        evaluated = evaluating and step % eval_every == 0
        if evaluated:
          metrics = {**metrics, **eval_fn(state)}
        pending.append((step, metrics))
        size = _batch_size(batch)
        examples += size
        if tokens_per_example is not None:
          tokens += size * tokens_per_example(batch)
        last = step == total_steps
        if not (last or evaluated or step % log_every == 0 or ckpt.should_save(step)):
          continue

        metrics = _fetch_checked(pending, ckpt)
        now = time.perf_counter()
        metrics["examples_per_sec"] = examples / (now - since)
        if tokens_per_example is not None:
          metrics["tokens_per_sec"] = tokens / (now - since)
        pending, examples, tokens, since = [], 0, 0, now
        writer.write(step, metrics)
        bar.update(step - bar.n)
        bar.set_postfix(loss=f"{metrics['loss']:.4f}")

        stopping = stop.stop_requested  # a collective: every process is at this step
        ckpt.save(step, state, config=config, data_iterator=data_iterator, force=stopping or last)
        if stopping:
          logging.info("Stop requested: saved step %d, exiting.", step)
          break
  finally:
    profile.close()
    bar.close()
    writer.close()
  return state
