"""Packing sources into ArrayRecord shards and reading them back (launch/pack_source.py)."""

import json
import pathlib
import pickle
import subprocess
import sys

import dataset_files
import numpy as np
import pytest

from lavin_jax.data import packed
from lavin_jax.data import specs

ROOT = pathlib.Path(__file__).parent.parent


def _assert_same_examples(a, b):
  assert len(a) == len(b) and a.keys == b.keys and a.class_names == b.class_names
  for i in range(len(a)):
    x, y = a[i], b[i]
    assert set(x) == set(y)
    for key in x:
      if isinstance(x[key], str):
        assert x[key] == y[key]
      else:
        assert x[key].dtype == y[key].dtype, key
        np.testing.assert_array_equal(x[key], y[key], err_msg=key)


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
  return dataset_files.write_coco(tmp_path_factory.mktemp("coco"))


@pytest.mark.parametrize("annotations", ["instances", "keypoints", "panoptic"])
def test_packed_coco_reads_back_equal(annotations, coco_root, tmp_path):
  spec = f"coco:{coco_root},split=val2017,annotations={annotations}"
  source = specs.get_source(spec)
  metadata = packed.pack(source, tmp_path / "out", examples_per_shard=1, spec=spec)
  assert metadata["count"] == len(source) and len(metadata["shards"]) == len(source)
  back = specs.get_source(f"packed:{tmp_path / 'out'}")
  _assert_same_examples(source, back)
  assert getattr(back, "thing_classes", None) == getattr(source, "thing_classes", None)
  restored = pickle.loads(pickle.dumps(back))  # Grain workers pickle sources.
  np.testing.assert_array_equal(restored[0]["image"], source[0]["image"])
  assert not list(tmp_path.glob(".*partial"))


def test_packed_pairs_keep_names_and_repacking_replaces(tmp_path):
  for name in ("b", "a"):
    for part in ("input", "target"):
      dataset_files.save(tmp_path / "pairs" / f"{name}_{part}.png", dataset_files.photo(3))
  source = specs.get_source(f"templates:{tmp_path / 'pairs'}")
  packed.pack(source, tmp_path / "out", examples_per_shard=4)
  back = packed.PackedSource(tmp_path / "out")
  assert back[0]["name"] == "a" and isinstance(back[0]["name"], str)
  _assert_same_examples(source, back)
  photos = specs.get_source("photos")
  packed.pack(photos, tmp_path / "out", examples_per_shard=4)  # Replaces the pairs.
  again = packed.PackedSource(tmp_path / "out")
  assert len(again) == len(photos) and again.keys == ("image",)
  assert len(list((tmp_path / "out").glob("*.array_record"))) == -(-len(photos) // 4)


def test_packed_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="No packed source in .*launch/pack_source.py"):
    specs.get_source(f"packed:{tmp_path}")
  with pytest.raises(ValueError, match="examples_per_shard must be >= 1"):
    packed.pack(specs.get_source("photos"), tmp_path / "out", 0)
  packed.pack(specs.get_source("photos"), tmp_path / "out", 4)
  metadata = json.loads((tmp_path / "out" / packed.METADATA).read_text())
  (tmp_path / "out" / metadata["shards"][1]).unlink()
  with pytest.raises(FileNotFoundError, match="lacks 1 shard"):
    packed.PackedSource(tmp_path / "out")


def test_the_command_line(tmp_path):
  command = [sys.executable, str(ROOT / "launch" / "pack_source.py"), "--source=photos"]
  out = subprocess.run(
    command + [f"--output={tmp_path / 'photos'}"], capture_output=True, text=True, check=True
  )
  printed = json.loads(out.stdout.strip().splitlines()[-1])
  assert printed["count"] == len(specs.get_source("photos"))
  bad = subprocess.run(
    command[:2] + ["--source=voc:/nowhere", f"--output={tmp_path / 'x'}"],
    capture_output=True,
    text=True,
  )
  assert bad.returncode == 1 and bad.stderr.strip().startswith("error: No VOC2012")
