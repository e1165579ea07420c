"""Fault drills: stops, kills, full disks and damaged checkpoints leave a run resumable.

The multi-process drills train a small sharded model with the shared training loop
(`lavin_jax.train.loop`) in two `jax.distributed` processes on 127.0.0.1, reading a
checkpointable Grain pipeline; every wait is bounded and every child reaped.
"""

import errno
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

from flax import struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import processes
import pytest

from lavin_jax.io import bundle
from lavin_jax.train import checkpoint

HERE = pathlib.Path(__file__).resolve().parent
TIMEOUT = 300  # seconds for one worker, compile included
STEPS = 60


def _two_workers(tmp_path, name, workdir):
  port = processes.free_port()
  return [
    processes.spawn(__file__, tmp_path / f"{name}{i}.log", "train", workdir, 2, i, port)
    for i in range(2)
  ]


def _logged_steps(workdir) -> list[int]:
  path = pathlib.Path(workdir) / "metrics.jsonl"
  if not path.exists():
    return []
  return [json.loads(line)["step"] for line in path.read_text().splitlines() if line]


def _checked(procs, tmp_path, name):
  for i, (proc, _) in enumerate(procs):
    assert proc.returncode == 0, (tmp_path / f"{name}{i}.log").read_text()[-3000:]


def test_sigterm_to_one_process_saves_the_same_step_and_resumes_exactly(tmp_path):
  interrupted, reference = tmp_path / "interrupted", tmp_path / "reference"
  procs = _two_workers(tmp_path, "first", interrupted)
  try:
    deadline = time.monotonic() + TIMEOUT
    while len(_logged_steps(interrupted)) < 3:  # training is under way on both
      assert time.monotonic() < deadline and all(p.poll() is None for p, _ in procs)
      time.sleep(0.05)
    procs[1][0].send_signal(signal.SIGTERM)
  finally:
    processes.reap(procs, TIMEOUT)
  _checked(procs, tmp_path, "first")
  with checkpoint.CheckpointManager(interrupted / "checkpoints", save_every=1000) as ckpt:
    stopped_at = ckpt.latest_step()
  assert 3 <= stopped_at < STEPS  # both processes saved this one step and left
  assert max(_logged_steps(interrupted)) == stopped_at

  resumed = _two_workers(tmp_path, "resume", interrupted)
  processes.reap(resumed, TIMEOUT)
  _checked(resumed, tmp_path, "resume")
  whole = _two_workers(tmp_path, "whole", reference)
  processes.reap(whole, TIMEOUT)
  _checked(whole, tmp_path, "whole")

  a, b = np.load(interrupted / "result.npz"), np.load(reference / "result.npz")
  np.testing.assert_array_equal(a["w"], b["w"])  # parameters bit for bit
  _, saved = bundle.load_bundle(interrupted / "bundle")  # written by both processes
  np.testing.assert_array_equal(saved["jdit"]["w"], a["w"])
  np.testing.assert_array_equal(saved["stvae"]["w"], np.arange(4.0))
  # The data position was restored: every step after the resume saw the same batch.
  losses = lambda d: {r["step"]: r["loss"] for r in map(json.loads, open(d / "metrics.jsonl"))}
  after = {s: v for s, v in losses(interrupted).items() if s > stopped_at}
  assert after and after == {s: losses(reference)[s] for s in after}


def test_sigkill_during_a_save_keeps_the_previous_checkpoint(tmp_path):
  proc, log = processes.spawn(
    __file__, tmp_path / "kill.log", "kill_during_save", tmp_path / "ckpt"
  )
  processes.reap([(proc, log)], TIMEOUT)
  assert proc.returncode == -signal.SIGKILL, (tmp_path / "kill.log").read_text()[-3000:]
  leftovers = [p.name for p in (tmp_path / "ckpt").iterdir() if p.name != "1"]
  with checkpoint.CheckpointManager(tmp_path / "ckpt", save_every=1) as ckpt:
    assert ckpt.all_steps() == [1]  # the half-written step 2 is not a checkpoint
    state, _ = ckpt.restore({"w": jnp.zeros(8)})
  np.testing.assert_array_equal(state["w"], np.arange(8.0))
  assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["1"], leftovers


