"""Metrics against scikit-image and numpy closed forms."""

import numpy as np
import pytest
import skimage.metrics

from lavin_jax.eval import metrics


def _image_pair(seed, shape=(2, 3, 36, 44, 3)):
  """A smooth image in [-1, 1] and a noisy, shifted copy of it, (B, T, H, W, 3)."""
  rng = np.random.default_rng(seed)
  h, w = shape[-3:-1]
  yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
  phase = rng.uniform(0, 6, shape[:-3] + (1, 1, 3))
  target = np.sin(4 * yy[..., None] + 3 * xx[..., None] + phase)
  pred = np.clip(0.9 * target + 0.05 + rng.normal(0, 0.15, shape), -1, 1)
  return pred.astype(np.float32), target.astype(np.float32)


def _per_image(fn, pred, target):
  flat = [
    fn(t, p)
    for t, p in zip(
      target.reshape((-1,) + target.shape[-3:]), pred.reshape((-1,) + pred.shape[-3:])
    )
  ]
  return np.asarray(flat).reshape(pred.shape[:-3])


def test_mse_and_psnr_match_skimage():
  pred, target = _image_pair(0)
  want_mse = _per_image(skimage.metrics.mean_squared_error, pred, target)
  want_psnr = _per_image(
    lambda t, p: skimage.metrics.peak_signal_noise_ratio(t, p, data_range=2.0), pred, target
  )
  np.testing.assert_allclose(metrics.mse(pred, target), want_mse, rtol=1e-5)
  np.testing.assert_allclose(metrics.psnr(pred, target), want_psnr, atol=1e-4)


@pytest.mark.parametrize("gaussian", [True, False])
@pytest.mark.parametrize("data_range,shift", [(2.0, 0.0), (1.0, 0.5)])
def test_ssim_matches_skimage(gaussian, data_range, shift):
  pred, target = _image_pair(1)
  pred, target = pred * data_range / 2 + shift, target * data_range / 2 + shift
  kwargs = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False) if gaussian else {}

  def reference(t, p):
    return skimage.metrics.structural_similarity(
      t.astype(np.float64), p.astype(np.float64), data_range=data_range, channel_axis=-1, **kwargs
    )

  want = _per_image(reference, pred, target)
  got = metrics.ssim(pred, target, data_range=data_range, gaussian=gaussian)
  assert got.shape == pred.shape[:-3]
  np.testing.assert_allclose(got, want, atol=1e-4)
  # The metric must be able to tell images apart: identical images score 1.
  np.testing.assert_allclose(metrics.ssim(target, target, data_range, gaussian), 1.0, atol=1e-5)
  assert np.all(np.asarray(got) < 0.99)


def _normal_equations(pred, gt, valid):
  """Scale and shift from the 2x2 normal equations, float64."""
  a = np.stack([pred[valid], np.ones(valid.sum())], axis=1).astype(np.float64)
  return np.linalg.solve(a.T @ a, a.T @ gt[valid].astype(np.float64))


def test_depth_alignment_and_metrics_match_closed_form():
  rng = np.random.default_rng(2)
  gt = rng.uniform(0.5, 10.0, (3, 24, 28)).astype(np.float32)
  gt[0, :4] = 0.0  # invalid ground truth is never scored
  pred = (0.3 * gt - 0.7 + rng.normal(0, 0.2, gt.shape)).astype(np.float32)
  mask = rng.uniform(size=gt.shape) > 0.1
  scale, shift = metrics.align_depth(pred, gt, mask)
  got = metrics.depth_metrics(pred, gt, mask)
  for i in range(3):
    valid = mask[i] & (gt[i] > 0)
    want_scale, want_shift = _normal_equations(pred[i], gt[i], valid)
    np.testing.assert_allclose([scale[i], shift[i]], [want_scale, want_shift], rtol=1e-4)
    aligned = np.maximum(want_scale * pred[i][valid] + want_shift, 1e-3)
    g = gt[i][valid].astype(np.float64)
    np.testing.assert_allclose(got["abs_rel"][i], np.mean(np.abs(aligned - g) / g), rtol=1e-4)
    np.testing.assert_allclose(
      got["delta1"][i], np.mean(np.maximum(aligned / g, g / aligned) < 1.25), atol=1e-6
    )
  assert 0.0 < float(np.min(got["abs_rel"])) and float(np.max(got["delta1"])) < 1.0


def test_depth_metrics_are_affine_invariant():
  gt = np.random.default_rng(3).uniform(1.0, 5.0, (1, 16, 16)).astype(np.float32)
  got = metrics.depth_metrics(3.0 * gt + 2.0, gt)
  np.testing.assert_allclose(got["abs_rel"], 0.0, atol=1e-5)
  np.testing.assert_allclose(got["delta1"], 1.0)


