"""Time to build the synthetic data set (default 'small' config) from scratch.

  python bench/synthetic_build.py [--config=small] [--num_workers=1]

Prints one JSON line: wall-clock seconds, CPU seconds of this process and its workers,
and the number of examples written.
"""

import resource
import tempfile
import time

from absl import app
from absl import flags
import common

from lavin_jax.data import synthetic

_CONFIG = flags.DEFINE_enum(
  "config", "small", [c.name for c in synthetic.CONFIGS], "Synthetic config name."
)
_NUM_WORKERS = flags.DEFINE_integer("num_workers", 1, "Rendering processes.")


def _cpu_seconds() -> float:
  return sum(
    resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
  )


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  with tempfile.TemporaryDirectory() as data_dir:
    wall, cpu = time.perf_counter(), _cpu_seconds()
    synthetic.build_synthetic(data_dir, _CONFIG.value, num_workers=_NUM_WORKERS.value)
    wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
    examples = sum(
      len(synthetic.load_synthetic(data_dir, _CONFIG.value, c, s))
      for c in synthetic.CONTENTS
      for s in synthetic.SPLITS
    )
  common.print_figure(
    {
      "figure": "synthetic_build",
      "config": _CONFIG.value,
      "num_workers": _NUM_WORKERS.value,
      "wall_seconds": round(wall, 2),
      "cpu_seconds": round(cpu, 2),
      "examples": examples,
    }
  )


if __name__ == "__main__":
  app.run(main)
