"""Local worker processes for the multi-process tests: free ports, spawns, bounded reaps."""

import os
import socket
import subprocess
import sys


def free_port() -> int:
  """A TCP port on 127.0.0.1 that no one listens on now."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def spawn(script, log_path, *args, devices: int = 1):
  """(process, log) of `python script args...` on CPU with `devices` virtual devices."""
  env = dict(
    os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}"
  )
  log = open(log_path, "w")
  proc = subprocess.Popen(
    [sys.executable, str(script), *map(str, args)],
    env=env,
    stdout=log,
    stderr=subprocess.STDOUT,
  )
  return proc, log


def reap(procs, timeout: float) -> None:
  """Waits for every (process, log) at most `timeout` s each; kills what is left."""
  try:
    for proc, _ in procs:
      proc.wait(timeout=timeout)
  finally:
    for proc, log in procs:
      if proc.poll() is None:
        proc.kill()
      proc.wait()
      log.close()
