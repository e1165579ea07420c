"""FID Inception against pytorch-fid's outputs; Frechet distance and statistics in closed form.

The pool3 parity tolerance is 1e-4 relative to the largest feature: the network is 90+
float32 convolutions deep, and XLA and PyTorch sum in different orders. The resize is
checked against a closed form of torch's bilinear interpolation, itself checked against
PyTorch's documented output and OpenCV.
"""

import pathlib

import cv2
import jax
import numpy as np
import pytest
import scipy.linalg
import splitmix_weights
import torch_files

from lavin_jax.eval import fid
from lavin_jax.eval import weights

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


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) weights of torch's bilinear resize, align_corners=False, no antialias.

  Output i samples the input at src = (i + 0.5) * n_in / n_out - 0.5, clamped at 0; the
  two pixels around src (the last one repeated past the end) get 1 - frac and frac.
  src is float32, as torch computes it for float32 images: scale = float32(n_in) / n_out,
  then scale * (i + 0.5) - 0.5 rounded once. Exact positions would move the 299-pixel
  outputs by up to 6e-5.
  """
  scale = np.float32(n_in) / np.float32(n_out)
  src = (np.float64(scale) * (np.arange(n_out) + 0.5) - 0.5).astype(np.float32)
  src = np.maximum(src, 0).astype(np.float64)
  lo = np.minimum(np.floor(src).astype(int), n_in - 1)
  frac = src - lo
  matrix = np.zeros((n_out, n_in))
  np.add.at(matrix, (np.arange(n_out), lo), 1 - frac)
  np.add.at(matrix, (np.arange(n_out), np.minimum(lo + 1, n_in - 1)), frac)
  return matrix


def _torch_bilinear(images: np.ndarray, size: int) -> np.ndarray:
  """(B, H, W, C) -> (B, size, size, C) in float64 by `_bilinear_matrix` on each axis."""
  return np.einsum(
    "oh,bhwc,pw->bopc",
    _bilinear_matrix(images.shape[1], size),
    images.astype(np.float64),
    _bilinear_matrix(images.shape[2], size),
    optimize=True,  # one axis at a time, not all four indices at once
  )


def test_bilinear_closed_form_is_torch_convention():
  # nn.Upsample(scale_factor=2, mode="bilinear") of [[1, 2], [3, 4]], from PyTorch's docs.
  docs = [
    [1.0, 1.25, 1.75, 2.0],
    [1.5, 1.75, 2.25, 2.5],
    [2.5, 2.75, 3.25, 3.5],
    [3.0, 3.25, 3.75, 4.0],
  ]
  got = _torch_bilinear(np.array([[1.0, 2.0], [3.0, 4.0]])[None, :, :, None], 4)
  np.testing.assert_array_equal(got[0, :, :, 0], docs)
  # OpenCV's INTER_LINEAR has the same half-pixel centres, edge clamping and no
  # antialiasing, with exact sample positions: float32 positions below 512 are within
  # 1.5e-5 px, so the two agree to 2 axes x 1.5e-5 px x slope 2 = 6e-5 on [-1, 1] images.
  rng = np.random.default_rng(1)
  for size in [(96, 80), (300, 451)]:
    images = rng.uniform(-1, 1, size + (3,)).astype(np.float32)
    opencv = cv2.resize(images, (299, 299), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(_torch_bilinear(images[None], 299)[0], opencv, atol=1e-4)


@pytest.mark.parametrize("size", [(96, 80), (300, 451)])
def test_resize_matches_torch_bilinear(size):
  images = np.random.default_rng(0).uniform(-1, 1, (1,) + size + (3,)).astype(np.float32)
  np.testing.assert_allclose(fid.resize_bilinear(images), _torch_bilinear(images, 299), atol=1e-6)


def test_loader_rejects_a_wrong_file(tmp_path):
  state = splitmix_weights.state_dict(FIXTURES / "pt_inception_keys.json")
  state["fc.weight"] = np.zeros((3, 3), np.float32)  # the classifier is ignored, any shape
  del state["Mixed_7c.branch_pool.bn.running_var"]
  state["Mixed_6e.branch1x1.conv.weight"] = np.zeros((192, 768, 3, 3), np.float32)
  broken = tmp_path / "broken.pth"
  torch_files.save(state, broken)
  with pytest.raises(ValueError, match=r"broken.pth does not fit") as err:
    fid.load_fid_inception(broken)
  assert "batch_stats/Mixed_7c/branch_pool/bn/var" in str(err.value)
  assert "params/Mixed_6e/branch1x1/conv/kernel: stored (3, 3, 768, 192)" in str(err.value)


def test_missing_weight_file_says_where_to_get_and_put_it(tmp_path, monkeypatch):
  monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(tmp_path / "weights"))
  with pytest.raises(FileNotFoundError) as err:
    fid.load_fid_inception()
  message = str(err.value)
  assert fid.INCEPTION_FILE in message and fid.INCEPTION_SOURCE in message
  assert str(tmp_path / "weights") in message and weights.WEIGHTS_DIR_ENV in message
  with pytest.raises(FileNotFoundError, match=str(tmp_path / "elsewhere.pth")):
    fid.load_fid_inception(tmp_path / "elsewhere.pth")


@pytest.mark.parametrize(
  "images", [np.zeros((2, 64, 64)), np.zeros((2, 64, 64, 4)), np.zeros((1, 4, 64, 3))]
)
def test_bad_images_raise(images):
  with pytest.raises(ValueError, match="FID Inception"):
    jax.eval_shape(fid.InceptionV3Pool3().init, jax.random.key(0), images)


def test_frechet_distance_of_diagonal_gaussians_is_closed_form():
  rng = np.random.default_rng(1)
  mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
  v1, v2 = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
  want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
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
  np.testing.assert_allclose(got, 6.0 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2), rtol=1e-10)
  assert abs(fid.frechet_distance(mu, q @ np.diag(b) @ q.T, mu, q @ np.diag(b) @ q.T)) < 1e-10


def test_frechet_distance_matches_scipy_sqrtm_on_general_covariances():
  rng = np.random.default_rng(3)
  x, y = rng.normal(size=(50, 8)), rng.normal(size=(40, 8)) @ rng.normal(size=(8, 8))
  s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
  mu1, mu2 = x.mean(0), y.mean(0)
  want = (
    np.sum((mu1 - mu2) ** 2)
    + np.trace(s1)
    + np.trace(s2)
    - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real)
  )
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
  np.testing.assert_allclose(stats.covariance(), np.cov(want, rowvar=False), rtol=1e-10, atol=1e-12)


def test_bad_statistics_inputs_raise():
  stats = fid.RunningStats(4)
  with pytest.raises(ValueError, match=r"\(N, 4\)"):
    stats.update(np.zeros((3, 5)))
  stats.update(np.zeros((1, 4)))
  with pytest.raises(ValueError, match="2 or more"):
    stats.covariance()
  with pytest.raises(ValueError, match="dimension"):
    fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
