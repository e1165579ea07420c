"""Parsing of job-config arguments: '<name>[,flag...]' in big_vision's spirit."""


def parse_arg(arg: str | None, choices, default: str, flags=()) -> tuple[str, set[str]]:
  """'0.1b,runlocal' -> ('0.1b', {'runlocal'}); raises ValueError naming the choices."""
  name, *given = [a.strip() for a in (arg or default).split(",")]
  name = name or default
  if name not in choices:
    raise ValueError(
      f"Unknown config argument {name!r} in {arg!r}; choose one of {', '.join(choices)}."
    )
  unknown = sorted(set(given) - set(flags))
  if unknown:
    raise ValueError(
      f"Unknown config flags {unknown} in {arg!r}; known flags: {', '.join(flags) or 'none'}."
    )
  return name, set(given)
