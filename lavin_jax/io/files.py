"""Atomic writes: a reader sees the old file (or directory) or the new one, never half.

Files are written to a temporary name in the same directory and renamed over the
target (`os.replace` is atomic on POSIX within one filesystem); a failed write removes
its temporary file and leaves the target as it was.
"""

import os
import pathlib
import shutil
import tempfile
from typing import Callable


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> pathlib.Path:
  """Calls `write(tmp_path)`, then renames tmp_path over `path`; returns `path`.

  The parent directory is created if missing. On any exception the temporary file is
  removed and `path` is untouched.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
  os.close(fd)
  try:
    write(tmp)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  return path


def atomic_write_text(path: str | os.PathLike, text: str) -> pathlib.Path:
  """Writes `text` (UTF-8) to `path` atomically."""
  return atomic_write(path, lambda tmp: pathlib.Path(tmp).write_text(text, encoding="utf-8"))


def replace_dir(new: str | os.PathLike, path: str | os.PathLike) -> None:
  """Moves the complete directory `new` to `path`, replacing any directory there.

  An old directory is first renamed to `<path>.old` and removed only after `new` is in
  place, so at every moment a complete directory exists at `path` or at `<path>.old`.
  """
  new, path = os.fspath(new), os.fspath(path)
  old = path + ".old"
  if os.path.exists(old):
    shutil.rmtree(old)
  if os.path.exists(path):
    os.rename(path, old)
  os.rename(new, path)
  if os.path.exists(old):
    shutil.rmtree(old)
