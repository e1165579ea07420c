"""Evaluation of a model's files (bundle or released weights) on a configured source.

  report = evaluate_model(lavin_jax.configs.evaluate.get_config('depth_estimation'),
                          ModelFiles(bundle='bundle/'), 'eval/')

Every setting, source and weight file is checked before the model is loaded.
"""

import functools
import math

import ml_collections

from lavin_jax.data import specs
from lavin_jax.eval import runner
from lavin_jax.inference import loading


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
  """Scores the model on config.source with config.task's metrics; returns the report."""
  if not config.source:
    raise ValueError(
      "Set config.source to a source spec (lavin_jax.data.specs), e.g. "
      "--config.source=synthetic:small,split=validation."
    )
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
  source = specs.get_source(config.source)
  context_source = specs.get_source(config.context_source) if config.context_source else None
  runner.validate(config, source, context_source, lpips_weights, fid_weights)

  pipe = model.load()
  sampling = config.sampling.to_dict()
  run_info = {
    **model.describe(),
    "source": config.source,
    "context_source": config.context_source,
    **sampling,
  }
  return runner.evaluate(
    functools.partial(pipe, **sampling),
    source,
    config,
    output,
    context_source=context_source,
    lpips_weights=lpips_weights,
    fid_weights=fid_weights,
    run_info=run_info,
  )
