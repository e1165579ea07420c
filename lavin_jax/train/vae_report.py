"""Reconstruction quality of a trained ST-VAE: PSNR, SSIM and LPIPS on held-out examples.

Each of `config.report_sources` ({name: spec}) gives its first `config.report_examples`
examples as centred crops at the training resolution; clips keep their first
`config.clip_frames` frames (fewer, 1 + 4k, when shorter). The reconstruction decodes
the posterior mean and is clipped to [-1, 1]. Scores are per frame (lavin_jax.eval.
metrics; LPIPS with the weight files of lavin_jax.eval.lpips), averaged over frames and
examples: '<name>/psnr', '<name>/ssim' and '<name>/lpips'.

  examples = held_out_examples(config)        # {name: (N, T, H, W, 3)}, before training
  scores = report(reconstruct, examples)      # reconstruct: pixels -> pixels
"""

from typing import Callable, Mapping

import numpy as np

from lavin_jax.data import episodes
from lavin_jax.data import specs
from lavin_jax.eval import metrics
from lavin_jax.io import pixels as pixels_lib


def _frames(example, config) -> np.ndarray:
  """The example's pixels (T, H, W, 3) in [-1, 1]: a still, or a clip's first frames."""
  fitted = episodes.fit_example(example, config.resolution)
  if "image" in fitted:
    pixels = fitted["image"][None]
  else:
    tc = config.model.temporal_compression
    frames = min(len(fitted["video"]), config.clip_frames)
    pixels = fitted["video"][: 1 + (frames - 1) // tc * tc]
  return pixels_lib.to_float(pixels)


def held_out_examples(config) -> dict[str, np.ndarray]:
  """{name: (N, T, H, W, 3) pixels} of every report source; errors before training."""
  examples = {}
  for name, spec in config.report_sources.items():
    source = specs.get_source(spec)
    count = min(len(source), config.report_examples)
    if count < 1:
      raise ValueError(
        f"The report source {name!r} ({spec!r}) is empty; fix or drop it in config.report_sources."
      )
    examples[name] = np.stack([_frames(source[i], config) for i in range(count)])
    metrics.ssim(examples[name][0], examples[name][0])  # a too-small image fails here
  return examples


def report(
  reconstruct: Callable[[np.ndarray], np.ndarray],
  examples: Mapping[str, np.ndarray],
  distance: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> dict[str, float]:
  """Mean per-frame scores of `reconstruct` (one clip (1, T, H, W, 3) at a time).

  Args:
    reconstruct: pixels -> reconstructed pixels in [-1, 1].
    examples: {name: (N, T, H, W, 3)} (`held_out_examples`).
    distance: optional LPIPS of two image batches (B, H, W, 3) -> (B,)
      (lavin_jax.eval.lpips).
  """
  scores = {}
  for name, clips in examples.items():
    recon = np.concatenate([np.asarray(reconstruct(clip[None])) for clip in clips])
    scores[f"{name}/psnr"] = float(np.mean(metrics.psnr(recon, clips)))
    scores[f"{name}/ssim"] = float(np.mean(metrics.ssim(recon, clips)))
    if distance is not None:
      frames = lambda x: x.reshape((-1,) + x.shape[2:])
      scores[f"{name}/lpips"] = float(np.mean(distance(frames(recon), frames(clips))))
  return scores


def format_report(scores: Mapping[str, float], step: int) -> str:
  """A small table: one row per source, one column per score."""
  names = sorted({key.split("/")[0] for key in scores})
  columns = [c for c in ("psnr", "ssim", "lpips") if any(f"{n}/{c}" in scores for n in names)]
  lines = [
    f"ST-VAE reconstructions at step {step}:",
    f"{'source':<12}" + "".join(f"{c:>10}" for c in columns),
  ]
  for name in names:
    lines.append(
      f"{name:<12}"
      + "".join(
        f"{scores[f'{name}/{c}']:>10.4f}" if f"{name}/{c}" in scores else f"{'-':>10}"
        for c in columns
      )
    )
  return "\n".join(lines)
