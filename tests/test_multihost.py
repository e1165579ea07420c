"""Two local processes (jax.distributed, CPU gloo collectives) train like one process.

Each worker has 2 virtual CPU devices, joins through 127.0.0.1:<free port>, feeds only
its own half of every global batch, and runs `dit.train` for 3 steps on a
data=2 x fsdp=2 mesh (checkpointing included). A third process trains on the whole
batches with one device. Losses and final params must agree to float32 reduction-order
tolerance (rtol 1e-5; params 1e-6 absolute).
"""

import json
import os
import sys

import numpy as np
import processes

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = 420  # seconds for the slowest process, compile included


def test_two_processes_match_one_process(tmp_path):
  port = str(processes.free_port())
  # The workers share one workdir, as hosts share a file system.
  runs = {
    "worker0": ("multi", "2", "0", port),
    "worker1": ("multi", "2", "1", port),
    "single": ("single", "1", "0", "0"),
  }
  procs = {
    name: processes.spawn(
      __file__,
      tmp_path / f"{name}.log",
      tmp_path / workdir,
      *args,
      devices=2 if name != "single" else 1,
    )
    for name, (workdir, *args) in runs.items()
  }
  processes.reap(procs.values(), TIMEOUT)
  for name, (proc, _) in procs.items():
    assert proc.returncode == 0, (name, (tmp_path / f"{name}.log").read_text()[-4000:])

  multi = np.load(tmp_path / "multi" / "result.npz")
  single = np.load(tmp_path / "single" / "result.npz")
  assert int(multi["processes"]) == 2 and int(multi["devices"]) == 4
  assert int(single["processes"]) == 1
  assert multi["losses"].shape == (3,)
  np.testing.assert_allclose(multi["losses"], single["losses"], rtol=1e-5)
  for key in single.files:
    if key.startswith("params/"):
      np.testing.assert_allclose(multi[key], single[key], atol=1e-6, err_msg=key)


# ---------------------------------------------------------------------------------------
# Subprocess: a worker of the 2-process run, or the 1-process reference.


def _main(workdir, num_processes, process_id, port):
  import jax  # pylint: disable=g-import-not-at-top

  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  from lavin_jax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top

  if num_processes > 1:
    mesh_lib.initialize_distributed(f"127.0.0.1:{port}", num_processes, process_id)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  sys.path.insert(0, HERE)
  import test_train_dit  # pylint: disable=g-import-not-at-top

  from lavin_jax.train import dit  # pylint: disable=g-import-not-at-top

  config = test_train_dit.tiny_config()
  config.total_steps, config.checkpoint_every = 3, 3
  config.mesh = {"data": 2, "fsdp": 2} if num_processes > 1 else {"data": 1}
  rng = np.random.default_rng(0)
  global_batches = [
    test_train_dit.latent_batch(rng, batch=4, pairs=2, num_pairs=np.array([2, 1, 2, 1]))
    for _ in range(config.total_steps)
  ]
  rows = slice(4 // num_processes * process_id, 4 // num_processes * (process_id + 1))
  local_batches = [{k: v[rows] for k, v in b.items()} for b in global_batches]

  state = dit.train(config, workdir, batches=iter(local_batches))
  params = multihost_utils.process_allgather(state.params, tiled=True)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      losses = [json.loads(line)["loss"] for line in f]
    flat = {
      "params/" + jax.tree_util.keystr(p): np.asarray(x)
      for p, x in jax.tree_util.tree_leaves_with_path(params)
    }
    np.savez(
      os.path.join(workdir, "result.npz"),
      losses=np.array(losses),
      processes=jax.process_count(),
      devices=jax.device_count(),
      **flat,
    )


if __name__ == "__main__":
  _main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
