"""The training loop with a tiny jitted step (no model): sync points, non-finite
steps, resume, stop requests."""

import json
import os
import signal
import struct as struct_lib

from flax import struct
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lavin_jax.train import checkpoint
from lavin_jax.train import loop


class State(struct.PyTreeNode):
  step: jax.Array
  w: jax.Array


@jax.jit
def add_batch_mean(state, batch):
  """w += the batch mean; loss = sum(w). Batch k holds k: after n steps w = n(n+1)/2."""
  w = state.w + jnp.mean(batch, axis=0)
  return state.replace(step=state.step + 1, w=w), {"loss": jnp.sum(w), "w_max": jnp.max(w)}


def batches(values):
  """Batches (2, 3) of each value."""
  return iter([np.full((2, 3), v, np.float32) for v in values])


def train(
  workdir,
  batch_iter,
  *,
  total_steps,
  log_every,
  checkpoint_every,
  step_fn=add_batch_mean,
  data_iterator=None,
  **kwargs,
):
  """Resumes from workdir's latest checkpoint (state and data position), then runs."""
  config = ml_collections.ConfigDict(dict(total_steps=total_steps, log_every=log_every))
  state = State(step=jnp.zeros((), jnp.int32), w=jnp.zeros((3,), jnp.float32))
  with checkpoint.CheckpointManager(workdir / "checkpoints", save_every=checkpoint_every) as ckpt:
    if ckpt.latest_step() is not None:
      state, _ = ckpt.restore(state, data_iterator=data_iterator)
    return loop.run(
      step_fn,
      state,
      batch_iter,
      ckpt=ckpt,
      total_steps=total_steps,
      log_every=log_every,
      workdir=str(workdir),
      config=config,
      data_iterator=data_iterator,
      **kwargs,
    )


def records(workdir):
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def saved_steps(workdir):
  with checkpoint.CheckpointManager(workdir / "checkpoints", save_every=1) as ckpt:
    return ckpt.all_steps()


def test_metrics_fetched_checked_and_written_only_at_sync_points(tmp_path, monkeypatch):
  steps_run, fetched_after = [], []
  device_get = jax.device_get

  def counting_device_get(tree):
    fetched_after.append(len(steps_run))
    return device_get(tree)

  def step_fn(state, batch):
    steps_run.append(batch[0, 0])
    return add_batch_mean(state, batch)

  monkeypatch.setattr(jax, "device_get", counting_device_get)
  state = train(
    tmp_path,
    batches(range(1, 11)),
    total_steps=10,
    log_every=4,
    checkpoint_every=5,
    step_fn=step_fn,
    tokens_per_example=lambda batch: 7,
  )
  # Sync points: every 4 steps, each checkpoint (5, 10) and the last step.
  assert fetched_after == [4, 5, 8, 10]
  logged = records(tmp_path)
  assert [r["step"] for r in logged] == [4, 5, 8, 10]
  assert [r["loss"] for r in logged] == [3 * 10, 3 * 15, 3 * 36, 3 * 55]  # the step's own
  assert all(r["tokens_per_sec"] == pytest.approx(7 * r["examples_per_sec"]) for r in logged)
  assert saved_steps(tmp_path) == [5, 10]
  assert int(state.step) == 10 and float(state.w[0]) == 55


@pytest.mark.parametrize(
  "nan_step, checked_at, saved, logged",
  [
    (7, 8, [5], [4, 5]),  # between sync points: caught at the next one
    (5, 5, [], [4]),  # at a checkpoint step: caught before saving
  ],
)
def test_non_finite_step_is_caught_at_the_next_sync_point_and_never_saved(
  tmp_path, nan_step, checked_at, saved, logged
):
  values = [np.nan if v == nan_step else v for v in range(1, 13)]
  good = (
    f"The last good checkpoint is step 5 in {tmp_path}/checkpoints"
    if saved
    else "No checkpoint was saved yet"
  )
  with pytest.raises(
    FloatingPointError,
    match=rf"Step {nan_step}: loss is nan \(non-finite: loss, w_max; "
    rf"metrics checked at step {checked_at}\).*{good}",
  ):
    train(tmp_path, batches(values), total_steps=12, log_every=4, checkpoint_every=5)
  assert saved_steps(tmp_path) == saved
  assert [r["step"] for r in records(tmp_path)] == logged


def test_resume_continues_at_the_saved_step_and_data_position(tmp_path):
  def data():  # batch k holds k
    ds = grain.MapDataset.range(1, 1000).map(lambda i: np.full((2, 3), i, np.float32))
    return iter(ds.to_iter_dataset())

  it = data()
  train(tmp_path, it, total_steps=6, log_every=2, checkpoint_every=3, data_iterator=it)
  assert saved_steps(tmp_path) == [3, 6]
  steps_run = []

  def step_fn(state, batch):
    steps_run.append(int(batch[0, 0]))
    return add_batch_mean(state, batch)

  it = data()  # a fresh iterator: its position comes from the checkpoint
  state = train(
    tmp_path, it, total_steps=10, log_every=2, checkpoint_every=3, step_fn=step_fn, data_iterator=it
  )
  assert steps_run == [7, 8, 9, 10]
  assert int(state.step) == 10 and float(state.w[0]) == 55  # as one run of 10 steps
  assert [r["step"] for r in records(tmp_path)] == [2, 3, 4, 6, 8, 9, 10]
  assert saved_steps(tmp_path) == [6, 9, 10]  # the manager keeps 3


