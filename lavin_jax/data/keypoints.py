"""Human keypoints: COCO's 17 joints, its skeleton, and keypoints under a crop.

Keypoints are float32 (N, 17, 3), one row per person, joints in `NAMES` order, each
(x, y, v): x, y in the pixel frame of boxes (pixel (row i, column j) spans
[j, j + 1) x [i, i + 1), its centre is (j + 0.5, i + 0.5)); v is COCO's visibility,
0 not labelled (x = y = 0), 1 labelled but hidden, 2 labelled and visible.
"""

import numpy as np

NAMES = (
  "nose",
  "left_eye",
  "right_eye",
  "left_ear",
  "right_ear",
  "left_shoulder",
  "right_shoulder",
  "left_elbow",
  "right_elbow",
  "left_wrist",
  "right_wrist",
  "left_hip",
  "right_hip",
  "left_knee",
  "right_knee",
  "left_ankle",
  "right_ankle",
)
NUM_JOINTS = len(NAMES)
# COCO's person skeleton (its 'skeleton' field, there 1-based): limbs as joint pairs.
SKELETON = (
  (15, 13),
  (13, 11),
  (16, 14),
  (14, 12),
  (11, 12),
  (5, 11),
  (6, 12),
  (5, 6),
  (5, 7),
  (6, 8),
  (7, 9),
  (8, 10),
  (1, 2),
  (0, 1),
  (0, 2),
  (1, 3),
  (2, 4),
  (3, 5),
  (4, 6),
)


def as_keypoints(array) -> np.ndarray:
  """float32 (N, 17, 3) from any array of N * 51 numbers; ValueError otherwise."""
  array = np.asarray(array, np.float32)
  if array.size % (NUM_JOINTS * 3):
    raise ValueError(
      f"Keypoints need {NUM_JOINTS} (x, y, v) triples per person; got shape {array.shape}."
    )
  return array.reshape(-1, NUM_JOINTS, 3)


def fit(keypoints, y0: int, x0: int, side: int, resolution: int) -> np.ndarray:
  """Keypoints in the square crop [y0, y0 + side) x [x0, x0 + side) resized to resolution.

  Joints outside the crop become unlabelled (0, 0, 0); people left without a labelled
  joint are dropped.
  """
  keypoints = as_keypoints(keypoints)
  x, y, v = keypoints[..., 0] - x0, keypoints[..., 1] - y0, keypoints[..., 2]
  inside = (v > 0) & (x >= 0) & (x < side) & (y >= 0) & (y < side)
  scale = resolution / side
  out = np.stack([x * scale, y * scale, v], -1) * inside[..., None]
  return out[inside.any(-1)].astype(np.float32)
