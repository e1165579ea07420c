"""Evaluation of a model's files (bundle or released weights) on a task or a protocol.

  report = evaluate_model(lavin_jax.configs.evaluate.get_config('depth_estimation'),
                          ModelFiles(bundle='bundle/'), 'eval/')

Every setting, source and weight file is checked before the model is loaded. A
protocol's runs are written under `<output>/<run name>/`, its figures to
`<output>/<protocol>_summary.json`.
"""

import functools
import json
import math
import pathlib

import ml_collections

from lavin_jax.eval import protocols
from lavin_jax.eval import runner
from lavin_jax.inference import loading
from lavin_jax.io import files


def _check_sampling(sampling: ml_collections.ConfigDict) -> None:
  if sampling.num_steps < 2:
    raise ValueError(
      f"config.sampling.num_steps counts time-grid points and must be >= 2; "
      f"got {sampling.num_steps}."
    )
  if not math.isfinite(sampling.cfg_scale):
    raise ValueError(f"config.sampling.cfg_scale must be finite; got {sampling.cfg_scale}.")


def _lpips_weights(config):
  given = (config.lpips_vgg, config.lpips_lin)
  if any(given) and not all(given):
    raise ValueError("LPIPS needs both config.lpips_vgg and config.lpips_lin.")
  return given if all(given) else None


def evaluate_model(config: ml_collections.ConfigDict, model: loading.ModelFiles, output) -> dict:
  """Scores the model on config's task or protocol; returns the report or the summary."""
  _check_sampling(config.sampling)
  lpips_weights = _lpips_weights(config)
  fid_weights = config.fid_weights or None
  multiple = model.pixel_multiple()
  if config.resolution <= 0 or config.resolution % multiple:
    raise ValueError(
      f"config.resolution must be a positive multiple of {multiple} (the "
      f"ST-VAE's downsampling times J-DiT's patch size); got "
      f"{config.resolution}."
    )
  runs = protocols.plan(config)
  for run in runs:
    runner.validate(run.config, run.source, run.context_source, lpips_weights, fid_weights)

  pipe = model.load()
  sampling = config.sampling.to_dict()
  run_info = {
    **model.describe(),
    "source": config.source,
    "context_source": config.context_source,
    **sampling,
  }
  output = pathlib.Path(output)
  reports = [
    runner.evaluate(
      functools.partial(pipe, **sampling),
      run.source,
      run.config,
      output / run.name,
      context_source=run.context_source,
      lpips_weights=lpips_weights,
      fid_weights=fid_weights,
      run_info=run_info,
    )
    for run in runs
  ]
  summary = protocols.summarize(config, runs, reports)
  if not config.protocol:
    return summary
  text = json.dumps(summary, indent=1, allow_nan=False)
  files.atomic_write_text(output / f"{config.protocol}_summary.json", text)
  return json.loads(text)
