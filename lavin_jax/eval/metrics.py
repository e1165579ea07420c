"""The paper's per-example metrics (SPEC.md, Tasks and metrics).

Every function takes channels-last arrays with any leading batch axes and returns one
value per example (the leading axes); averaging over a data set is the caller's job.
Images are (..., H, W, C); depth maps and masks are (..., H, W); normal maps are
(..., H, W, 3).

Conventions:
- MSE, PSNR and SSIM equal scikit-image's `mean_squared_error`,
  `peak_signal_noise_ratio` and `structural_similarity(..., channel_axis=-1)` on each
  example. SSIM has two windows: `gaussian=True` (default) is Wang et al.'s 11x11
  Gaussian, sigma 1.5, population covariances (skimage `gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False`); `gaussian=False` is skimage's default 7x7
  uniform window with sample covariances. The mean runs over windows entirely inside the
  image, like skimage's cropped mean.
- Depth: the prediction is first aligned to the ground truth by the least-squares scale
  and shift over valid pixels, then clipped below at `min_depth`; AbsRel and delta1 are
  fractions (the paper prints them in percent).
- Normals: angles in degrees between predicted and true vectors (neither needs unit
  length).
- IoU: binary masks; `mean_iou` pools intersections and unions per class over the data
  set before averaging over classes (the few-shot segmentation protocol).
"""

import jax.numpy as jnp
import numpy as np

_SSIM_K1 = 0.01
_SSIM_K2 = 0.03
_GAUSSIAN_SIGMA = 1.5
_GAUSSIAN_RADIUS = 5  # skimage: int(truncate * sigma + 0.5) with truncate 3.5
_UNIFORM_SIZE = 7


def _check_pair(a, b, min_ndim: int, what: str):
  if a.shape != b.shape:
    raise ValueError(f"{what}: prediction {a.shape} and target {b.shape} differ in shape.")
  if a.ndim < min_ndim:
    raise ValueError(f"{what}: expected at least {min_ndim} dims, got shape {a.shape}.")


def mse(pred, target):
  """Mean squared error per image; (..., H, W, C) -> (...)."""
  _check_pair(pred, target, 3, "mse")
  diff = jnp.asarray(pred, jnp.float32) - jnp.asarray(target, jnp.float32)
  return jnp.mean(jnp.square(diff), axis=(-3, -2, -1))


def psnr(pred, target, data_range: float = 2.0):
  """Peak signal-to-noise ratio in dB per image; data_range is 2 for [-1, 1] pixels."""
  return 10.0 * jnp.log10(data_range**2 / mse(pred, target))


def _ssim_window(gaussian: bool) -> np.ndarray:
  """The 1-D factor of the separable SSIM window, summing to 1."""
  if gaussian:
    x = np.arange(-_GAUSSIAN_RADIUS, _GAUSSIAN_RADIUS + 1)
    w = np.exp(-0.5 * (x / _GAUSSIAN_SIGMA) ** 2)
  else:
    w = np.ones(_UNIFORM_SIZE)
  return (w / w.sum()).astype(np.float32)


def _window_mean(x, w):
  """Separable weighted mean over every window inside (H, W): (..., H, W, C)."""
  n = len(w)
  h, wd = x.shape[-3:-1]
  x = sum(w[k] * x[..., k : h - n + 1 + k, :, :] for k in range(n))
  return sum(w[k] * x[..., :, k : wd - n + 1 + k, :] for k in range(n))


def ssim(pred, target, data_range: float = 2.0, gaussian: bool = True):
  """Mean structural similarity per image, averaged over channels; (..., H, W, C) -> (...)."""
  _check_pair(pred, target, 3, "ssim")
  w = _ssim_window(gaussian)
  if min(pred.shape[-3:-1]) < len(w):
    raise ValueError(
      f"ssim: images {pred.shape[-3:-1]} are smaller than the {len(w)}x{len(w)} window."
    )
  x = jnp.asarray(pred, jnp.float32)
  y = jnp.asarray(target, jnp.float32)
  # Variances are shift invariant: centring each image first avoids float32 cancellation.
  offset = jnp.mean(y, axis=(-3, -2, -1), keepdims=True)
  x, y = x - offset, y - offset
  mu_x, mu_y = _window_mean(x, w), _window_mean(y, w)
  cov_norm = 1.0 if gaussian else len(w) ** 2 / (len(w) ** 2 - 1)
  var_x = cov_norm * (_window_mean(x * x, w) - mu_x * mu_x)
  var_y = cov_norm * (_window_mean(y * y, w) - mu_y * mu_y)
  cov_xy = cov_norm * (_window_mean(x * y, w) - mu_x * mu_y)
  mu_x, mu_y = mu_x + offset, mu_y + offset
  c1 = (_SSIM_K1 * data_range) ** 2
  c2 = (_SSIM_K2 * data_range) ** 2
  s = (
    (2 * mu_x * mu_y + c1)
    * (2 * cov_xy + c2)
    / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
  )
  return jnp.mean(s, axis=(-3, -2, -1))


def _depth_mask(gt, mask):
  valid = jnp.isfinite(gt) & (gt > 0)
  return valid if mask is None else valid & jnp.asarray(mask, bool)


