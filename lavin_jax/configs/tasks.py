"""The task table and the tasks' options: which tasks exist, what they read, how they score.

Every other list of tasks derives from `TASKS` (the data layer's pair functions, the
pipeline's task weights, the evaluation's metric families, the image-only tasks). A
task's id is its index in `TASK_NAMES`.

Metric families (lavin_jax.eval.runner): mse, psnr, ssim, lpips, fid on pixels; depth,
normals, mask_iou, segment_iou, flow, keypoints (PCK), panoptic (PQ) on the prediction
decoded back to values. Tasks the paper does not score get the nearest fitting measure.
"""

from typing import NamedTuple

import ml_collections


class TaskInfo(NamedTuple):
  media: str  # 'image' or 'video': the source key of the pixels
  annotations: tuple[str, ...]  # further source keys the task reads
  metrics: tuple[str, ...]  # metric families that score it


_GENERATION = ("mse", "psnr", "lpips", "fid")
_RESTORATION = ("psnr", "ssim")

TASKS: dict[str, TaskInfo] = {
  # Image tasks.
  "colorization": TaskInfo("image", (), ("mse", "lpips")),
  "inpainting": TaskInfo("image", (), _GENERATION),
  "canny_edges": TaskInfo("image", (), ("mask_iou",)),
  "de_motion_blur": TaskInfo("image", (), _RESTORATION),
  "de_glass_blur": TaskInfo("image", (), _RESTORATION),
  "de_raining": TaskInfo("image", (), _RESTORATION),
  "depth_estimation": TaskInfo("image", ("depth",), ("depth",)),
  "depth_to_image": TaskInfo("image", ("depth",), _GENERATION),
  "normal_estimation": TaskInfo("image", ("normals",), ("normals",)),
  "normal_to_image": TaskInfo("image", ("normals",), _GENERATION),
  "instance_segmentation": TaskInfo("image", ("instances",), ("segment_iou",)),
  "panoptic_segmentation": TaskInfo("image", ("semantic", "instances"), ("panoptic",)),
  "detection": TaskInfo("image", ("boxes",), ("mask_iou",)),
  "foreground_segmentation": TaskInfo("image", ("instances",), ("mask_iou",)),
  "pose_estimation": TaskInfo("image", ("keypoints",), ("keypoints",)),
  "pose_to_image": TaskInfo("image", ("keypoints",), _GENERATION),
  # Video tasks.
  "frame_prediction": TaskInfo("video", (), _RESTORATION + ("lpips",)),
  "video_depth": TaskInfo("video", ("depth",), ("depth",)),
  "video_normals": TaskInfo("video", ("normals",), ("normals",)),
  "optical_flow": TaskInfo("video", ("flow",), ("flow",)),
  "video_instance_segmentation": TaskInfo("video", ("instances",), ("segment_iou",)),
  "depth_to_video": TaskInfo("video", ("depth",), _GENERATION),
  "normal_to_video": TaskInfo("video", ("normals",), _GENERATION),
}
TASK_NAMES = tuple(TASKS)
# Tasks that read nothing but a still: any image collection can train them.
IMAGE_ONLY_TASKS = tuple(n for n, t in TASKS.items() if t.media == "image" and not t.annotations)
# What the built-in rendered data set (lavin_jax.data.synthetic), the training configs'
# default source, annotates: every task but the pose tasks.
SYNTHETIC_ANNOTATIONS = ("depth", "normals", "instances", "semantic", "boxes", "flow")


def options() -> ml_collections.ConfigDict:
  """Default options of the tasks (numbers at the pipeline resolution, in pixels)."""
  c = ml_collections.ConfigDict()
  c.num_frames = 5  # Frames of a video task's clips: 1 + 4k.
  c.depth_min = 0.1  # Metres; the depth rendering's range.
  c.depth_max = 100.0
  c.flow_max = 32.0  # Pixels; flow of this length or more renders fully saturated.
  c.inpaint_fraction = 0.5  # Hole side over image side: 128 px at 256 px.
  c.inpaint_random = False  # False: centred hole; True: uniformly placed.
  c.canny_low = 100.0
  c.canny_high = 200.0
  c.motion_blur_length = (9, 25)  # Kernel length range.
  c.glass_sigma = 0.7  # Gaussian blur before and after the pixel jitter.
  c.glass_jitter = 2  # Pixels move by up to this many in x and y.
  c.rain_density = 0.004  # Fraction of pixels that start a streak.
  c.rain_length = (15, 35)
  c.rain_angle = 20.0  # Degrees either side of vertical.
  c.rain_strength = 0.8
  c.panoptic_border = 2  # Pixels of each thing instance's rim drawn as the border colour.
  c.pose_joint_radius = 4  # Pixels.
  c.pose_limb_width = 2  # Pixels.
  c.pose_limb_grey = 0.5  # Grey level of the limbs, in [0, 1].
  c.pose_hidden_value = 0.5  # Brightness of hidden joints (v = 1); visible ones: 1.
  c.pose_max_points = 20  # Points per joint decoded from one frame.
  c.pose_pck_threshold = 0.05  # PCK: a joint is found within this fraction of the side.
  return c


def weights(
  media: str = "image", annotations: tuple[str, ...] = SYNTHETIC_ANNOTATIONS
) -> ml_collections.ConfigDict:
  """Task weights: 1.0 for the tasks of `media` that read only `annotations`, else 0.0."""
  if media not in ("image", "video"):
    raise ValueError(f"media must be 'image' or 'video', got {media!r}.")
  return ml_collections.ConfigDict(
    {
      n: float(t.media == media and set(t.annotations) <= set(annotations))
      for n, t in TASKS.items()
    }
  )
