"""Evaluates a LaVin-DiT model on one task: a JSON report of the metrics and a PNG grid.

  # An inference bundle (lavin_jax.inference.bundle) on the built-in synthetic stills:
  python launch/evaluate.py --bundle=/path/to/bundle --task=depth_estimation \
      --source=synthetic:small,split=images --num_examples=100 --num_pairs=4 \
      --resolution=128 --output=/tmp/eval
  # The released weights (3.4B J-DiT and the ST-VAE) on the synthetic clips:
  python launch/evaluate.py --vae_path=stvae.pt --dit_path=lavin_dit.safetensors \
      --task=video_normals --source=synthetic:small,split=clips --resolution=64 \
      --output=/tmp/eval

Sources are lavin_jax.data.sources specs (synthetic, tfds:..., folder:..., photos).

Writes <output>/<task>.json and <output>/<task>.png (lavin_jax.eval.runner) and prints
the metric means as one JSON line. LPIPS and FID are computed, for the tasks scored by
them, only when --lpips_vgg and --lpips_lin or --fid_weights name the weight files
(nothing is downloaded; lavin_jax.eval.lpips and lavin_jax.eval.fid say where to get
them). Every input is checked before the model is loaded or anything is compiled.
"""

import functools
import json
import os

from absl import app
from absl import flags

from lavin_jax import configs
from lavin_jax.eval import runner
from lavin_jax.inference import pipeline as inference

_BUNDLE = flags.DEFINE_string('bundle', None, 'Inference bundle directory.')
_VAE_PATH = flags.DEFINE_string('vae_path', None, 'Released stvae.pt (with --dit_path).')
_DIT_PATH = flags.DEFINE_string('dit_path', None,
                                'Released lavin_dit.safetensors (with --vae_path).')
_JDIT_SIZE = flags.DEFINE_enum('jdit_size', '3.4b', ['tiny', '0.1b', '1b', '3.4b'],
                               'J-DiT size of the released weights.')
_TASK = flags.DEFINE_string('task', None, 'Task name (lavin_jax.data.tasks.TASK_NAMES).')
_SOURCE = flags.DEFINE_string('source', None,
                              'Query source spec (lavin_jax.data.sources.get_source).')
_CONTEXT_SOURCE = flags.DEFINE_string(
    'context_source', None, 'Source spec of the context pairs; default: the query source.')
_NUM_EXAMPLES = flags.DEFINE_integer('num_examples', 100, 'Query examples N.')
_NUM_PAIRS = flags.DEFINE_integer('num_pairs', 4, 'Context pairs K per query.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the context draws and the sampler.')
_RESOLUTION = flags.DEFINE_integer('resolution', 256, 'Square side, a multiple of 16.')
_NUM_FRAMES = flags.DEFINE_integer('num_frames', 5, 'Frames of a video task\'s clips (1 + 4k).')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 4, 'Queries per model call.')
_OUTPUT = flags.DEFINE_string('output', None, 'Output directory.')
_NUM_STEPS = flags.DEFINE_integer('num_steps', 20, 'Sampler time-grid points.')
_CFG_SCALE = flags.DEFINE_float('cfg_scale', 1.5, 'Classifier-free guidance scale.')
_SAMPLER = flags.DEFINE_enum('sampler', 'euler', list(inference.SAMPLERS), 'ODE sampler.')
_POSTERIOR = flags.DEFINE_enum('posterior', 'sample', list(inference.POSTERIORS),
                               'ST-VAE encoding: posterior sample or mean.')
_LPIPS_VGG = flags.DEFINE_string('lpips_vgg', None, 'torchvision vgg16-397923af.pth.')
_LPIPS_LIN = flags.DEFINE_string('lpips_lin', None, 'LPIPS VGG v0.1 heads (.pth).')
_FID_WEIGHTS = flags.DEFINE_string('fid_weights', None,
                                   'pytorch-fid pt_inception-2015-12-05-6726825d.pth.')


