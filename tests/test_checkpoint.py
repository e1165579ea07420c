"""Checkpoints: exact resume, atomic saves under SIGKILL, stop on SIGTERM/SIGINT,
restore onto another mesh, retention.

Cases that need a fresh process or another device count run this file as a child:
`python tests/test_checkpoint.py <case> <directory>`.
"""

import os
import pathlib
import select
import signal
import subprocess
import sys
import time

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from lavin_jax.train import checkpoint
from lavin_jax.train import state as train_state

# ----------------------------------------------------------------------------------
# A toy training loop: MLP, AdamW with clipping, EMA, per-step RNG, Grain batches.
# ----------------------------------------------------------------------------------
_MODEL = nn.Sequential([nn.Dense(16), nn.gelu, nn.Dense(1)])
_TX = optax.chain(
  optax.clip_by_global_norm(1.0), optax.adamw(1e-2, b1=0.9, b2=0.95, weight_decay=0.01)
)


def _example(i):
  rng = np.random.default_rng(int(i))
  x = rng.normal(size=(4,)).astype(np.float32)
  return {"x": x, "y": np.sin(x.sum(keepdims=True))}


def _dataset(epochs=1):
  return grain.MapDataset.range(64).repeat(epochs).map(_example).batch(4).to_iter_dataset()


def _config():
  return ml_collections.ConfigDict({"model": {"width": 16}, "lr": 1e-2, "sizes": (1, 2)})


def _init_state():
  params = _MODEL.init(jax.random.key(0), jnp.zeros((1, 4)))["params"]
  return train_state.create_train_state(params, _TX, jax.random.key_data(jax.random.key(1)))


@jax.jit
def _train_step(state, batch):
  key = jax.random.fold_in(state.rng, state.step)
  x = batch["x"] + 0.1 * jax.random.normal(key, batch["x"].shape)

  def loss_fn(params):
    return jnp.mean((_MODEL.apply({"params": params}, x) - batch["y"]) ** 2)

  return train_state.apply_gradients(state, jax.grad(loss_fn)(state.params), _TX, 0.9)[0]


def _train(state, iterator, num_steps):
  for _ in range(num_steps):
    state = _train_step(state, next(iterator))
  return state


def _assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(np.testing.assert_array_equal, a, b)


# ----------------------------------------------------------------------------------
# Child processes.
# ----------------------------------------------------------------------------------
def _run_child(case, directory, devices=1, **popen):
  env = dict(
    os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}"
  )
  return subprocess.Popen(
    [sys.executable, __file__, case, str(directory)],
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    **popen,
  )


def _finish(proc, timeout=300):
  try:
    out, err = proc.communicate(timeout=timeout)
  finally:
    proc.kill()
  assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{out}\n{err[-4000:]}"
  return out


