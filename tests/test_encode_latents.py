"""launch/encode_latents.py: two processes write disjoint shards; a killed job resumes.

The runs encode the CPU smoke config (scikit-image's photographs, the image-only tasks,
a random-init tiny ST-VAE) at 32 px, two photographs per shard. Every wait is bounded.
"""

import filecmp
import json
import os
import pathlib
import re
import signal
import subprocess
import sys

import jax
import numpy as np
import processes

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
TIMEOUT = 420  # seconds for the slowest process, compile included
OVERRIDES = {
  "data.resolution": 32,
  "latents.examples_per_shard": 2,
  "latents.batch_size": 8,
}
KILL_AT_RECORD = 30  # 12 records a shard (2 photographs x 6 tasks): mid-way through shard 2


def _config(latents_dir):
  sys.path.insert(0, str(HERE))
  import test_train_dit  # pylint: disable=g-import-not-at-top

  config = test_train_dit.tiny_config()  # 'tiny,runlocal' with a smaller J-DiT
  config.update_from_flattened_dict(OVERRIDES)
  config.latents.dir = str(latents_dir)
  return config


def _env():
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")


def _launch(latents_dir, log_path, *flags):
  """The script as a subprocess, and its log file (stdout and stderr)."""
  command = [
    sys.executable,
    str(ROOT / "launch" / "encode_latents.py"),
    f"--config={ROOT / 'lavin_jax' / 'configs' / 'train_dit.py'}:tiny,runlocal",
    f"--config.latents.dir={latents_dir}",
    *(f"--config.{name}={value}" for name, value in OVERRIDES.items()),
    *flags,
  ]
  log = open(log_path, "w")
  return subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT), log


def _shards(directory):
  return sorted(
    p.relative_to(directory) for p in pathlib.Path(directory).glob("*/*/*.array_record")
  )


def test_two_processes_write_disjoint_shards_a_training_run_reads(tmp_path):
  from lavin_jax.train import dit  # pylint: disable=g-import-not-at-top

  port = processes.free_port()
  procs = [
    _launch(
      tmp_path / "latents",
      tmp_path / f"process{p}.log",
      f"--coordinator_address=127.0.0.1:{port}",
      "--num_processes=2",
      f"--process_id={p}",
    )
    for p in range(2)
  ]
  processes.reap(procs, TIMEOUT)
  logs = [(tmp_path / f"process{p}.log").read_text() for p in range(2)]
  for (proc, _), log in zip(procs, logs):
    assert proc.returncode == 0, log[-4000:]
  wrote = [
    {
      pathlib.Path(path).relative_to(tmp_path / "latents")
      for path in re.findall(r"\S+\.array_record", log)
    }
    for log in logs
  ]
  every = _shards(tmp_path / "latents")
  assert len(every) == 5 * 6  # 9 photographs in 5 shards, 6 tasks
  assert wrote[0] and wrote[1] and not wrote[0] & wrote[1]
  assert sorted(wrote[0] | wrote[1]) == every

  config = _config(tmp_path / "latents")
  config.total_steps, config.checkpoint_every = 2, 2
  before = {p: (tmp_path / "latents" / p).stat().st_mtime_ns for p in every}
  state = dit.train(config, str(tmp_path / "train"))
  assert int(state.step) == 2
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(jax.device_get(state.params)))
  assert {p: (tmp_path / "latents" / p).stat().st_mtime_ns for p in every} == before
  settings = json.loads((tmp_path / "latents" / "settings.json").read_text())
  assert settings["resolution"] == 32 and settings["vae"]["weights"].startswith("random init")

  # Killed mid-shard, then run again: the same shards.
  killed = subprocess.run(
    [sys.executable, __file__, str(tmp_path / "again")],
    cwd=ROOT,
    env=_env(),
    capture_output=True,
    text=True,
    timeout=TIMEOUT,
    check=False,
  )
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-4000:]
  partial = list((tmp_path / "again").glob("*/*/.*.partial"))
  assert partial, "the kill did not land mid-shard"
  done = _shards(tmp_path / "again")
  assert len(done) == 2 * 6  # shards 0 and 1
  rerun = _launch(tmp_path / "again", tmp_path / "rerun.log")
  processes.reap([rerun], TIMEOUT)
  assert rerun[0].returncode == 0, (tmp_path / "rerun.log").read_text()[-4000:]
  assert not list((tmp_path / "again").glob("*/*/.*.partial"))
  assert _shards(tmp_path / "again") == every
  for path in every:
    assert filecmp.cmp(tmp_path / "latents" / path, tmp_path / "again" / path, shallow=False), path


def test_without_a_destination_the_script_says_so(tmp_path):
  proc = subprocess.run(
    [
      sys.executable,
      str(ROOT / "launch" / "encode_latents.py"),
      f"--config={ROOT / 'lavin_jax' / 'configs' / 'train_dit.py'}:tiny,runlocal",
    ],
    cwd=tmp_path,
    env=_env(),
    capture_output=True,
    text=True,
    timeout=TIMEOUT,
    check=False,
  )
  assert proc.returncode == 1
  assert "error: Set --config.latents.dir or --workdir" in proc.stderr
  assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------
# Subprocess: an encoding job that dies (SIGKILL) in the middle of a shard.


def _main(latents_dir):
  from lavin_jax.data import shards  # pylint: disable=g-import-not-at-top
  from lavin_jax.train import dit  # pylint: disable=g-import-not-at-top

  encode_record, written = shards.encode_record, []

  def dying(pair):
    written.append(1)
    if len(written) == KILL_AT_RECORD:
      os.kill(os.getpid(), signal.SIGKILL)
    return encode_record(pair)

  shards.encode_record = dying
  dit.encode_latents(_config(latents_dir), None)


if __name__ == "__main__":
  _main(sys.argv[1])
