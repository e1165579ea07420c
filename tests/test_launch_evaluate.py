"""launch/evaluate.py: a tiny bundle on the synthetic data set; bad flags fail before loading."""

import importlib.util
import json
import pathlib

from absl import app
from absl import flags
from absl.testing import flagsaver
import pytest

from lavin_jax.data import sources
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


@pytest.fixture(scope='module')
def synthetic(tmp_path_factory):
  """Spec of the built-in synthetic stills, config 'tiny' (8 train examples, 32 px)."""
  spec = f"synthetic:tiny,split=images,data_dir={tmp_path_factory.mktemp('tfds')}"
  assert len(sources.get_source(spec)) == 8  # Builds it once.
  return spec


@pytest.fixture(scope='module')
def bundle_dir(tmp_path_factory):
  config = tiny_model.tiny_model_config()
  path = tmp_path_factory.mktemp('model') / 'bundle'
  bundle.save_bundle(path, config, *tiny_model.tiny_model_params(config))
  return path


def _flags(tmp_path, bundle_path, synthetic_spec, **overrides):
  values = dict(bundle=str(bundle_path), task='depth_estimation', source=synthetic_spec,
                num_examples=2, num_pairs=2, batch_size=2, resolution=RES, num_steps=3,
                output=str(tmp_path / 'out'))
  values.update(overrides)
  return values


def test_bundle_end_to_end(bundle_dir, synthetic, tmp_path, capsys):
  with flagsaver.flagsaver(**_flags(tmp_path, bundle_dir, synthetic, seed=3)):
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
    (dict(source='photos'), ValueError, "source does not fit.*needs 'depth'"),
    (dict(context_source='photos'), ValueError, "context source does not fit"),
    (dict(source='nope:x'), ValueError, "Unknown source kind 'nope'"),
    (dict(task='video_depth'), ValueError, "needs 'video'"),
    (dict(task='video_depth', num_frames=4), ValueError, r'num_frames must be 1 \+ 4k'),
    (dict(resolution=40), ValueError, 'multiple of 16'),
    (dict(resolution=48), ValueError, 'smaller than the resolution 48'),
    (dict(num_examples=9), ValueError, 'source has only 8'),
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
                                                  synthetic, tmp_path, monkeypatch):
  def must_not_load():
    raise AssertionError('the model was loaded although the input was bad')
  monkeypatch.setattr(evaluate, 'load_pipeline', must_not_load)
  with flagsaver.flagsaver(**_flags(tmp_path, bundle_dir, synthetic, **overrides)):
    with pytest.raises(error, match=match):
      evaluate.main(['evaluate'])
  assert not (tmp_path / 'out').exists()
