"""Bounded waits between the processes of a multi-host run.

Every wait has a timeout; one that expires raises TimeoutError naming the processes
that did not arrive, instead of hanging the job. Single-process runs never wait. The
waits use the coordination service that `jax.distributed.initialize` starts (no device
collective), so a process stuck in a compile or dead on its host is reported too.
"""

import collections
import re

import jax
from jax._src import distributed

DEFAULT_TIMEOUT_S = 1800.0  # a generous bound, meant to cover the largest bundle write

_calls = collections.Counter()  # per-name call counts: ids are the same on every process


def _client():
  client = distributed.global_state.client
  if client is None:
    raise RuntimeError(
      "A multi-process run needs jax.distributed.initialize (lavin_jax.parallel.mesh."
      "initialize_distributed) before any coordination."
    )
  return client


def _unique(name: str) -> str:
  _calls[name] += 1
  return f"lavin_jax/{name}/{_calls[name]}"


def _missing(message: str) -> str:
  """Process indices named in a coordination-service timeout ('task:1' -> '1')."""
  tasks = sorted(set(re.findall(r"task:(\d+)", message)), key=int)
  return ", ".join(tasks) if tasks else "unknown"


def barrier(name: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
  """Waits until every process reaches the barrier `name`, for at most timeout_s."""
  if jax.process_count() == 1:
    return
  barrier_id = _unique(name)
  try:
    _client().wait_at_barrier(barrier_id, int(timeout_s * 1000))
  except jax.errors.JaxRuntimeError as e:
    raise TimeoutError(
      f"Process {jax.process_index()} waited {timeout_s:.0f} s at '{name}' for the other "
      f"processes; not arrived: {_missing(str(e))} (see their logs: a crash, a hang or a "
      "much slower host)."
    ) from e


def any_process(flag: bool, name: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
  """True if `flag` is True on any process; every process must call it (bounded)."""
  if jax.process_count() == 1:
    return flag
  key = _unique(name)
  _client().key_value_set(f"{key}/{jax.process_index()}", "1" if flag else "0")
  barrier(name, timeout_s)
  return any(value == "1" for _, value in _client().key_value_dir_get(f"{key}/"))
