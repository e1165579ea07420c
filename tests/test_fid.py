"""FID Inception against pytorch-fid's outputs; Frechet distance and statistics in closed form.

The pool3 parity tolerance is 1e-4 relative to the largest feature: the network is 90+
float32 convolutions deep, and XLA and PyTorch sum in different orders.
"""

import pathlib

import jax
import numpy as np
import pytest
import scipy.linalg
import torch

from lavin_jax.eval import fid
from lavin_jax.eval import weights
import splitmix_weights

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "metrics"


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("fid") / fid.INCEPTION_FILE
  return splitmix_weights.save_state_dict(FIXTURES / "pt_inception_keys.json", path)


def test_pool3_matches_pytorch_fid_on_deterministic_weights(inception_file):
  io = np.load(FIXTURES / "fid_io.npz")
  module, variables = fid.load_fid_inception(inception_file)
  images = 2 * np.transpose(io["images"], (0, 2, 3, 1)) - 1  # [0, 1] NCHW -> [-1, 1] NHWC
  features = np.asarray(jax.jit(module.apply)(variables, images))
  want = io["pool3"]
  assert features.shape == want.shape == (2, 2048)
  np.testing.assert_allclose(features, want, atol=1e-4 * np.abs(want).max(), rtol=1e-4)


@pytest.mark.parametrize("size", [(96, 80), (300, 451)])
def test_resize_matches_torch_bilinear(size):
  images = np.random.default_rng(0).uniform(-1, 1, (1,) + size + (3,)).astype(np.float32)
  want = torch.nn.functional.interpolate(
      torch.from_numpy(images).permute(0, 3, 1, 2), size=(299, 299), mode="bilinear",
      align_corners=False).permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose(fid.resize_bilinear(images), want, atol=1e-6)


def test_loader_rejects_a_wrong_file(inception_file, tmp_path):
  state = torch.load(inception_file, weights_only=True)
  state["fc.weight"] = torch.zeros(3, 3)  # the classifier is ignored, whatever its shape
  del state["Mixed_7c.branch_pool.bn.running_var"]
  state["Mixed_6e.branch1x1.conv.weight"] = torch.zeros(192, 768, 3, 3)
  broken = tmp_path / "broken.pth"
  torch.save(state, broken)
  with pytest.raises(ValueError, match=r"broken.pth does not fit") as err:
    fid.load_fid_inception(broken)
  assert "batch_stats/Mixed_7c/branch_pool/bn/var" in str(err.value)
  assert "params/Mixed_6e/branch1x1/conv/kernel (3, 3, 768, 192)" in str(err.value)


def test_missing_weight_file_says_where_to_get_and_put_it(tmp_path, monkeypatch):
  monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(tmp_path / "weights"))
  with pytest.raises(FileNotFoundError) as err:
    fid.load_fid_inception()
  message = str(err.value)
  assert fid.INCEPTION_FILE in message and fid.INCEPTION_SOURCE in message
  assert str(tmp_path / "weights") in message and weights.WEIGHTS_DIR_ENV in message
  with pytest.raises(FileNotFoundError, match=str(tmp_path / "elsewhere.pth")):
    fid.load_fid_inception(tmp_path / "elsewhere.pth")


@pytest.mark.parametrize("images", [np.zeros((2, 64, 64)), np.zeros((2, 64, 64, 4)),
                                    np.zeros((1, 4, 64, 3))])
def test_bad_images_raise(images):
  with pytest.raises(ValueError, match="FID Inception"):
    jax.eval_shape(fid.InceptionV3Pool3().init, jax.random.key(0), images)


def test_frechet_distance_of_diagonal_gaussians_is_closed_form():
  rng = np.random.default_rng(1)
  mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
  v1, v2 = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
  want = np.sum((mu1 - mu2)**2) + np.sum((np.sqrt(v1) - np.sqrt(v2))**2)
  got = fid.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
  np.testing.assert_allclose(got, want, rtol=1e-12)


def test_frechet_distance_of_commuting_covariances_is_closed_form():
  # Covariances sharing eigenvectors: the W2 distance is sum (sqrt(a_i) - sqrt(b_i))^2.
  rng = np.random.default_rng(2)
  q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
  a, b = rng.uniform(0, 2, 6), rng.uniform(0.1, 2, 6)
  a[0] = 0.0  # singular is fine
  mu = rng.normal(size=6)
  got = fid.frechet_distance(mu, q @ np.diag(a) @ q.T, mu + 1.0, q @ np.diag(b) @ q.T)
  np.testing.assert_allclose(got, 6.0 + np.sum((np.sqrt(a) - np.sqrt(b))**2), rtol=1e-10)
  assert abs(fid.frechet_distance(mu, q @ np.diag(b) @ q.T, mu, q @ np.diag(b) @ q.T)) < 1e-10


def test_frechet_distance_matches_scipy_sqrtm_on_general_covariances():
  rng = np.random.default_rng(3)
  x, y = rng.normal(size=(50, 8)), rng.normal(size=(40, 8)) @ rng.normal(size=(8, 8))
  s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
  mu1, mu2 = x.mean(0), y.mean(0)
  want = (np.sum((mu1 - mu2)**2) + np.trace(s1) + np.trace(s2)
          - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real))
  np.testing.assert_allclose(fid.frechet_distance(mu1, s1, mu2, s2), want, rtol=1e-9)


def test_running_stats_equal_numpy_on_the_full_set():
  rng = np.random.default_rng(4)
  features = rng.normal(3.0, 2.0, (103, 7)) @ rng.normal(size=(7, 7))
  stats = fid.RunningStats(7)
  for batch in np.split(features, [1, 17, 17, 60]):  # includes an empty batch
    stats.update(batch.astype(np.float32))
  want = features.astype(np.float32).astype(np.float64)
  assert stats.count == 103
  np.testing.assert_allclose(stats.mean, want.mean(0), rtol=1e-12)
  np.testing.assert_allclose(stats.covariance(), np.cov(want, rowvar=False), rtol=1e-10,
                             atol=1e-12)


def test_bad_statistics_inputs_raise():
  stats = fid.RunningStats(4)
  with pytest.raises(ValueError, match=r"\(N, 4\)"):
    stats.update(np.zeros((3, 5)))
  stats.update(np.zeros((1, 4)))
  with pytest.raises(ValueError, match="2 or more"):
    stats.covariance()
  with pytest.raises(ValueError, match="dimension"):
    fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