def test_stop_request_saves_at_the_next_sync_point_and_exits(tmp_path):
  def step_fn(state, batch):
    if int(batch[0, 0]) == 2:  # as if the scheduler preempted the job during step 2
      os.kill(os.getpid(), signal.SIGTERM)
    return add_batch_mean(state, batch)

  handler = signal.getsignal(signal.SIGTERM)
  state = train(
    tmp_path,
    batches(range(1, 11)),
    total_steps=10,
    log_every=3,
    checkpoint_every=100,
    step_fn=step_fn,
  )
  assert int(state.step) == 3  # the first sync point after the signal
  assert saved_steps(tmp_path) == [3]
  assert [r["step"] for r in records(tmp_path)] == [3]
  assert signal.getsignal(signal.SIGTERM) == handler


def event_scalars(workdir):
  """{(tag, step): value} and the purge steps of the TensorBoard event files in workdir,
  read through the TFRecord framing with tensorboardX's Event proto."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top

  scalars, purges = {}, []
  for path in sorted(workdir.glob("events.out.tfevents.*")):
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
      (length,) = struct_lib.unpack("<Q", data[offset : offset + 8])
      event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
      offset += 12 + length + 4  # length, its CRC, the record, its CRC
      if event.HasField("session_log"):
        purges.append(event.step)
      for value in event.summary.value:
        scalars[(value.tag, event.step)] = value.simple_value
  return scalars, purges


def test_tensorboard_events_hold_the_scalars_of_metrics_jsonl(tmp_path):
  train(
    tmp_path,
    batches(range(1, 7)),
    total_steps=6,
    log_every=2,
    checkpoint_every=3,
    tokens_per_example=lambda batch: 7,
  )
  train(tmp_path, batches(range(4, 9)), total_steps=8, log_every=2, checkpoint_every=3)
  logged = records(tmp_path)
  assert [r["step"] for r in logged] == [2, 3, 4, 6, 8]  # resumed from step 6
  want = {(k, r["step"]): v for r in logged for k, v in r.items() if k != "step"}
  scalars, purges = event_scalars(tmp_path)
  assert set(scalars) == set(want) and len(want) == 4 * 4 + 3
  for key, value in want.items():
    assert scalars[key] == np.float32(value), key  # TensorBoard keeps float32
  assert purges == [7]  # the resumed run hides older events of steps >= 7


def test_evaluation_runs_at_its_cadence_on_the_state_after_the_step(tmp_path):
  calls = []

  def eval_fn(state):
    calls.append(int(state.step))
    return {"eval_w": 2 * jnp.sum(state.w)}

  train(
    tmp_path,
    batches(range(1, 11)),
    total_steps=10,
    log_every=4,
    checkpoint_every=100,
    eval_fn=eval_fn,
    eval_every=3,
  )
  assert calls == [3, 6, 9]
  logged = records(tmp_path)
  assert [r["step"] for r in logged] == [3, 4, 6, 8, 9, 10]  # evaluations are sync points
  evaluated = {r["step"]: r["eval_w"] for r in logged if "eval_w" in r}
  assert evaluated == {s: 2 * 3 * s * (s + 1) / 2 for s in (3, 6, 9)}


def profile_files(workdir):
  return sorted((workdir / "profile").rglob("*.xplane.pb"))


def test_profile_window_traces_its_steps_only(tmp_path):
  traced = []

  def step_fn(state, batch):
    traced.append(jax.profiler.TraceAnnotation.is_enabled())
    return add_batch_mean(state, batch)

  kwargs = dict(total_steps=5, log_every=5, checkpoint_every=100, step_fn=step_fn)
  train(tmp_path / "on", batches(range(1, 6)), profile_steps=(2, 4), **kwargs)
  assert len(profile_files(tmp_path / "on")) == 1
  assert traced == [False, True, True, False, False]
  traced.clear()
  train(tmp_path / "off", batches(range(1, 6)), **kwargs)
  assert not (tmp_path / "off" / "profile").exists()
  assert traced == [False] * 5


@pytest.mark.parametrize("steps", [(0, 3), (3, 3), (2, 12), (1, 2, 3), (1.0, 2), "1,2"])
def test_bad_profile_steps_are_rejected(steps):
  with pytest.raises(ValueError, match=r"config.profile_steps must be \(start, stop\) with 1 <="):
    loop.check_profile_steps(steps, total_steps=10)
