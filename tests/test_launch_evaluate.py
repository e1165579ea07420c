"""launch/evaluate.py: a tiny bundle end to end, and every bad flag before any model load."""

import importlib.util
import json
import pathlib

from absl import app
from absl import flags
from absl.testing import flagsaver
import numpy as np
import pytest

from lavin_jax.inference import bundle
import tiny_model

ROOT = pathlib.Path(__file__).parent.parent
RES = 32


def _import_launch():
  spec = importlib.util.spec_from_file_location('launch_evaluate',
                                                ROOT / 'launch' / 'evaluate.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


evaluate = _import_launch()
flags.FLAGS.mark_as_parsed()


def _source(with_depth=True, n=4):
  rng = np.random.default_rng(0)
  return [{'image': rng.integers(0, 256, (40, 40, 3), dtype=np.uint8),
           **({'depth': rng.uniform(1, 20, (40, 40)).astype(np.float32)} if with_depth else {})}
          for _ in range(n)]


SOURCES = {'depth': _source(), 'plain': _source(with_depth=False)}


@pytest.fixture(autouse=True)
def fake_sources(monkeypatch):
  def make_source(spec):
    if spec not in SOURCES:
      raise ValueError(f'unknown test source {spec!r}')
    return SOURCES[spec]
  monkeypatch.setattr(evaluate, 'make_source', make_source)


@pytest.fixture(scope='module')
def bundle_dir(tmp_path_factory):
  config = tiny_model.tiny_model_config()
  path = tmp_path_factory.mktemp('model') / 'bundle'
  bundle.save_bundle(path, config, *tiny_model.tiny_model_params(config))
  return path


def _flags(tmp_path, bundle_path, **overrides):
  values = dict(bundle=str(bundle_path), task='depth_estimation', source='depth',
                num_examples=2, num_pairs=2, batch_size=2, resolution=RES, num_steps=3,
                output=str(tmp_path / 'out'))
  values.update(overrides)
  return values


def test_bundle_end_to_end(bundle_dir, tmp_path, capsys):
  with flagsaver.flagsaver(**_flags(tmp_path, bundle_dir, seed=3)):
    evaluate.main(['evaluate'])
  printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  report = json.loads((tmp_path / 'out' / 'depth_estimation.json').read_text())
  assert printed == {'task': 'depth_estimation', **report['metrics']}
  assert set(report['metrics']) == {'abs_rel', 'delta1'}
  assert (report['num_examples'], report['num_pairs'], report['seed']) == (2, 2, 3)
  assert report['run']['bundle'] == str(bundle_dir)
  assert (report['run']['num_steps'], report['run']['cfg_scale']) == (3, 1.5)
  assert (tmp_path / 'out' / 'depth_estimation.png').is_file()


@pytest.mark.parametrize('overrides, error, match', [
    (dict(task='depth'), ValueError, "Unknown task 'depth'"),
    (dict(source='plain'), ValueError, "source does not fit.*needs 'depth'"),
    (dict(context_source='plain'), ValueError, "context source does not fit"),
    (dict(resolution=40), ValueError, 'multiple of 16'),
    (dict(num_examples=9), ValueError, 'source has only 4'),
    (dict(num_steps=1), ValueError, 'num_steps'),
    (dict(lpips_vgg='vgg.pth'), ValueError, 'both --lpips_vgg and --lpips_lin'),
    (dict(fid_weights='/nowhere/inception.pth'), FileNotFoundError,
     'pt_inception-2015-12-05-6726825d.pth'),
    (dict(bundle='/nowhere'), FileNotFoundError, 'No inference bundle'),
    (dict(vae_path='stvae.pt'), ValueError, 'not both'),
    (dict(bundle=None), ValueError, 'Name the model'),
    (dict(bundle=None, vae_path='/nowhere/stvae.pt', dit_path='/nowhere/dit.safetensors'),
     FileNotFoundError, '--vae_path: no file'),
    (dict(output=None), app.UsageError, '--output is required'),
])
def test_bad_flags_fail_before_loading_the_model(overrides, error, match, bundle_dir,
                                                  tmp_path, monkeypatch):
  def must_not_load():
    raise AssertionError('the model was loaded although the input was bad')
  monkeypatch.setattr(evaluate, 'load_pipeline', must_not_load)
  with flagsaver.flagsaver(**_flags(tmp_path, bundle_dir, **overrides)):
    with pytest.raises(error, match=match):
      evaluate.main(['evaluate'])
  assert not (tmp_path / 'out').exists()
