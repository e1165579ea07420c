r"""End to end over a template folder: PNG queries in, [query | prediction] PNGs out.

  python bench/folder.py [--size=0.1b] [--stvae=released] [--pairs=4] [--resolution=128]
      [--queries=20] [--batch_size=4] [--variants=standard,exact_cache,exact_cache_fixed]
      [--dtype=float32] [--stvae_dtype=float32]

What `launch/sample.py --task_dir=... --query=folder/` runs (`templates.predict_templates`):
the template's pairs are encoded once, then each batch of queries is encoded, sampled
(20-point guided Euler, the released settings) and decoded, and every result is written
as a PNG. Random weights; a template folder of `pairs` random pairs and `queries` random
query images are written to a temporary folder first. One warm-up pass over
`batch_size` queries compiles every shape; the timed pass then predicts the whole
folder. Variants: `standard` (the released layout), `exact_cache` (J-DiT with
independent_condition, sampling on its condition cache; pairs drawn per query) and
`exact_cache_fixed` (the same model, `--select_context=fixed`: one set of pairs whose
keys and values are computed once for the folder). One JSON line per variant with
`seconds_per_query`.

The released pipeline re-encodes every context image for every query: its per-query time
on the same shapes is (2 pairs + 1) ST-VAE encodes + one guided sampling + one decode,
each timed by the released-code harness (`--what sample,vae`).
"""

import pathlib
import tempfile

from absl import app
from absl import flags
import common
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
import workloads

from lavin_jax import configs
from lavin_jax.configs import sampling as sampling_configs
from lavin_jax.inference import loading
from lavin_jax.inference import pipeline as pipeline_lib
from lavin_jax.inference import templates
from lavin_jax.models import jdit
from lavin_jax.models import stvae

VARIANTS = ("standard", "exact_cache", "exact_cache_fixed")

_SIZE = flags.DEFINE_enum("size", "0.1b", configs.JDIT_SIZES, "J-DiT size.")
_STVAE = flags.DEFINE_enum("stvae", "released", configs.STVAE_SIZES, "ST-VAE size.")
_PAIRS = flags.DEFINE_integer("pairs", 4, "Context pairs per query (--num_prompt).")
_RESOLUTION = flags.DEFINE_integer("resolution", 128, "Image side in pixels.")
_QUERIES = flags.DEFINE_integer("queries", 20, "Query images in the folder.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 4, "Queries per sampling call.")
_VARIANTS = common.define_choices("variants", list(VARIANTS), VARIANTS, "Variants")
_DTYPE = flags.DEFINE_string("dtype", "float32", "J-DiT compute dtype.")
_STVAE_DTYPE = flags.DEFINE_string("stvae_dtype", configs.stvae().dtype, "ST-VAE compute dtype.")


def _write_images(folder: pathlib.Path, names, rng) -> None:
  folder.mkdir(parents=True, exist_ok=True)
  side = _RESOLUTION.value
  for name in names:
    pixels = rng.integers(0, 256, (side, side, 3), np.uint8)
    Image.fromarray(pixels).save(folder / f"{name}.png")


def _pipeline(independent: bool, rng) -> pipeline_lib.Pipeline:
  jdit_config = workloads.model_config(
    _SIZE.value, _DTYPE.value, [f"independent_condition={independent}"]
  )
  stvae_config = configs.stvae(_STVAE.value)
  stvae_config.dtype = _STVAE_DTYPE.value
  side = _RESOLUTION.value // workloads.VAE_FACTOR
  latents = jnp.zeros((1, 1, side, side, jdit_config.in_channels))
  jdit_params = workloads.random_params(jdit.JDiT(jdit_config), latents, latents, rng)
  stvae_params = workloads.random_stvae_params(stvae.STVAE(stvae_config), rng)
  config = ml_collections.ConfigDict({"jdit": jdit_config, "stvae": stvae_config})
  return pipeline_lib.Pipeline(config, jdit_params, stvae_params)


def bench(variant: str, root: pathlib.Path, rng) -> dict:
  independent = variant != "standard"
  select_context = "fixed" if variant == "exact_cache_fixed" else "random"
  pipe = loading.LoadedModel(_pipeline(independent, rng))
  settings = dict(
    select_context=select_context,
    height=_RESOLUTION.value,
    width=_RESOLUTION.value,
    num_prompt=_PAIRS.value,
    seed=0,
    sampling=sampling_configs.released(),
    batch_size=_BATCH_SIZE.value,
  )
  run = lambda queries, out: templates.predict_templates(
    pipe, root / "template", root / queries, root / out / variant, **settings
  )
  _, compile_seconds = common.timed(lambda: run("warmup", "warmup_out"))
  written, seconds = common.timed(lambda: run("queries", "out"))
  assert len(written) == _QUERIES.value and all(p.is_file() for p in written)
  return {
    "figure": "template_folder_end_to_end",
    "variant": variant,
    "independent_condition": independent,
    "select_context": select_context,
    "size": _SIZE.value,
    "stvae": _STVAE.value,
    "dtype": _DTYPE.value,
    "stvae_dtype": _STVAE_DTYPE.value,
    "pairs": _PAIRS.value,
    "resolution": _RESOLUTION.value,
    "queries": _QUERIES.value,
    "batch_size": _BATCH_SIZE.value,
    "grid_points": sampling_configs.released().num_steps,
    "backend": jax.default_backend(),
    "seconds": round(seconds, 2),
    "seconds_per_query": round(seconds / _QUERIES.value, 3),
    "warmup_seconds": round(compile_seconds, 2),
  }


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  rng = np.random.default_rng(0)
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(tmp)
    pairs = [f"pair{i}_{part}" for i in range(_PAIRS.value) for part in ("input", "target")]
    _write_images(root / "template", pairs, rng)
    _write_images(root / "queries", [f"q{i:03d}" for i in range(_QUERIES.value)], rng)
    _write_images(root / "warmup", [f"w{i}" for i in range(_BATCH_SIZE.value)], rng)
    for variant in _VARIANTS.value:
      common.print_figure(bench(variant, root, rng))


if __name__ == "__main__":
  app.run(main)