def test_depth_metrics_clip_negative_aligned_depth():
  # The fit is exact (scale -1, shift 0); clipping then lifts the 0.01 m pixels to 0.5.
  gt = np.ones((1, 4, 4), np.float32)
  gt[0, :2] = 0.01
  pred = -gt
  got = metrics.depth_metrics(pred, gt, min_depth=0.5)
  aligned = np.maximum(gt, 0.5)
  want = np.mean(np.abs(aligned - gt) / gt)
  np.testing.assert_allclose(got["abs_rel"], want, rtol=1e-5)


def test_normal_metrics_match_numpy():
  rng = np.random.default_rng(4)
  gt = rng.normal(size=(2, 12, 10, 3))
  gt /= np.linalg.norm(gt, axis=-1, keepdims=True)
  pred = gt + rng.normal(0, 0.25, gt.shape)
  pred *= rng.uniform(0.5, 2.0, gt.shape[:-1] + (1,))  # any length
  gt[1, 0] = 0.0  # unknown normals are not scored
  mask = rng.uniform(size=gt.shape[:-1]) > 0.2
  got = metrics.normal_metrics(pred.astype(np.float32), gt.astype(np.float32), mask)
  for i in range(2):
    valid = mask[i] & (np.linalg.norm(gt[i], axis=-1) > 0)
    p = pred[i][valid] / np.linalg.norm(pred[i][valid], axis=-1, keepdims=True)
    angle = np.degrees(np.arccos(np.clip(np.sum(p * gt[i][valid], axis=-1), -1, 1)))
    np.testing.assert_allclose(got["mean_angle"][i], angle.mean(), rtol=1e-4)
    np.testing.assert_allclose(got["within_11.25"][i], np.mean(angle < 11.25), atol=1e-6)
  assert 0.0 < float(got["within_11.25"][0]) < 1.0


def test_angular_error_is_accurate_for_small_angles():
  theta = np.radians(0.01)
  pred = np.array([[np.sin(theta), 0.0, np.cos(theta)]], np.float32)
  gt = np.array([[0.0, 0.0, 1.0]], np.float32)
  np.testing.assert_allclose(metrics.angular_error(pred, gt), [0.01], rtol=1e-3)


def _box_mask(h, w, y0, x0, y1, x1):
  m = np.zeros((h, w), bool)
  m[y0:y1, x0:x1] = True
  return m


def test_iou_of_boxes_matches_closed_form():
  # Two 10x10 boxes overlapping in a 5x4 region: IoU = 20 / (100 + 100 - 20).
  pred = _box_mask(32, 32, 0, 0, 10, 10)
  gt = _box_mask(32, 32, 5, 6, 15, 16)
  inter, union = metrics.iou_counts(pred[None], gt[None])
  assert (int(inter[0]), int(union[0])) == (20, 180)
  np.testing.assert_allclose(metrics.mean_iou(inter, union), 20 / 180)


def test_mean_iou_pools_per_class_then_averages():
  inter = np.array([10, 0, 30, 5])
  union = np.array([20, 10, 40, 5])
  classes = np.array([1, 1, 2, 3])
  want = np.mean([10 / 30, 30 / 40, 5 / 5])
  np.testing.assert_allclose(metrics.mean_iou(inter, union, classes), want)
  assert metrics.mean_iou([0], [0]) == 1.0  # nothing there, nothing predicted


@pytest.mark.parametrize(
  "fn,args",
  [
    (metrics.mse, (np.zeros((2, 8, 8, 3)), np.zeros((2, 8, 9, 3)))),
    (metrics.psnr, (np.zeros((8, 8)), np.zeros((8, 8)))),
    (metrics.ssim, (np.zeros((1, 6, 40, 3)), np.zeros((1, 6, 40, 3)))),
    (metrics.depth_metrics, (np.ones((2, 8, 8)), np.ones((2, 8, 7)))),
    (metrics.normal_metrics, (np.ones((8, 8, 2)), np.ones((8, 8, 2)))),
    (metrics.iou_counts, (np.ones((8, 8)), np.ones((8, 7)))),
  ],
)
def test_bad_shapes_raise(fn, args):
  with pytest.raises(ValueError):
    fn(*args)


def test_mean_iou_bad_inputs_raise():
  with pytest.raises(ValueError, match="class ids"):
    metrics.mean_iou([1, 2], [2, 3], class_ids=[0])
  with pytest.raises(ValueError, match="no examples"):
    metrics.mean_iou([], [])
