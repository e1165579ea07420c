"""ST-VAE training in two local processes (jax.distributed, CPU gloo collectives) equals
one process.

Each worker has 2 virtual CPU devices, joins through 127.0.0.1:<free port> and runs
`vae.train` for 3 steps (adversarial term, discriminator and EMA on; checkpoint and
reconstruction report at the end) on a data=2 x fsdp=2 mesh, preparing only its own
rows of every batch (tests/test_vae_training.py checks those rows for clip batches
too). A third process trains with one device. Losses, final params (ST-VAE, EMA, discriminator) and
the report must agree to float32 reduction-order tolerance; the AdamW eps is 1, as in
tests/test_vae_sharding.py.
"""

import json
import os
import sys

import numpy as np
import processes

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = 900  # seconds for the slowest process, compiles included


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
  np.testing.assert_allclose(multi["report"], single["report"], rtol=1e-5)
  assert len([k for k in single.files if k.startswith("disc_params/")]) > 0
  for key in single.files:
    if key.startswith(("params/", "ema_params/", "disc_params/")):
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
  import ml_collections  # pylint: disable=g-import-not-at-top

  sys.path.insert(0, HERE)
  import tiny_vae  # pylint: disable=g-import-not-at-top

  from lavin_jax.train import vae  # pylint: disable=g-import-not-at-top

  config = tiny_vae.config(
    total_steps=3, checkpoint_every=3, batch_size=4, adv_weight=0.5, disc_start=1, ema_decay=0.9
  )
  config.optimizer.lr, config.optimizer.eps = 0.1, 1.0
  config.mesh = {"data": 2, "fsdp": 2} if num_processes > 1 else {"data": 1}
  config.report_sources = ml_collections.ConfigDict({"photos": "photos"})
  config.report_examples = 2
  state = vae.train(config, workdir, tiny_vae.stills(6))
  gathered = {
    name: multihost_utils.process_allgather(getattr(state, name), tiled=True)
    for name in ("params", "ema_params", "disc_params")
  }
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      records = [json.loads(line) for line in f]
    flat = {
      f"{name}/{jax.tree_util.keystr(p)}": np.asarray(x)
      for name, tree in gathered.items()
      for p, x in jax.tree_util.tree_leaves_with_path(tree)
    }
    np.savez(
      os.path.join(workdir, "result.npz"),
      losses=np.array([r["loss"] for r in records if "loss" in r]),
      report=np.array([records[-1][k] for k in ("photos/psnr", "photos/ssim")]),
      processes=jax.process_count(),
      devices=jax.device_count(),
      **flat,
    )


if __name__ == "__main__":
  _main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
