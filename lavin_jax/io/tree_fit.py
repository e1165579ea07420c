"""One report for "these weights do not fit that model": missing, unexpected, reshaped."""

from typing import Mapping, Sequence

_SHOWN = 20  # names listed per kind; the counts are always complete


def _listing(names: Sequence[str]) -> str:
  more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
  return f"({len(names)}): {list(names[:_SHOWN])!r}{more}"


def check_fits(
  stored: Mapping[str, tuple], wanted: Mapping[str, tuple], what: str, hint: str
) -> None:
  """Raises ValueError unless `stored` and `wanted` ({name: shape}) match exactly.

  Args:
    stored: name -> shape of what a file holds (in the layout compared).
    wanted: name -> shape the model needs, in the same layout.
    what: the file or checkpoint, named in the message.
    hint: which settings to check, e.g. "check hidden_size, depth, num_heads".
  """
  stored = {k: tuple(v) for k, v in stored.items()}
  wanted = {k: tuple(v) for k, v in wanted.items()}
  missing = sorted(wanted.keys() - stored.keys())
  unexpected = sorted(stored.keys() - wanted.keys())
  reshaped = [
    f"{k}: stored {stored[k]}, model {wanted[k]}"
    for k in sorted(stored.keys() & wanted.keys())
    if stored[k] != wanted[k]
  ]
  if missing or unexpected or reshaped:
    raise ValueError(
      f"{what} does not fit the model ({hint}):\n"
      f"  missing {_listing(missing)}\n"
      f"  unexpected {_listing(unexpected)}\n"
      f"  mismatched shapes {_listing(reshaped)}"
    )
