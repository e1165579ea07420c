"""Keypoint matching for pose estimation: PCK and precision of decoded joints.

Per joint type, the true keypoints (labelled, v > 0) and the decoded points of that
joint (`lavin_jax.data.tasks.decode_pose`) are matched one to one, closest pairs first,
while a pair is at most `radius` pixels apart. PCK is the share of true keypoints
matched, precision the share of decoded points matched; over a data set both pool the
counts. Visibility is not scored.
"""

import numpy as np

from lavin_jax.data import keypoints as keypoints_lib


def match_counts(points: np.ndarray, truth: np.ndarray, radius: float) -> np.ndarray:
  """[matched, true, predicted] counts of decoded (17, P, 3) points vs true (N, 17, 3)."""
  truth = keypoints_lib.as_keypoints(truth)
  counts = np.zeros(3, np.int64)
  for j in range(keypoints_lib.NUM_JOINTS):
    true_xy = truth[:, j][truth[:, j, 2] > 0, :2]
    pred_xy = points[j][points[j, :, 2] > 0, :2]
    counts[1:] += len(true_xy), len(pred_xy)
    if not (len(true_xy) and len(pred_xy)):
      continue
    distance = np.linalg.norm(true_xy[:, None] - pred_xy[None], axis=-1)
    for _ in range(min(distance.shape)):
      i, k = np.unravel_index(np.argmin(distance), distance.shape)
      if distance[i, k] > radius:
        break
      counts[0] += 1
      distance[i, :] = distance[:, k] = np.inf
  return counts


def scores(counts: np.ndarray) -> dict[str, float]:
  """{'pck', 'keypoint_precision'} of [matched, true, predicted] counts (1.0 over none)."""
  matched, true, predicted = (float(c) for c in counts)
  return {
    "pck": matched / true if true else 1.0,
    "keypoint_precision": matched / predicted if predicted else 1.0,
  }
