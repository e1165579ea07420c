"""Views of a source: some of its examples, or its examples changed as they are read.

Views keep the source's `keys`, `class_names` and `thing_classes` (where it has them)
unless told otherwise, so tasks check them as they check the source's.
"""

from typing import Any, Callable, Sequence

import numpy as np


class _View:
  def __init__(self, source, keys: Sequence[str] | None = None):
    self.source = source
    self.keys = tuple(source.keys if keys is None else keys)
    self.class_names = source.class_names
    if getattr(source, "thing_classes", None) is not None:
      self.thing_classes = source.thing_classes


class Subset(_View):
  """The examples `indices` of `source`, in that order."""

  def __init__(self, source, indices: Sequence[int]):
    super().__init__(source)
    self.indices = np.asarray(indices, np.int64)
    if self.indices.size and not 0 <= self.indices.min() <= self.indices.max() < len(source):
      raise ValueError(f"Subset indices must lie in [0, {len(source)}).")

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return self.source[int(self.indices[index])]

  def __repr__(self) -> str:
    return f"Subset({len(self)} of {self.source!r})"


class Mapped(_View):
  """The examples of `source`, each passed through `fn` as it is read."""

  def __init__(self, source, fn: Callable[[dict], dict], keys: Sequence[str] | None = None):
    super().__init__(source, keys)
    self.fn = fn

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return self.fn(self.source[index])

  def __repr__(self) -> str:
    return f"Mapped({self.source!r})"


def random_subset(source, count: int, seed: int) -> Subset:
  """`count` distinct examples of `source` drawn by `seed`, in source order."""
  if not 1 <= count <= len(source):
    raise ValueError(f"Cannot draw {count} examples from a source of {len(source)}.")
  return Subset(source, np.sort(np.random.default_rng(seed).choice(len(source), count, False)))
