"""The training loop shared by J-DiT and the ST-VAE: steps, metrics, checkpoints, stops.

`run` applies a jitted step function from the state's step to `total_steps`. The host
dispatches steps without waiting for the device, except at sync points: every
`log_every` steps, at every checkpoint and at the last step. There it fetches the
metrics of every step since the previous sync point (one transfer), raises
FloatingPointError if any is non-finite (before saving: no checkpoint holds such a
state), writes the sync step's metrics and the interval's throughput to
workdir/metrics.jsonl, polls for a stop request (SIGTERM, SIGINT; on any process) and
saves when due, on a stop and at the last step.

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
import tqdm

from lavin_jax.train import checkpoint


class MetricWriter:
  """One JSON object per logged step appended to workdir/metrics.jsonl (process 0 only)."""

  def __init__(self, workdir):
    self._file = None
    if jax.process_index() == 0:
      self._file = open(os.path.join(workdir, "metrics.jsonl"), "a")

  def write(self, step, metrics):
    if self._file is not None:
      record = {"step": step, **{k: float(v) for k, v in metrics.items()}}
      self._file.write(json.dumps(record) + "\n")
      self._file.flush()

  def close(self):
    if self._file is not None:
      self._file.close()


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
    workdir: metrics.jsonl goes here.
    config: saved with every checkpoint.
    data_iterator: a Grain iterator whose position is saved with every checkpoint.
    tokens_per_example: batch -> tokens of one example, for a tokens/s metric.
    desc: label of the progress bar.

  Raises:
    FloatingPointError: a step gave a non-finite metric. The message names the
      step, the quantity and the last good checkpoint; that state is never saved.
  """
  first = int(state.step)
  writer = MetricWriter(workdir)
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
        state, metrics = step_fn(state, batch)
        pending.append((step, metrics))
        size = _batch_size(batch)
        examples += size
        if tokens_per_example is not None:
          tokens += size * tokens_per_example(batch)
        last = step == total_steps
        if not (last or step % log_every == 0 or ckpt.should_save(step)):
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
    bar.close()
    writer.close()
  return state
