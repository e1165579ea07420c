"""What the benchmark scripts share: list flags, timed calls and the JSON-line output."""

import json
import time

from absl import flags
import jax

flags.disclaim_key_flags()  # The flags defined below belong to the calling script.


class _IntegerListParser(flags.ListParser):
  """A comma-separated list of integers."""

  def parse(self, argument):
    return [int(value) for value in super().parse(argument)]


def define_integers(name: str, default: str, help_: str) -> flags.FlagHolder:
  """A flag `--name=1,4` whose value is a list of integers."""
  return flags.DEFINE(
    _IntegerListParser(), name, default, help_, serializer=flags.CsvListSerializer(",")
  )


def define_choices(name: str, default, choices, help_: str) -> flags.FlagHolder:
  """A comma-separated list flag whose entries must be among `choices`."""
  holder = flags.DEFINE_list(name, default, f"{help_}, from {', '.join(choices)}.")

  def check(values):
    unknown = [value for value in values if value not in choices]
    if unknown:
      raise flags.ValidationError(
        f"unknown {name} {', '.join(unknown)}; choose from {', '.join(choices)}."
      )
    return True

  flags.register_validator(holder, check)
  return holder


def timed(fn):
  """(fn()'s result, once its arrays are ready; the wall-clock seconds that took)."""
  start = time.perf_counter()
  result = jax.block_until_ready(fn())
  return result, time.perf_counter() - start


def repeat_seconds(fn, repeats: int) -> list[float]:
  """The seconds of each of `repeats` timed calls of `fn`."""
  return [timed(fn)[1] for _ in range(repeats)]


def print_figure(figure: dict) -> None:
  """Prints one figure as one JSON line."""
  print(json.dumps(figure), flush=True)