def runner_config_from_flags():
  config = runner.runner_config()
  config.task = _TASK.value
  config.num_examples = _NUM_EXAMPLES.value
  config.num_pairs = _NUM_PAIRS.value
  config.seed = _SEED.value
  config.resolution = _RESOLUTION.value
  config.batch_size = _BATCH_SIZE.value
  config.task_options.num_frames = _NUM_FRAMES.value
  return config


def check_model_flags() -> None:
  """Raises unless exactly one model is named and its files exist."""
  released = (_VAE_PATH.value, _DIT_PATH.value)
  if _BUNDLE.value and any(released):
    raise ValueError('Give --bundle or --vae_path with --dit_path, not both.')
  if not _BUNDLE.value and not all(released):
    raise ValueError('Name the model: --bundle=DIR, or --vae_path=stvae.pt with '
                     '--dit_path=lavin_dit.safetensors.')
  if _BUNDLE.value:
    config_file = os.path.join(_BUNDLE.value, 'config.json')
    if not os.path.isfile(config_file):
      raise FileNotFoundError(f'No inference bundle at {_BUNDLE.value!r} (missing '
                              f'{config_file}).')
  for flag, path in (('--vae_path', _VAE_PATH.value), ('--dit_path', _DIT_PATH.value)):
    if path and not os.path.isfile(path):
      raise FileNotFoundError(f'{flag}: no file at {path!r}.')


def check_sampling_flags() -> None:
  if _NUM_STEPS.value < 2:
    raise ValueError(f'--num_steps counts time-grid points and must be >= 2; got '
                     f'{_NUM_STEPS.value}.')


def lpips_weights_from_flags():
  given = (_LPIPS_VGG.value, _LPIPS_LIN.value)
  if any(given) and not all(given):
    raise ValueError('LPIPS needs both --lpips_vgg and --lpips_lin.')
  return given if all(given) else None


def load_pipeline() -> inference.Pipeline:
  if _BUNDLE.value:
    return inference.Pipeline.from_bundle(_BUNDLE.value)
  return inference.Pipeline.from_released(_VAE_PATH.value, _DIT_PATH.value,
                                          jdit_config=configs.jdit(_JDIT_SIZE.value))


def make_source(spec: str):
  from lavin_jax.data import sources  # pylint: disable=g-import-not-at-top
  return sources.get_source(spec)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}.')
  for name, flag in (('task', _TASK), ('source', _SOURCE), ('output', _OUTPUT)):
    if not flag.value:
      raise app.UsageError(f'--{name} is required.')
  check_model_flags()
  check_sampling_flags()
  config = runner_config_from_flags()
  lpips_weights = lpips_weights_from_flags()
  source = make_source(_SOURCE.value)
  context_source = make_source(_CONTEXT_SOURCE.value) if _CONTEXT_SOURCE.value else None
  runner.validate(config, source, context_source, lpips_weights, _FID_WEIGHTS.value)

  pipe = load_pipeline()
  sampling = dict(num_steps=_NUM_STEPS.value, cfg_scale=_CFG_SCALE.value,
                  sampler=_SAMPLER.value, posterior=_POSTERIOR.value)
  run_info = {'bundle': _BUNDLE.value, 'vae_path': _VAE_PATH.value,
              'dit_path': _DIT_PATH.value, 'source': _SOURCE.value,
              'context_source': _CONTEXT_SOURCE.value, **sampling}
  if not _BUNDLE.value:
    run_info['jdit_size'] = _JDIT_SIZE.value
  report = runner.evaluate(functools.partial(pipe, **sampling), source, config,
                           _OUTPUT.value, context_source=context_source,
                           lpips_weights=lpips_weights, fid_weights=_FID_WEIGHTS.value,
                           run_info=run_info)
  print(json.dumps({'task': report['task'], **report['metrics']}))


if __name__ == '__main__':
  app.run(main)
