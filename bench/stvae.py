r"""ST-VAE speed and memory: images/s and frames/s at 256 px, large inputs with tiling.

  python bench/stvae.py [--size=released] [--dtype=float32]
  python bench/stvae.py --cases=image256,clip256
  python bench/stvae.py --weights=/path/to/stvae.pt   # released weights instead of random
  python bench/stvae.py --size=tiny --cases=image256 --repeats=1   # a quick check

Cases (each runs in its own process, so its peak memory is its own):
  image256   one 256x256 image, untiled: encode and decode seconds, images/s
  clip256    a --clip_frames-frame 256x256 clip, untiled: frames/s
  image1024  a 1024x1024 image, tiled (config tiles: 512 px, 25% overlap)
  clip65     a 65-frame 256x256 clip, tiled in chunks of --clip_chunk frames
Prints one JSON line per figure; times are medians over --repeats runs after a first
run that includes compilation (reported apart); peak memory is the process's peak RSS.

XLA's CPU scheduler favours concurrency over memory by default; on clips that costs 2-3x
the temporary memory for no speed on 2 cores, so the cases run with
XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=false unless
--nolow_memory_scheduler.
"""

import functools
import os
import resource
import subprocess
import sys

from absl import app
from absl import flags
import common
import jax
import jax.numpy as jnp
import numpy as np
import workloads

from lavin_jax import configs
from lavin_jax.models import stvae
from lavin_jax.models import stvae_tiling

CASES = ("image256", "clip256", "image1024", "clip65")

_SIZE = flags.DEFINE_enum("size", "released", configs.STVAE_SIZES, "ST-VAE size.")
_DTYPE = flags.DEFINE_string("dtype", configs.stvae().dtype, "ST-VAE compute dtype.")
_CASES = common.define_choices("cases", list(CASES), CASES, "Cases to run")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per figure (untiled cases).")
_CLIP_FRAMES = flags.DEFINE_integer("clip_frames", 9, "Frames of the clip256 case (1 + 4k).")
_CLIP_CHUNK = flags.DEFINE_integer("clip_chunk", 17, "Frames per temporal chunk, clip65.")
_LOW_MEMORY = flags.DEFINE_bool(
  "low_memory_scheduler", True, "Run cases with XLA's memory-minimising CPU scheduler."
)
_WEIGHTS = flags.DEFINE_string("weights", "", "Released stvae.pt; random weights if empty.")
_CHILD = flags.DEFINE_string("child", "", "Internal: run this one case in this process.")


def _params(module, config):
  """Released weights, or fan-in scaled Gaussian weights (fast on CPU; no denormals)."""
  if _WEIGHTS.value:
    from lavin_jax.convert import load_released_stvae  # pylint: disable=g-import-not-at-top

    return load_released_stvae(_WEIGHTS.value, config)[1]
  return workloads.random_stvae_params(module, np.random.default_rng(0))


def _peak_rss_gib():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _timed(fn, repeats):
  """(compile-and-first-run seconds, median seconds of `repeats` further runs)."""
  first = common.timed(fn)[1]
  times = common.repeat_seconds(fn, repeats)
  return first, float(np.median(times)) if times else first


def _video(frames, size):
  return jax.random.uniform(jax.random.key(1), (1, frames, size, size, 3), minval=-1, maxval=1)


def _run_case(case, module, params):
  """Yields figure dicts for one case."""
  enc = functools.partial(stvae_tiling.encode, module, params)
  dec = functools.partial(stvae_tiling.decode, module, params)
  if case in ("image256", "clip256"):
    frames = 1 if case == "image256" else _CLIP_FRAMES.value
    video = _video(frames, 256)
    z = enc(video, tiled=False)[0]
    enc_first, enc_s = _timed(lambda: enc(video, tiled=False), _REPEATS.value)
    dec_first, dec_s = _timed(lambda: dec(z, tiled=False), _REPEATS.value)
    unit = "images" if frames == 1 else "frames"
    info = {"resolution": 256, "frames": frames, "batch": 1}
    yield {
      "figure": f"stvae_encode_{unit}_per_second",
      "value": frames / enc_s,
      "seconds": enc_s,
      "first_run_seconds": enc_first,
      **info,
    }
    yield {
      "figure": f"stvae_decode_{unit}_per_second",
      "value": frames / dec_s,
      "seconds": dec_s,
      "first_run_seconds": dec_first,
      **info,
    }
    yield {"figure": f"stvae_{unit}_per_second", "value": frames / (enc_s + dec_s), **info}
  else:
    frames, size = (1, 1024) if case == "image1024" else (65, 256)
    tiling = {} if case == "image1024" else {"tile_frames": _CLIP_CHUNK.value}
    video = _video(frames, size)
    mean, enc_s = common.timed(lambda: enc(video, tiled=True, **tiling)[0])
    recon, dec_s = common.timed(lambda: dec(mean, tiled=True, **tiling))
    assert recon.shape == video.shape and bool(jnp.all(jnp.isfinite(recon)))
    yield {
      "figure": f"stvae_tiled_{case}_seconds",
      "value": enc_s + dec_s,
      "encode_seconds": enc_s,
      "decode_seconds": dec_s,
      "frames": frames,
      "resolution": size,
      "latents": list(mean.shape),
      "compile_included": True,
      **tiling,
    }
  yield {"figure": f"stvae_{case}_peak_memory_gib", "value": _peak_rss_gib()}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _CHILD.value:
    config = configs.stvae(_SIZE.value)
    config.dtype = _DTYPE.value
    module = stvae.STVAE(config)
    params = _params(module, config)
    context = {
      "config": ",".join(map(str, config.block_out_channels)),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "dtype": config.dtype,
      "devices": jax.device_count(),
      "cpus": os.cpu_count(),
    }
    for figure in _run_case(_CHILD.value, module, params):
      figure = {k: round(v, 4) if isinstance(v, float) else v for k, v in figure.items()}
      common.print_figure({**figure, **context})
    return
  passthrough = [a for a in sys.argv[1:] if not a.startswith("--cases")]
  env = dict(os.environ)
  if _LOW_MEMORY.value:
    env["XLA_FLAGS"] = (
      env.get("XLA_FLAGS", "") + " --xla_cpu_enable_concurrency_optimized_scheduler=false"
    ).strip()
  for case in _CASES.value:
    subprocess.run([sys.executable, __file__, f"--child={case}", *passthrough], check=True, env=env)


if __name__ == "__main__":
  app.run(main)