def _truncate_largest_array_file(step_dir: pathlib.Path) -> None:
  files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and "/d/" in str(p)]
  largest = max(files, key=lambda p: p.stat().st_size)
  data = largest.read_bytes()
  largest.write_bytes(data[: len(data) // 2])


def test_a_damaged_checkpoint_names_its_step_and_falls_back_on_request(tmp_path):
  rng = np.random.default_rng(0)
  states = {step: {"w": jnp.asarray(rng.random(50_000, np.float32))} for step in (1, 2)}
  with checkpoint.CheckpointManager(tmp_path, save_every=1) as ckpt:
    for step, state in states.items():
      ckpt.save(step, state)
  _truncate_largest_array_file(tmp_path / "2")
  with checkpoint.CheckpointManager(tmp_path, save_every=1) as ckpt:
    with pytest.raises(checkpoint.CorruptCheckpointError) as error:
      ckpt.restore(states[1])
    message = str(error.value)
    assert f"Checkpoint step 2 in {tmp_path} cannot be read" in message
    assert "restore_fallback=True to resume from step 1" in message
    restored, _ = ckpt.restore(states[1], fallback=True)
  np.testing.assert_array_equal(restored["w"], states[1]["w"])


def _mount_small_filesystem(path: pathlib.Path, size: str) -> bool:
  path.mkdir()
  mount = subprocess.run(
    ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
    capture_output=True,
    check=False,
  )
  return mount.returncode == 0


def test_a_full_disk_during_a_checkpoint_save_is_a_clear_error(tmp_path):
  disk = tmp_path / "disk"
  if not _mount_small_filesystem(disk, "600k"):
    pytest.skip("mounting a small tmpfs needs root; the bundle drill injects ENOSPC instead")
  try:
    small = {"w": jnp.arange(1000.0)}
    big = {"w": jnp.asarray(np.random.default_rng(0).random(400_000, np.float32))}
    with pytest.raises(OSError) as error:
      with checkpoint.CheckpointManager(disk / "ckpt", save_every=1) as ckpt:
        ckpt.save(1, small)
        ckpt.wait_until_finished()
        ckpt.save(2, big)
        ckpt.wait_until_finished()
    message = str(error.value)
    assert "Saving checkpoint step 2" in message and "No space left on device" in message
    assert "step 1, is intact" in message
    with checkpoint.CheckpointManager(disk / "ckpt", save_every=1) as ckpt:
      assert ckpt.all_steps() == [1]
      restored, _ = ckpt.restore(small)
    np.testing.assert_array_equal(restored["w"], small["w"])
  finally:
    subprocess.run(["umount", str(disk)], check=False)


def test_a_full_disk_during_a_bundle_save_keeps_the_old_bundle(tmp_path, monkeypatch):
  config = ml_collections.ConfigDict({"stvae": {"size": "tiny"}})
  bundle.save_bundle(tmp_path / "b", config, stvae_params={"w": np.ones(3, np.float32)})

  def full_disk(self, *args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(ocp.Checkpointer, "save", full_disk)
  with pytest.raises(OSError, match=r"Writing the bundle .* failed .*No space left.*intact"):
    bundle.save_bundle(tmp_path / "b", config, stvae_params={"w": np.zeros(3, np.float32)})
  assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no .partial left behind
  _, params = bundle.load_bundle(tmp_path / "b")
  np.testing.assert_array_equal(params["stvae"]["w"], np.ones(3, np.float32))


@pytest.mark.parametrize("process_id", [0, 1])
def test_distributed_start_alone_ends_with_one_line_naming_the_absent(tmp_path, process_id):
  """One process of two, the other never started: one error line, status 1, bounded."""
  port = processes.free_port()
  script = tmp_path / "start.py"
  script.write_text(
    "import sys\n"
    "from lavin_jax.parallel import mesh\n"
    f"mesh.initialize_distributed('127.0.0.1:{port}', 2, {process_id}, timeout_s=3)\n"
  )
  started = time.monotonic()
  proc, log = processes.spawn(script, tmp_path / "log.txt")
  processes.reap([(proc, log)], timeout=120)
  lines = (tmp_path / "log.txt").read_text().splitlines()
  assert proc.returncode == 1, lines[-20:]
  assert time.monotonic() - started < 60
  assert lines[-1].startswith("error: "), lines[-20:]
  assert not any("Check failure" in line for line in lines)
  absent = "process 1 did not connect" if process_id == 0 else "process 0, the coordinator"
  assert absent in lines[-1], lines[-1]


# ---------------------------------------------------------------------------------------
# Subprocesses.


class _State(struct.PyTreeNode):
  step: jax.Array
  w: jax.Array


class _Batches:
  """Grain pipeline of regression batches, deterministic by position (checkpointable)."""

  @staticmethod
  def make(process_index: int, process_count: int):
    import grain  # pylint: disable=g-import-not-at-top

    def batch(i):
      time.sleep(0.05)  # a slow input, so a stop request lands mid-run
      rng = np.random.default_rng([7, i])
      x = rng.standard_normal((4, 8), np.float32)
      return {"x": x, "y": x @ np.arange(8.0, dtype=np.float32)}

    ds = grain.MapDataset.range(10_000).map(batch)[process_index::process_count]
    return iter(ds.to_iter_dataset())


def _train(workdir, num_processes, process_id, port):
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  from lavin_jax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from lavin_jax.train import loop  # pylint: disable=g-import-not-at-top

  mesh_lib.initialize_distributed(f"127.0.0.1:{port}", num_processes, process_id)
  mesh = mesh_lib.create_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  replicated = mesh_lib.replicated(mesh)

  def step(state, batch):
    loss_fn = lambda w: jnp.mean((batch["x"] @ w - batch["y"]) ** 2)
    loss, grad = jax.value_and_grad(loss_fn)(state.w)
    return _State(step=state.step + 1, w=state.w - 0.05 * grad), {"loss": loss}

  step_fn = jax.jit(step, out_shardings=(replicated, replicated), donate_argnums=(0,))
  fresh = jax.device_put(_State(step=jnp.zeros((), jnp.int32), w=jnp.zeros(8)), replicated)
  data = _Batches.make(jax.process_index(), jax.process_count())
  config = ml_collections.ConfigDict({"name": "drill"})
  with checkpoint.CheckpointManager(os.path.join(workdir, "checkpoints"), save_every=1000) as ckpt:
    state = fresh
    if ckpt.latest_step() is not None:
      state, _ = ckpt.restore(fresh, data_iterator=data)
    batches = (mesh_lib.global_batch(b, mesh) for b in data)
    state = loop.run(
      step_fn,
      state,
      batches,
      ckpt=ckpt,
      total_steps=STEPS,
      log_every=1,
      workdir=workdir,
      config=config,
      data_iterator=data,
    )
  if int(state.step) == STEPS:
    # Both processes write one bundle: the replicated parameters, and a host array.
    bundle.save_bundle(
      os.path.join(workdir, "bundle"),
      ml_collections.ConfigDict({"jdit": {}, "stvae": {}}),
      jdit_params={"w": state.w},
      stvae_params={"w": np.arange(4.0, dtype=np.float32)},
    )
    if jax.process_index() == 0:
      np.savez(os.path.join(workdir, "result.npz"), w=np.asarray(state.w))


def _kill_during_save(directory):
  big = jax.random.normal(jax.random.key(0), (50_000_000,)).block_until_ready()  # 200 MB
  with checkpoint.CheckpointManager(directory, save_every=1) as ckpt:
    ckpt.save(1, {"w": jnp.arange(8.0)})
    ckpt.wait_until_finished()
    ckpt.save(2, {"w": big})  # written in the background
    time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
  if sys.argv[1] == "train":
    _train(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
  else:
    _kill_during_save(sys.argv[2])
