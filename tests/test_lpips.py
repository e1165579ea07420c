"""LPIPS against the `lpips` package's outputs on deterministic VGG16 weights."""

import pathlib
import sys

import jax
import numpy as np
import pytest
import splitmix_weights
import torch_files

from lavin_jax.eval import lpips
from lavin_jax.eval import weights

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "metrics"
LIN_FILE = FIXTURES / "lpips_vgg_lin_v0.1.pth"


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("lpips") / lpips.VGG16_FILE
  return splitmix_weights.save_state_dict(FIXTURES / "vgg16_features_keys.json", path)


def test_splitmix_stream_is_the_standard_generator():
  # splitmix64 seeded with 0 starts 0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4,
  # 0x06c45d188009454f: the first element of keys 0, 1, 2 keeps their top 53 bits.
  firsts = [splitmix_weights.splitmix_uniform(k, (1,))[0] for k in range(3)]
  want = [
    (v >> 11) * 2.0**-53 for v in (0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F)
  ]
  assert firsts == want
  u = splitmix_weights.splitmix_uniform(7, (200_000,))
  assert 0.0 <= u.min() and u.max() < 1.0
  np.testing.assert_allclose([u.mean(), u.var()], [0.5, 1 / 12], atol=3e-3)
  # Conv weights come out He-scaled: uniform on +-sqrt(6 / fan_in), std sqrt(2 / fan_in).
  conv = splitmix_weights.deterministic_tensor(2, "features.2.weight", (64, 64, 3, 3))
  np.testing.assert_allclose(conv.std(), np.sqrt(2 / 576), rtol=0.02)
  assert np.abs(conv).max() <= np.sqrt(6 / 576)


def test_lpips_matches_package_on_deterministic_weights(vgg_file):
  io = np.load(FIXTURES / "lpips_io.npz")
  module, params = lpips.load_lpips(vgg_file, LIN_FILE)
  x0, x1 = (np.transpose(io[k], (0, 2, 3, 1)) for k in ("x0", "x1"))  # NCHW -> NHWC
  dist = jax.jit(module.apply)({"params": params}, x0, x1)
  assert dist.shape == (3,)
  np.testing.assert_allclose(dist, io["dist"].reshape(3), atol=1e-5, rtol=0)
  same = module.apply({"params": params}, x0, x0)
  np.testing.assert_allclose(same, 0.0, atol=1e-7)


def test_loader_ignores_the_classifier_and_rejects_foreign_keys(vgg_file, tmp_path):
  state = splitmix_weights.state_dict(FIXTURES / "vgg16_features_keys.json")
  state["classifier.0.weight"] = np.zeros((2, 2), np.float32)
  with_classifier = tmp_path / "with_classifier.pth"
  torch_files.save(state, with_classifier)
  lpips.load_lpips(with_classifier, LIN_FILE)

  del state["features.28.bias"]
  state["features.30.weight"] = np.zeros((1, 1, 3, 3), np.float32)
  broken = tmp_path / "broken.pth"
  torch_files.save(state, broken)
  with pytest.raises(ValueError, match=r"(?s)broken.pth.*features_28/bias.*features_30"):
    lpips.load_lpips(broken, LIN_FILE)
  with pytest.raises(ValueError, match=r"(?s)vgg16-397923af.pth does not fit.*lin0/kernel"):
    lpips.load_lpips(vgg_file, vgg_file)  # the VGG file given as the linear heads


def test_missing_weight_file_says_where_to_get_and_put_it(tmp_path, monkeypatch):
  monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(tmp_path))
  with pytest.raises(FileNotFoundError) as err:
    lpips.load_lpips()
  message = str(err.value)
  assert lpips.VGG16_FILE in message and lpips.VGG16_SOURCE in message
  assert str(tmp_path) in message
  (tmp_path / lpips.VGG16_FILE).touch()
  with pytest.raises(FileNotFoundError, match=lpips.LIN_FILE):
    lpips.load_lpips()


def test_weights_are_read_without_torch(vgg_file, monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
  _, params = lpips.load_lpips(vgg_file, LIN_FILE)  # a zip and a legacy-format file
  assert params["lin0"]["kernel"].shape == (64, 1)


@pytest.mark.parametrize(
  "x0,x1",
  [
    (np.zeros((2, 32, 32, 3)), np.zeros((2, 32, 30, 3))),
    (np.zeros((32, 32, 3)), np.zeros((32, 32, 3))),
    (np.zeros((1, 32, 32, 1)), np.zeros((1, 32, 32, 1))),
    (np.zeros((1, 8, 32, 3)), np.zeros((1, 8, 32, 3))),
  ],
)
def test_bad_images_raise(x0, x1):
  with pytest.raises(ValueError, match="LPIPS"):
    lpips.LPIPS().init(jax.random.key(0), x0, x1)
