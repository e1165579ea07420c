r"""Packs a source into ArrayRecord shards, read back as 'packed:DIR' (lavin_jax.data.packed).

  python launch/pack_source.py --source=coco:/data/coco,split=train2017 \
      --output=/data/packed/coco_train2017
  # then, on every training host: --config.source=packed:/data/packed/coco_train2017

Prints the written metadata (count, keys, shards) as one JSON line.
"""

import json

from absl import app
from absl import flags

from lavin_jax import cli
from lavin_jax.data import packed
from lavin_jax.data import specs

_SOURCE = flags.DEFINE_string("source", None, "Source spec (lavin_jax.data.specs).")
_OUTPUT = flags.DEFINE_string("output", None, "Directory to write (replaced when complete).")
_EXAMPLES_PER_SHARD = flags.DEFINE_integer(
  "examples_per_shard", 1024, "Examples per ArrayRecord file."
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  metadata = packed.pack(
    specs.get_source(_SOURCE.value), _OUTPUT.value, _EXAMPLES_PER_SHARD.value, _SOURCE.value
  )
  print(json.dumps({k: metadata[k] for k in ("count", "keys", "shards")}))


if __name__ == "__main__":
  flags.mark_flags_as_required(["source", "output"])
  cli.run(main)