def _wait_for_line(proc, prefix, timeout=300):
  """Reads the child's stdout until a line starts with prefix; returns that line."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    ready, _, _ = select.select([proc.stdout], [], [], 1.0)
    if ready:
      line = proc.stdout.readline()
      if line.startswith(prefix):
        return line
      if not line and proc.poll() is not None:
        break
  proc.kill()
  raise AssertionError(f"child never printed {prefix!r}:\n{proc.stderr.read()[-4000:]}")


def _child_resume(directory):
  """Restores step 3 in a new process and manager, trains 3 steps, saves step 6."""
  with checkpoint.CheckpointManager(directory, save_every=3) as ckpt:
    iterator = iter(_dataset())
    state, config = ckpt.restore(jax.eval_shape(_init_state), data_iterator=iterator)
    assert int(state.step) == 3 and config.to_json() == _config().to_json()
    ckpt.save(6, _train(state, iterator, 3), config=config, data_iterator=iterator)


def _child_killed_mid_save(directory):
  """Completes step 1, then stalls step 2 between writing and committing."""
  from orbax.checkpoint._src.path import atomicity  # pylint: disable=g-import-not-at-top

  ckpt = checkpoint.CheckpointManager(directory, save_every=1)
  ckpt.save(1, {"x": jnp.full((256, 256), 1.0)})
  ckpt.wait_until_finished()

  async def stall(self):
    del self
    print("WRITTEN", flush=True)
    time.sleep(600)

  atomicity.AtomicRenameTemporaryPath.finalize = stall
  ckpt.save(2, {"x": jnp.full((256, 256), 2.0)})
  ckpt.wait_until_finished()


def _child_stop_on_sigterm(directory):
  """Trains until SIGTERM, then saves the current step and exits normally."""
  iterator = iter(_dataset(epochs=100))
  state = _init_state()
  with (
    checkpoint.StopGuard() as guard,
    checkpoint.CheckpointManager(directory, save_every=1000) as ckpt,
  ):
    for step in range(1, 100000):
      state = _train_step(state, next(iterator))
      print(f"STEP {step}", flush=True)
      stopping = guard.stop_requested
      ckpt.save(step, state, data_iterator=iterator, force=stopping)
      if stopping:
        print(f"SAVED {step}", flush=True)
        return
      time.sleep(0.02)


def _mesh_state(mesh, spec, offset):
  w = jnp.arange(8 * 16, dtype=jnp.float32).reshape(8, 16) + offset
  sharding = jax.sharding.NamedSharding(mesh, spec)
  return {"w": jax.device_put(w, sharding), "step": jnp.int32(offset)}


def _expected_w(offset):
  return np.arange(8 * 16, dtype=np.float32).reshape(8, 16) + offset


def _child_mesh_save8(directory):
  assert jax.device_count() == 8
  mesh = jax.make_mesh((2, 4), ("data", "fsdp"))
  state = _mesh_state(mesh, jax.sharding.PartitionSpec("data", "fsdp"), 1)
  with checkpoint.CheckpointManager(directory, save_every=1) as ckpt:
    ckpt.save(1, state)


def _child_mesh_1(directory):
  assert jax.device_count() == 1
  with checkpoint.CheckpointManager(directory, save_every=1) as ckpt:
    target = jax.eval_shape(lambda: {"w": jnp.zeros((8, 16)), "step": jnp.int32(0)})
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    state, _ = ckpt.restore(checkpoint.with_shardings(target, {"w": one, "step": one}))
    np.testing.assert_array_equal(state["w"], _expected_w(1))
    ckpt.save(2, {"w": state["w"] + 1, "step": state["step"] + 1})


def _child_mesh_8(directory):
  assert jax.device_count() == 8
  mesh = jax.make_mesh((4, 2), ("data", "fsdp"))
  spec = jax.sharding.PartitionSpec("fsdp", "data")
  target = jax.eval_shape(lambda: {"w": jnp.zeros((8, 16)), "step": jnp.int32(0)})
  shardings = {
    "w": jax.sharding.NamedSharding(mesh, spec),
    "step": jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()),
  }
  with checkpoint.CheckpointManager(directory, save_every=1) as ckpt:
    state, _ = ckpt.restore(checkpoint.with_shardings(target, shardings))
  np.testing.assert_array_equal(state["w"], _expected_w(2))
  assert int(state["step"]) == 2
  assert state["w"].sharding.is_equivalent_to(shardings["w"], 2)
  assert {s.data.shape for s in state["w"].addressable_shards} == {(4, 4)}


_CHILDREN = {
  "resume": _child_resume,
  "killed_mid_save": _child_killed_mid_save,
  "stop_on_sigterm": _child_stop_on_sigterm,
  "mesh_save8": _child_mesh_save8,
  "mesh_1": _child_mesh_1,
  "mesh_8": _child_mesh_8,
}


# ----------------------------------------------------------------------------------
# Tests.
# ----------------------------------------------------------------------------------
def test_exact_resume_in_a_new_process(tmp_path):
  straight = _train(_init_state(), iter(_dataset()), 6)
  iterator = iter(_dataset())
  with checkpoint.CheckpointManager(tmp_path, save_every=3) as ckpt:
    assert ckpt.save(
      3, _train(_init_state(), iterator, 3), config=_config(), data_iterator=iterator
    )
  _finish(_run_child("resume", tmp_path))
  with checkpoint.CheckpointManager(tmp_path, save_every=3) as ckpt:
    assert ckpt.all_steps() == [3, 6]
    resumed, config = ckpt.restore(_init_state())
  assert int(resumed.step) == 6
  _assert_trees_equal(resumed, straight)  # params, EMA, optimizer state, step, rng
  assert config.to_dict() == {"model": {"width": 16}, "lr": 1e-2, "sizes": [1, 2]}


def test_killed_save_leaves_previous_checkpoint(tmp_path):
  proc = _run_child("killed_mid_save", tmp_path)
  _wait_for_line(proc, "WRITTEN")
  proc.send_signal(signal.SIGKILL)
  proc.wait(timeout=60)
  partial = [p.name for p in tmp_path.iterdir() if p.name.startswith("2.")]
  assert partial, "the killed save left no temporary directory: nothing was tested"
  assert not (tmp_path / "2").exists()
  with checkpoint.CheckpointManager(tmp_path, save_every=1) as ckpt:
    assert ckpt.all_steps() == [1]
    state, _ = ckpt.restore({"x": jnp.zeros((256, 256))})
    np.testing.assert_array_equal(state["x"], 1.0)
    assert ckpt.save(2, {"x": jnp.full((256, 256), 3.0)})
    ckpt.wait_until_finished()
    assert ckpt.all_steps() == [1, 2]
  assert not any(p.name.startswith("2.") for p in tmp_path.iterdir())


def test_sigterm_saves_and_exits_cleanly(tmp_path):
  proc = _run_child("stop_on_sigterm", tmp_path)
  _wait_for_line(proc, "STEP 3")
  proc.send_signal(signal.SIGTERM)
  saved = int(_finish(proc).split("SAVED ")[-1])
  assert saved >= 3
  iterator = iter(_dataset(epochs=100))
  with checkpoint.CheckpointManager(tmp_path, save_every=1000) as ckpt:
    assert ckpt.all_steps() == [saved]
    state, _ = ckpt.restore(_init_state(), data_iterator=iterator)
  _assert_trees_equal(state, _train(_init_state(), iter(_dataset(epochs=100)), saved))


def test_sigint_sets_the_flag_then_a_second_one_interrupts():
  # Python's own handler, as in a foreground run: a background job inherits SIGINT
  # ignored, and the guard then hands a second SIGINT back to that (ignored).
  outer = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    with checkpoint.StopGuard() as stop:
      assert not stop.stop_requested
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(0.1)
      assert stop.stop_requested and stop.received == signal.SIGINT
      with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1.0)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
  finally:
    signal.signal(signal.SIGINT, outer)


def test_restore_onto_other_meshes(tmp_path):
  _finish(_run_child("mesh_save8", tmp_path, devices=8))  # 2x4 mesh
  _finish(_run_child("mesh_1", tmp_path, devices=1))  # one device, saves step 2
  _finish(_run_child("mesh_8", tmp_path, devices=8))  # 4x2 mesh, other partition


def test_save_interval_and_retention(tmp_path):
  with checkpoint.CheckpointManager(tmp_path, save_every=2, keep=2) as ckpt:
    saved = [s for s in range(1, 10) if ckpt.save(s, {"x": jnp.full((3,), float(s))})]
    assert saved == [2, 4, 6, 8]
    assert ckpt.save(9, {"x": jnp.full((3,), 9.0)}, force=True)
    ckpt.wait_until_finished()
    assert ckpt.all_steps() == [8, 9] and ckpt.latest_step() == 9
    state, config = ckpt.restore({"x": jnp.zeros(3)}, step=8)
  np.testing.assert_array_equal(state["x"], 8.0)
  assert config is None


def test_data_iterator_position_is_restored(tmp_path):
  iterator = iter(_dataset())
  next(iterator), next(iterator)
  with checkpoint.CheckpointManager(tmp_path, save_every=1) as ckpt:
    ckpt.save(1, {"x": jnp.zeros(1)}, data_iterator=iterator)
    expected = next(iterator)
    fresh = iter(_dataset())
    ckpt.restore({"x": jnp.zeros(1)}, data_iterator=fresh)
  _assert_trees_equal(next(fresh), expected)


def test_bad_inputs(tmp_path):
  with pytest.raises(ValueError, match="save_every"):
    checkpoint.CheckpointManager(tmp_path, save_every=0)
  with checkpoint.CheckpointManager(tmp_path, save_every=1) as ckpt:
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
      ckpt.restore({"x": jnp.zeros(3)})
    ckpt.save(1, {"x": jnp.zeros(3), "y": jnp.zeros(2)})
    ckpt.wait_until_finished()
    with pytest.raises(ValueError, match=r"mismatched shapes \(1\).*x: stored \(3,\)"):
      ckpt.restore({"x": jnp.zeros(4), "y": jnp.zeros(2)})
    with pytest.raises(ValueError, match=r"missing \(1\): \['z'\]"):
      ckpt.restore({"x": jnp.zeros(3), "y": jnp.zeros(2), "z": jnp.zeros(1)})
    with pytest.raises(ValueError, match="no data-iterator state"):
      ckpt.restore({"x": jnp.zeros(3), "y": jnp.zeros(2)}, data_iterator=iter(_dataset()))
    with pytest.raises(FileNotFoundError, match="step 7"):
      ckpt.restore({"x": jnp.zeros(3), "y": jnp.zeros(2)}, step=7)


if __name__ == "__main__":
  _CHILDREN[sys.argv[1]](pathlib.Path(sys.argv[2]))


def test_export_bundle_loads_in_one_call(tmp_path):
  import tiny_model  # pylint: disable=g-import-not-at-top

  from lavin_jax.inference import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
  from lavin_jax.models import jdit  # pylint: disable=g-import-not-at-top

  model_config = tiny_model.tiny_model_config()
  jdit_params, vae_params = tiny_model.tiny_model_params(model_config)
  config = ml_collections.ConfigDict({"model": model_config.jdit, "vae": model_config.stvae})
  checkpoint.export_bundle(
    tmp_path / "bundle", jdit_params, config, vae_params=vae_params, dtype="bfloat16"
  )
  pipe = pipeline_lib.Pipeline.from_bundle(tmp_path / "bundle")
  assert pipe.config.jdit.hidden_size == model_config.jdit.hidden_size
  _, unrolled = jdit.unrolled(model_config.jdit, jdit_params)  # the pipeline's layout
  for got, want in zip(jax.tree.leaves(pipe.jdit_params), jax.tree.leaves(unrolled)):
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=1e-2, atol=1e-6)
  for got, want in zip(jax.tree.leaves(pipe.stvae_params), jax.tree.leaves(vae_params)):
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=1e-2, atol=1e-6)
