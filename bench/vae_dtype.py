r"""The frozen ST-VAE's encode in bfloat16 against float32: how far the latents move.

  python bench/vae_dtype.py [--sizes=tiny,released] [--resolution=32] [--data_dir=DIR]
      [--weights=tests/fixtures/stvae/vae_state.pt]

Inputs: the built-in synthetic scenes (stills and 5-frame clips of `synthetic:tiny`,
built in --data_dir on first use) and scikit-image's photographs, centre-cropped to
--resolution. Params: a random init (seed 0) of each ST-VAE size (no trained weights are
at hand), and with --weights those of a released-layout file of the tiny size (the test
fixture's random weights). One JSON line per (params, size, inputs):
  stvae_bf16_encode_error  ||mean_bf16 - mean_f32|| / ||mean_f32|| over the posterior
                           means of every clip; also the largest absolute difference
                           over the standard deviation of the float32 means
  jdit_bf16_velocity_error the same measure of J-DiT's velocity (tiny, random init plus
                           N(0, 0.02) on every parameter, so no layer is zero; its
                           default compute dtype is bfloat16) on the photographs' float32
                           latents at t = 0.5, each photograph its own condition: the
                           error training accepts already
"""

import functools
import os
import tempfile

from absl import app
from absl import flags
import common
import jax
import numpy as np

from lavin_jax import convert
from lavin_jax.configs import models as model_configs
from lavin_jax.data import episodes
from lavin_jax.data import specs
from lavin_jax.io import pixels as pixels_lib
from lavin_jax.models import jdit
from lavin_jax.models import stvae

_SIZES = common.define_choices("sizes", ["tiny", "released"], model_configs.STVAE_SIZES, "Sizes")
_RESOLUTION = flags.DEFINE_integer("resolution", 32, "Square side in pixels.")
_WEIGHTS = flags.DEFINE_string("weights", "", "A released-layout tiny ST-VAE file ('': none).")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "Where the synthetic scenes are ('': a temp dir).")


def _clips(spec: str, key: str, resolution: int) -> np.ndarray:
  """Every example of `spec`, centre-cropped: (N, T, H, W, 3) in [-1, 1]."""
  source = specs.get_source(spec)
  fitted = [episodes.fit_example(source[i], resolution)[key] for i in range(len(source))]
  clips = pixels_lib.to_float(np.stack(fitted))
  return clips[:, None] if key == "image" else clips


def _means(size: str, dtype: str, params, clips: np.ndarray) -> np.ndarray:
  config = model_configs.stvae(size)
  config.dtype = dtype
  encode = jax.jit(lambda p, x: stvae.STVAE(config).apply({"params": p}, x, method="encode")[0])
  return np.concatenate([np.asarray(encode(params, c[None])) for c in clips])


def _velocity_error(latents: np.ndarray) -> dict:
  """bf16 vs float32 velocity of a random-init tiny J-DiT on (N, T', h, w, 16) latents."""
  noise = np.random.default_rng(0).standard_normal(latents.shape).astype(np.float32)
  x, t = 0.5 * (latents + noise), np.full((len(latents),), 0.5, np.float32)
  config = model_configs.jdit("tiny")
  params = jax.jit(jdit.JDiT(config).init)(jax.random.PRNGKey(0), x, t, latents)["params"]
  rng = np.random.default_rng(1)  # The zero-initialised output layers moved off zero.
  params = jax.tree.map(lambda p: p + rng.normal(0, 0.02, p.shape).astype(p.dtype), params)
  out = {}
  for dtype in ("float32", "bfloat16"):
    config.dtype = dtype
    out[dtype] = np.asarray(jax.jit(jdit.JDiT(config).apply)({"params": params}, x, t, latents))
  error = out["bfloat16"] - out["float32"]
  return {
    "figure": "jdit_bf16_velocity_error",
    "value": float(np.linalg.norm(error) / np.linalg.norm(out["float32"])),
    "max_abs_over_std": float(np.abs(error).max() / out["float32"].std()),
    "size": "tiny",
    "params": "random init",
    "inputs": "photos",
  }


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  res = _RESOLUTION.value
  with tempfile.TemporaryDirectory() as scratch:
    data_dir = _DATA_DIR.value or scratch
    inputs = {
      "synthetic_stills": _clips(
        f"synthetic:tiny,content=images,data_dir={data_dir}", "image", res
      ),
      "synthetic_clips": _clips(f"synthetic:tiny,content=clips,data_dir={data_dir}", "video", res),
      "photos": _clips("photos", "image", res),
    }
  runs = []
  for size in _SIZES.value:
    module = stvae.STVAE(model_configs.stvae(size))
    init = jax.jit(functools.partial(module.init, method="encode"))
    runs.append((size, "random init", init(jax.random.PRNGKey(0), inputs["photos"][:1])["params"]))
  if _WEIGHTS.value:
    runs.append(
      (
        "tiny",
        _WEIGHTS.value,
        convert.load_released_stvae(_WEIGHTS.value, model_configs.stvae("tiny"))[1],
      )
    )
  for size, origin, params in runs:
    for name, clips in inputs.items():
      reference = _means(size, "float32", params, clips)
      low = _means(size, "bfloat16", params, clips)
      common.print_figure(
        {
          "figure": "stvae_bf16_encode_error",
          "value": float(np.linalg.norm(low - reference) / np.linalg.norm(reference)),
          "max_abs_over_std": float(np.abs(low - reference).max() / reference.std()),
          "size": size,
          "params": origin,
          "inputs": name,
          "clips": len(clips),
          "frames": clips.shape[1],
          "resolution": res,
          "backend": jax.default_backend(),
          "cpus": os.cpu_count(),
        }
      )
  size, _, params = runs[-1]
  latents = stvae.normalize_latents(
    _means(size, "float32", params, inputs["photos"]), model_configs.stvae(size)
  )
  common.print_figure({**_velocity_error(latents), "resolution": res})


if __name__ == "__main__":
  app.run(main)
