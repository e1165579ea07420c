"""Guided sampling latency: the whole 20-point Euler loop with guidance in one jit.

  python bench/sample.py [--sizes=tiny,0.1b] [--pairs=4,8] [--resolution=256]
      [--num_steps=20] [--dtype=bfloat16] [--repeats=2]

Per figure: one example (batch 1) of K context pairs at `resolution` px (256 px ->
32 x 32 latents), J-DiT only (random weights, random latents: the ST-VAE's cost is in
bench/stvae.py). Compile time is reported apart from the median run time. The released
PyTorch code's numbers for the same shapes are in the project's PERF notes (e.g. 0.1B,
4 pairs, float32: 53.4 s). One JSON line per figure.
"""

import argparse
import json
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lavin_jax import configs
from lavin_jax import flow
from lavin_jax.models import jdit


def bench(size, pairs, args):
  config = configs.jdit(size)
  config.dtype = args.dtype
  model = jdit.JDiT(config)
  latent = args.resolution // 8
  x_shape = (1, 1, latent, latent, config.in_channels)
  cond_frames = 2 * pairs + 1
  rng = np.random.default_rng(0)
  noise = jnp.asarray(rng.standard_normal(x_shape), jnp.float32)
  cond = jnp.asarray(rng.standard_normal((1, cond_frames) + x_shape[2:]), jnp.float32)
  cond_null = jdit.null_condition(cond[:, -1:])
  shapes = jax.eval_shape(model.init, jax.random.key(0), noise, jnp.zeros((1,)), cond)
  params = jax.tree.map(lambda s: jnp.asarray(0.02 * rng.standard_normal(s.shape), s.dtype),
                        nn.unbox(shapes["params"]))
  grid = jnp.asarray(flow.time_grid(args.num_steps))
  sampler = flow.make_guided_sampler(model)

  start = time.perf_counter()
  compiled = sampler.lower(params, noise, cond, cond_null, grid, 1.5).compile()
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(args.repeats):
    start = time.perf_counter()
    compiled(params, noise, cond, cond_null, grid, 1.5).block_until_ready()
    times.append(time.perf_counter() - start)
  tokens_per_frame = (latent // config.patch_size) ** 2
  return {
      "figure": "guided_sampling_latency", "size": size, "pairs": pairs,
      "resolution": args.resolution, "dtype": args.dtype, "grid_points": args.num_steps,
      "tokens_cond_pass": (cond_frames + 1) * tokens_per_frame,
      "tokens_null_pass": 3 * tokens_per_frame,
      "seconds_per_example": float(np.median(times)), "compile_seconds": compile_s,
      "backend": jax.default_backend(),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", default="tiny,0.1b")
  parser.add_argument("--pairs", default="4,8")
  parser.add_argument("--resolution", type=int, default=256)
  parser.add_argument("--num_steps", type=int, default=20)
  parser.add_argument("--dtype", default="bfloat16")
  parser.add_argument("--repeats", type=int, default=2)
  args = parser.parse_args()
  for size in args.sizes.split(","):
    for pairs in (int(p) for p in args.pairs.split(",")):
      print(json.dumps(bench(size, pairs, args)), flush=True)


if __name__ == "__main__":
  main()