def align_depth(pred, gt, mask=None):
  """Least-squares scale s and shift t (min sum (s pred + t - gt)^2 over valid pixels).

  Args:
    pred, gt: (..., H, W) depth maps.
    mask: optional (..., H, W) bool; pixels with gt <= 0 or non-finite are always invalid.
  Returns:
    (scale, shift), each (...).
  """
  _check_pair(pred, gt, 2, "align_depth")
  m = _depth_mask(gt, mask).astype(jnp.float32)
  p = jnp.asarray(pred, jnp.float32)
  g = jnp.where(m > 0, gt, 0.0).astype(jnp.float32)
  count = jnp.maximum(jnp.sum(m, axis=(-2, -1)), 1.0)
  mean_p = jnp.sum(m * p, axis=(-2, -1)) / count
  mean_g = jnp.sum(m * g, axis=(-2, -1)) / count
  dp = m * (p - mean_p[..., None, None])
  dg = m * (g - mean_g[..., None, None])
  var_p = jnp.sum(dp * dp, axis=(-2, -1))
  # A constant prediction (var_p = 0) has dp = 0 and so gets scale 0.
  scale = jnp.sum(dp * dg, axis=(-2, -1)) / jnp.where(var_p > 0, var_p, 1.0)
  return scale, mean_g - scale * mean_p


def depth_metrics(pred, gt, mask=None, min_depth: float = 1e-3):
  """AbsRel and delta1 (< 1.25) after least-squares scale-and-shift alignment.

  Args:
    pred, gt: (..., H, W) depth maps (gt in metres; pred in any affine-related unit).
    mask: optional (..., H, W) bool of pixels to score; gt <= 0 is never scored.
    min_depth: aligned predictions are clipped below at this value.
  Returns:
    {'abs_rel': (...), 'delta1': (...)}, fractions.
  """
  scale, shift = align_depth(pred, gt, mask)
  aligned = scale[..., None, None] * jnp.asarray(pred, jnp.float32) + shift[..., None, None]
  aligned = jnp.maximum(aligned, min_depth)
  m = _depth_mask(gt, mask)
  g = jnp.where(m, gt, 1.0).astype(jnp.float32)
  count = jnp.maximum(jnp.sum(m, axis=(-2, -1)), 1)
  abs_rel = jnp.sum(jnp.where(m, jnp.abs(aligned - g) / g, 0.0), axis=(-2, -1)) / count
  inside = jnp.maximum(aligned / g, g / aligned) < 1.25
  delta1 = jnp.sum(m & inside, axis=(-2, -1)) / count
  return {"abs_rel": abs_rel, "delta1": delta1}


def angular_error(pred, gt):
  """Per-pixel angle in degrees between normal vectors; (..., 3) -> (...)."""
  _check_pair(pred, gt, 1, "angular_error")
  if pred.shape[-1] != 3:
    raise ValueError(f"angular_error: normals need 3 channels last, got shape {pred.shape}.")
  p = jnp.asarray(pred, jnp.float32)
  g = jnp.asarray(gt, jnp.float32)
  # atan2(|p x g|, p . g) stays accurate for small angles, where arccos does not.
  sin = jnp.linalg.norm(jnp.cross(p, g), axis=-1)
  cos = jnp.sum(p * g, axis=-1)
  return jnp.degrees(jnp.arctan2(sin, cos))


def normal_metrics(pred, gt, mask=None):
  """Mean angular error (degrees) and the share of pixels under 11.25 degrees.

  Args:
    pred, gt: (..., H, W, 3) normal maps; gt pixels of zero length are not scored.
    mask: optional (..., H, W) bool of pixels to score.
  Returns:
    {'mean_angle': (...), 'within_11.25': (...)}.
  """
  _check_pair(pred, gt, 3, "normal_metrics")
  angle = angular_error(pred, gt)
  valid = jnp.linalg.norm(jnp.asarray(gt, jnp.float32), axis=-1) > 0
  if mask is not None:
    valid = valid & jnp.asarray(mask, bool)
  count = jnp.maximum(jnp.sum(valid, axis=(-2, -1)), 1)
  return {
    "mean_angle": jnp.sum(jnp.where(valid, angle, 0.0), axis=(-2, -1)) / count,
    "within_11.25": jnp.sum(valid & (angle < 11.25), axis=(-2, -1)) / count,
  }


def iou_counts(pred_mask, gt_mask):
  """Intersection and union pixel counts of binary masks; (..., H, W) -> two (...)."""
  _check_pair(pred_mask, gt_mask, 2, "iou_counts")
  p = jnp.asarray(pred_mask, bool)
  g = jnp.asarray(gt_mask, bool)
  return jnp.sum(p & g, axis=(-2, -1)), jnp.sum(p | g, axis=(-2, -1))


def mean_iou(intersection, union, class_ids=None) -> float:
  """Mean over classes of (summed intersection / summed union).

  Args:
    intersection, union: (N,) counts per example, from `iou_counts`.
    class_ids: (N,) class of each example; None treats all examples as one class.
  Returns:
    The mIoU; a class whose union is empty (nothing predicted, nothing there) scores 1.
  """
  intersection = np.asarray(intersection, np.float64).ravel()
  union = np.asarray(union, np.float64).ravel()
  if intersection.shape != union.shape:
    raise ValueError(f"mean_iou: {intersection.shape} intersections, {union.shape} unions.")
  classes = np.zeros(len(union), int) if class_ids is None else np.asarray(class_ids).ravel()
  if classes.shape != union.shape:
    raise ValueError(f"mean_iou: {classes.shape} class ids for {union.shape} examples.")
  if union.size == 0:
    raise ValueError("mean_iou: no examples.")
  _, index = np.unique(classes, return_inverse=True)
  inter_c = np.bincount(index, intersection)
  union_c = np.bincount(index, union)
  iou = np.where(union_c > 0, inter_c / np.maximum(union_c, 1), 1.0)
  return float(iou.mean())
