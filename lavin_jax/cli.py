"""Command-line entry points: absl flags in; a user's mistake out as one line.

`run(main)` is `absl.app.run(main)`, except that an error caused by the input (a bad
value, a missing or unreadable file, training that diverged) ends the program with
`error: <what is wrong and how to fix it>` on stderr and exit status 1, and no
traceback. Any other exception is a bug and keeps its traceback. `--debug` (or the
environment variable LAVIN_JAX_DEBUG=1) shows the traceback of every error.
"""

import ast
import os
import re
import sys
from typing import Callable

from absl import app
from absl import flags

from lavin_jax.parallel import mesh as mesh_lib

DEBUG_ENV = "LAVIN_JAX_DEBUG"
# Errors the package raises for bad input: ValueError (and its subclasses, such as the
# checkpoint readers' format errors), missing or unreadable files, and a diverged run.
USER_ERRORS = (ValueError, OSError, FloatingPointError)


def one_line(error: BaseException) -> str:
  """`error: <message>` with the message's lines joined into one."""
  message = " ".join(str(error).split()) or type(error).__name__
  return f"error: {message}"


def _debugging() -> bool:
  debug = flags.FLAGS["debug"].value if "debug" in flags.FLAGS else False
  return debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _flag_error(error: BaseException) -> str:
  """The cause of a flag or config-file error: the last 'SomeError: message' it quotes."""
  text = str(error)
  if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":  # a quoted repr
    text = ast.literal_eval(text)
  quoted = re.findall(r"^\s*\w*(?:Error|Exception): (.*)$", text, re.MULTILINE)
  cause = quoted[-1] if quoted else text
  if isinstance(error, (AttributeError, KeyError)) and cause.startswith("'"):
    return f"no config field {cause}"  # an override of a field the config lacks
  return cause


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with a bad flag or config override reported as one line."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError) as e:  # config overrides of unknown fields
    if _debugging():
      raise
    print(
      one_line(ValueError(_flag_error(e))) + " (--helpshort lists the flags)",
      file=sys.stderr,
      flush=True,
    )
    sys.exit(1)


def run(main: Callable[[list[str]], None]) -> None:
  """Runs `main` like `absl.app.run`, reporting USER_ERRORS as one line (see above)."""
  if "debug" not in flags.FLAGS:
    flags.DEFINE_bool("debug", False, f"Show tracebacks of every error (or {DEBUG_ENV}=1).")

  def checked(argv):
    try:
      main(argv)
    except USER_ERRORS as e:
      if _debugging():
        raise
      print(one_line(e), file=sys.stderr, flush=True)
      sys.exit(1)

  app.run(checked, flags_parser=parse_flags)


def distributed_flags() -> Callable[[], bool]:
  """Defines the multi-host flags; returns `start`, which starts jax.distributed from them.

  --coordinator_address, --num_processes and --process_id (or the JAX_COORDINATOR_ADDRESS,
  JAX_NUM_PROCESSES, JAX_PROCESS_ID environment variables), or --auto_distributed for
  the cluster's own (SLURM, Open MPI, Cloud TPU pods); see
  `lavin_jax.parallel.mesh.initialize_distributed`. Call `start()` first in `main`.
  """
  coordinator = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (multi-host)."
  )
  num_processes = flags.DEFINE_integer("num_processes", None, "Processes (multi-host).")
  process_id = flags.DEFINE_integer("process_id", None, "This process (multi-host).")
  auto = flags.DEFINE_bool(
    "auto_distributed",
    False,
    "Start jax.distributed from the cluster environment (SLURM, Open MPI, TPU pods).",
  )
  timeout = flags.DEFINE_float(
    "distributed_timeout",
    mesh_lib.DEFAULT_START_TIMEOUT_S,
    "Seconds every process may take to join the start (multi-host); then one error line.",
  )

  def start() -> bool:
    return mesh_lib.initialize_distributed(
      coordinator.value,
      num_processes.value,
      process_id.value,
      auto_detect=auto.value,
      timeout_s=timeout.value,
    )

  return start
