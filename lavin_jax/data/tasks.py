"""In-context tasks: each turns a source example into an (input, target) pair of clips.

A task reads one source example (schema in `lavin_jax.data.sources`) and returns
`(input, target)`, both float32 (T, H, W, 3) in [-1, 1]; image tasks have T = 1, video
tasks T = `config.num_frames` (1 + 4k, the ST-VAE's temporal compression). Image and
video versions of a task share one pair function: an image example is handled as a
one-frame clip.

Renderings of annotations (each has an exact inverse, `Task.decode`):
- depth: grey log depth over [depth_min, depth_max] metres, near bright:
  v = (log depth_max - log d) / (log depth_max - log depth_min) in [0, 1]; depths
  outside the range are clipped, and non-positive or non-finite depth renders as far.
  With 8-bit storage the decoded depth is within a relative error of
  exp(log(depth_max / depth_min) / 510) - 1 (1.4 % for the default range).
- normals: RGB = (n + 1) / 2, so the [-1, 1] pixels are the camera-frame normal itself;
  a zero normal (no surface) renders mid-grey and decodes to zero.
- optical flow: an HSV colour wheel, hue = direction of (dx, dy) (0 deg = +x, 90 deg = +y,
  image rows grow downwards), saturation = min(|flow| / flow_max, 1), value = 1, so zero
  flow is white. Frame 0 of the target clip shows zero flow; frame t > 0 shows the
  flow from frame t - 1 to t.
- instances: id k > 0 gets colour `palette(k)`, one of the 63 non-black colours of the
  RGB grid with levels {0, 1/3, 2/3, 1} in a fixed order (ids repeat every 63);
  background (0) is black. Decoding snaps each pixel to the nearest palette colour.
- masks (foreground segmentation, single-object detection): white on black; decoding
  thresholds the mean channel at mid-grey.
- panoptic: class c has colour `class_palette(c)`, one of the 214 colours of the RGB grid
  with levels {0, 1/5, ..., 1} other than black and white in a fixed order (classes
  repeat every 214); void (class 0) is black. A pixel of a class with instances (ids
  > 0) is white where a pixel of its class but another id (0 for a crowd) is within
  `panoptic_border` pixels (a square window): rims that part touching instances.
  Decoding snaps pixels to the nearest of black, white and the class colours and
  numbers the 4-connected regions of each class; each 8-connected white rim
  takes the class most common among its 4-neighbours, and each of its pixels the
  nearest region of that class within `panoptic_border` * sqrt(2) pixels (void beyond).
- pose: on black, each labelled person's limbs (the `keypoints.SKELETON` pairs whose
  joints are both labelled) are lines `pose_limb_width` wide of grey `pose_limb_grey`,
  and each labelled joint j a disc of radius `pose_joint_radius` of hue 360 j / 17
  degrees, full saturation, value 1 when visible (v = 2) and `pose_hidden_value` when
  hidden (v = 1). Decoding reads each joint's hue among the saturated pixels; every
  8-connected region of a joint's hue of at least a third of a disc's area is one point
  at its centroid, visible when its mean value is above the midpoint of the two: per
  frame (17, pose_max_points, 3) (x, y, v) points, largest regions first, zero padded.

Image operations use OpenCV (colour spaces, Canny, blur kernels, remapping).
"""

import dataclasses
from functools import partial
from typing import Callable

import cv2
import ml_collections
import numpy as np
from scipy import ndimage

from lavin_jax.configs import tasks as task_table
from lavin_jax.data import keypoints as keypoints_lib
from lavin_jax.io import pixels as pixels_lib

Array = np.ndarray
Pair = tuple[Array, Array]
# Per-frame annotation keys: (H, W[, C]) for images, (T, H, W[, C]) for videos.
FRAME_KEYS = ("depth", "normals", "instances", "semantic", "valid")


# ---------------------------------------------------------------------------
# Pixel conversions and renderings.
# ---------------------------------------------------------------------------


def _unit(pixels: Array) -> Array:
  """[-1, 1] -> [0, 1], clipped."""
  return np.clip((np.asarray(pixels, np.float32) + 1.0) / 2.0, 0.0, 1.0)


def _from_unit(values: Array) -> Array:
  """[0, 1] -> float32 [-1, 1]."""
  return (2.0 * values - 1.0).astype(np.float32)


def _grey(values: Array) -> Array:
  """(..., H, W) in [0, 1] -> (..., H, W, 3) pixels in [-1, 1]."""
  return np.repeat(_from_unit(values)[..., None], 3, axis=-1)


def render_depth(depth: Array, config: ml_collections.ConfigDict) -> Array:
  """Depth (..., H, W) metres -> grey pixels (..., H, W, 3); see the module docstring."""
  lo, hi = np.log(config.depth_min), np.log(config.depth_max)
  depth = np.where(np.isfinite(depth) & (depth > 0), depth, config.depth_max)
  log_depth = np.clip(np.log(np.maximum(depth, 1e-30)), lo, hi)
  return _grey((hi - log_depth) / (hi - lo))


def decode_depth(pixels: Array, config: ml_collections.ConfigDict) -> Array:
  """Grey depth pixels (..., H, W, 3) -> depth (..., H, W) metres."""
  lo, hi = np.log(config.depth_min), np.log(config.depth_max)
  return np.exp(hi - _unit(pixels).mean(-1) * (hi - lo)).astype(np.float32)


def render_normals(normals: Array) -> Array:
  """Unit normals (..., H, W, 3) -> pixels: RGB = (n + 1) / 2."""
  return np.clip(normals, -1.0, 1.0).astype(np.float32)


def decode_normals(pixels: Array) -> Array:
  """Pixels (..., H, W, 3) -> unit normals (zero where the pixel is mid-grey)."""
  n = np.asarray(pixels, np.float32)
  norm = np.linalg.norm(n, axis=-1, keepdims=True)
  return np.where(norm > 1e-6, n / np.maximum(norm, 1e-6), 0.0).astype(np.float32)


def _per_frame(fn: Callable[[Array], Array], frames: Array) -> Array:
  """Applies `fn` to each (H, W, ...) frame of (N, H, W, ...) and stacks."""
  return np.stack([fn(f) for f in frames])


def render_flow(flow: Array, config: ml_collections.ConfigDict) -> Array:
  """Flow (N, H, W, 2) pixels -> colour-wheel pixels (N, H, W, 3)."""
  flow = np.asarray(flow, np.float32)
  angle = np.degrees(np.arctan2(flow[..., 1], flow[..., 0])) % 360.0
  saturation = np.minimum(np.hypot(flow[..., 0], flow[..., 1]) / config.flow_max, 1.0)
  hsv = np.stack([angle, saturation, np.ones_like(angle)], axis=-1).astype(np.float32)
  rgb = _per_frame(lambda f: cv2.cvtColor(f, cv2.COLOR_HSV2RGB), hsv)
  return _from_unit(rgb)


def decode_flow(pixels: Array, config: ml_collections.ConfigDict) -> Array:
  """Colour-wheel pixels (N, H, W, 3) -> flow (N, H, W, 2) pixels (|flow| <= flow_max)."""
  hsv = _per_frame(lambda f: cv2.cvtColor(f, cv2.COLOR_RGB2HSV), _unit(pixels))
  angle = np.radians(hsv[..., 0])
  magnitude = hsv[..., 1] * config.flow_max
  return np.stack([magnitude * np.cos(angle), magnitude * np.sin(angle)], -1).astype(np.float32)


def _palette_table() -> Array:
  """(64, 3) pixels: row 0 black, rows 1..63 the non-black 4-level grid colours."""
  levels = np.arange(4) / 3.0
  grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
  order = (np.arange(63) * 22 + 62) % 63 + 1  # A fixed walk through the grid.
  return _from_unit(np.concatenate([grid[:1], grid[order]]))


_PALETTE = _palette_table()


def palette(ids: Array) -> Array:
  """Integer ids (...) -> pixels (..., 3): black for 0, else a palette colour."""
  ids = np.asarray(ids)
  return _PALETTE[np.where(ids > 0, (ids - 1) % 63 + 1, 0)]


def decode_palette(pixels: Array) -> Array:
  """Pixels (..., 3) -> ids (...) in [0, 63] of the nearest palette colour."""
  pixels = np.asarray(pixels, np.float32)
  distance = ((pixels[..., None, :] - _PALETTE) ** 2).sum(-1)
  return distance.argmin(-1).astype(np.int32)


_LEVELS = 6  # Of the class palette's RGB grid.
_CLASS_COLOURS = _LEVELS**3 - 2  # All grid colours but black and white.
_BORDER = _CLASS_COLOURS + 1  # The palette row of white, the instance rims' colour.
# Palette row of each grid colour (grid index r * 36 + g * 6 + b): black is row 0, the
# class colours rows 1.._CLASS_COLOURS in a fixed walk over the grid, white the last.
_GRID_ROW = np.zeros(_LEVELS**3, np.int64)
_GRID_ROW[(np.arange(_CLASS_COLOURS) * 79 + 107) % _CLASS_COLOURS + 1] = np.arange(
  1, _CLASS_COLOURS + 1
)
_GRID_ROW[-1] = _BORDER


def _class_palette_table() -> Array:
  """(216, 3) pixels: row 0 black, rows 1..214 the class colours, row 215 white."""
  levels = np.arange(_LEVELS) / (_LEVELS - 1)
  grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
  table = np.zeros_like(grid)
  table[_GRID_ROW] = grid
  return _from_unit(table)


_CLASS_PALETTE = _class_palette_table()


def class_palette(ids: Array) -> Array:
  """Class ids (...) -> pixels (..., 3): black for 0, else a class colour."""
  ids = np.asarray(ids)
  return _CLASS_PALETTE[np.where(ids > 0, (ids - 1) % _CLASS_COLOURS + 1, 0)]


def render_panoptic(semantic: Array, instances: Array, config: ml_collections.ConfigDict) -> Array:
  """Class and instance ids (N, H, W) -> pixels (N, H, W, 3); see the module docstring."""
  semantic, instances = np.asarray(semantic), np.asarray(instances)
  pixels = class_palette(semantic)
  size = (1,) + (2 * config.panoptic_border + 1,) * 2
  rim = np.zeros(semantic.shape, bool)
  for c in np.unique(semantic[instances > 0]):
    same = semantic == c
    low = ndimage.minimum_filter(np.where(same, instances, np.iinfo(np.int32).max), size)
    high = ndimage.maximum_filter(np.where(same, instances, -1), size)
    rim |= same & ((low != instances) | (high != instances))
  pixels[rim] = _CLASS_PALETTE[_BORDER]
  return pixels


def _rim_classes(rims: Array, classes: Array, present: Array) -> Array:
  """The class of each rim (labels 1..R): the most common class of its 4-neighbours."""
  votes = np.zeros((rims.max() + 1, len(present)), np.int64)
  pairs = (
    (rims[:, :-1], classes[:, 1:]),
    (rims[:, 1:], classes[:, :-1]),
    (rims[:-1], classes[1:]),
    (rims[1:], classes[:-1]),
  )
  for rim, neighbour in pairs:
    keep = (rim > 0) & (neighbour > 0)
    np.add.at(votes, (rim[keep], np.searchsorted(present, neighbour[keep])), 1)
  return np.where(votes.max(1) > 0, present[votes.argmax(1)], 0)


def decode_panoptic(pixels: Array, config: ml_collections.ConfigDict) -> Array:
  """Pixels (N, H, W, 3) -> int32 (N, H, W, 2): class id and region id (0: void)."""
  # The nearest colour of a full grid is the nearest level in each channel.
  levels = np.round(_unit(pixels) * (_LEVELS - 1)).astype(np.int64)
  nearest = _GRID_ROW[(levels[..., 0] * _LEVELS + levels[..., 1]) * _LEVELS + levels[..., 2]]
  reach = config.panoptic_border * np.sqrt(2.0) + 1e-6
  out = np.zeros(nearest.shape + (2,), np.int32)
  for frame, out_frame in zip(nearest, out):
    border = frame == _BORDER
    classes = np.where(border, 0, frame)
    present = np.unique(classes[classes > 0])
    for c in present:
      _, regions = cv2.connectedComponents((classes == c).astype(np.uint8), connectivity=4)
      inside = regions > 0
      out_frame[inside, 0] = c
      out_frame[inside, 1] = regions[inside] + out_frame[..., 1].max()
    if not (border.any() and present.size):
      continue
    _, rims = cv2.connectedComponents(border.astype(np.uint8), connectivity=8)
    owner = _rim_classes(rims, classes, present)[rims]
    for c in present:
      pick = border & (owner == c)
      if pick.any():
        far, (rows, cols) = ndimage.distance_transform_edt(classes != c, return_indices=True)
        fill = pick & (far <= reach)
        out_frame[fill] = out_frame[rows[fill], cols[fill]]
  return out


def _joint_colours(hidden_value: float) -> Array:
  """(2, 17, 3) unit RGB of each joint: row 0 hidden (v = 1), row 1 visible (v = 2)."""
  hue = 360.0 * np.arange(keypoints_lib.NUM_JOINTS) / keypoints_lib.NUM_JOINTS
  values = np.array([hidden_value, 1.0])[:, None]
  hsv = np.stack(np.broadcast_arrays(hue, 1.0, values), -1).astype(np.float32)
  return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


_SHIFT = 4  # Fractional bits of the points OpenCV draws.


def _cv_point(xy: Array) -> tuple[int, int]:
  """(x, y) in the pixel frame of keypoints -> OpenCV's fixed-point pixel indices."""
  return tuple(int(round((c - 0.5) * 2**_SHIFT)) for c in xy)


def render_pose(
  keypoints: Array, height: int, width: int, config: ml_collections.ConfigDict
) -> Array:
  """Keypoints (N, 17, 3) -> pixels (H, W, 3); see the module docstring."""
  people = keypoints_lib.as_keypoints(keypoints)
  canvas = np.zeros((height, width, 3), np.float32)
  grey = (float(config.pose_limb_grey),) * 3
  for person in people:
    for a, b in keypoints_lib.SKELETON:
      if person[a, 2] > 0 and person[b, 2] > 0:
        start, end = _cv_point(person[a, :2]), _cv_point(person[b, :2])
        cv2.line(canvas, start, end, grey, config.pose_limb_width, cv2.LINE_8, _SHIFT)
  colours = _joint_colours(config.pose_hidden_value)
  radius = int(config.pose_joint_radius * 2**_SHIFT)
  for person in people:
    for j in np.flatnonzero(person[:, 2] > 0):
      colour = tuple(float(c) for c in colours[int(person[j, 2] > 1), j])
      cv2.circle(canvas, _cv_point(person[j, :2]), radius, colour, -1, cv2.LINE_8, _SHIFT)
  return _from_unit(canvas)


def decode_pose(pixels: Array, config: ml_collections.ConfigDict) -> Array:
  """Pixels (N, H, W, 3) -> points (N, 17, pose_max_points, 3); see the module docstring."""
  joints, slots = keypoints_lib.NUM_JOINTS, config.pose_max_points
  hsv = _per_frame(lambda f: cv2.cvtColor(f, cv2.COLOR_RGB2HSV), _unit(pixels))
  joint = np.round(hsv[..., 0] * joints / 360.0).astype(np.int64) % joints
  coloured = (hsv[..., 1] > 0.5) & (hsv[..., 2] > config.pose_hidden_value / 2)
  min_area = np.pi * config.pose_joint_radius**2 / 3
  visible_above = (1.0 + config.pose_hidden_value) / 2
  out = np.zeros((len(hsv), joints, slots, 3), np.float32)
  for t in range(len(hsv)):
    for j in range(joints):
      mask = (coloured[t] & (joint[t] == j)).astype(np.uint8)
      _, regions, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
      areas = stats[1:, cv2.CC_STAT_AREA]
      order = np.argsort(-areas, kind="stable")[:slots]
      for slot, r in enumerate(order[areas[order] >= min_area]):
        value = hsv[t, ..., 2][regions == r + 1].mean()
        x, y = centroids[r + 1] + 0.5
        out[t, j, slot] = x, y, 2.0 if value > visible_above else 1.0
  return out


def render_mask(mask: Array) -> Array:
  """Boolean (..., H, W) -> white-on-black pixels (..., H, W, 3)."""
  return _grey(np.asarray(mask, np.float32))


def decode_mask(pixels: Array) -> Array:
  """Pixels (..., H, W, 3) -> boolean mask (..., H, W)."""
  return np.asarray(pixels, np.float32).mean(-1) > 0.0


def box_mask(box: Array, height: int, width: int) -> Array:
  """[y0, x0, y1, x1] (pixels, y1 and x1 exclusive) -> boolean (H, W) of the box."""
  y0, x0, y1, x1 = np.round(np.asarray(box, np.float64)).astype(int)
  canvas = np.zeros((height, width), np.uint8)
  if y1 > y0 and x1 > x0:
    cv2.rectangle(canvas, (int(x0), int(y0)), (int(x1) - 1, int(y1) - 1), 1, cv2.FILLED)
  return canvas.astype(bool)


# ---------------------------------------------------------------------------
# Degradations: uint8 frame (H, W, 3) -> uint8 frame.
# ---------------------------------------------------------------------------


def line_kernel(length: int, angle_degrees: float) -> Array:
  """Normalised (L, L) kernel of a centred line segment (L odd) at the given angle."""
  length = int(length) | 1
  kernel = np.zeros((length, length), np.float32)
  c, r = length // 2, (length - 1) / 2.0
  dx, dy = r * np.cos(np.radians(angle_degrees)), r * np.sin(np.radians(angle_degrees))
  start = (int(round(c - dx)), int(round(c - dy)))
  end = (int(round(c + dx)), int(round(c + dy)))
  cv2.line(kernel, start, end, 1.0, 1, cv2.LINE_AA)
  return kernel / kernel.sum()


def inpainting_mask(
  height: int, width: int, rng: np.random.Generator, config: ml_collections.ConfigDict
) -> Array:
  """Boolean (H, W) square hole of side inpaint_fraction * min(H, W)."""
  side = int(round(config.inpaint_fraction * min(height, width)))
  if config.inpaint_random:
    y0 = int(rng.integers(0, height - side + 1))
    x0 = int(rng.integers(0, width - side + 1))
  else:
    y0, x0 = (height - side) // 2, (width - side) // 2
  mask = np.zeros((height, width), bool)
  mask[y0 : y0 + side, x0 : x0 + side] = True
  return mask


def _gray(frame: Array) -> Array:
  return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def _motion_blur(frame, rng, config):
  length = rng.integers(config.motion_blur_length[0], config.motion_blur_length[1] + 1)
  return cv2.filter2D(
    frame, -1, line_kernel(length, rng.uniform(0.0, 180.0)), borderType=cv2.BORDER_REFLECT
  )


def _glass_blur(frame, rng, config):
  height, width = frame.shape[:2]
  blurred = cv2.GaussianBlur(frame, (0, 0), config.glass_sigma)
  jitter = rng.integers(
    -config.glass_jitter, config.glass_jitter + 1, size=(2, height, width)
  ).astype(np.float32)
  cols, rows = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
  shuffled = cv2.remap(
    blurred, cols + jitter[0], rows + jitter[1], cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT
  )
  return cv2.GaussianBlur(shuffled, (0, 0), config.glass_sigma)


def _rain(frame, rng, config):
  """Adds streaks (screen blend): the result is never darker than `frame`."""
  seeds = (rng.random(frame.shape[:2]) < config.rain_density).astype(np.float32)
  length = rng.integers(config.rain_length[0], config.rain_length[1] + 1)
  angle = 90.0 + rng.uniform(-config.rain_angle, config.rain_angle)
  streaks = cv2.filter2D(seeds, -1, line_kernel(length, angle))
  streaks = np.clip(streaks * length * config.rain_strength, 0.0, 1.0)[..., None]
  image = frame.astype(np.float32)
  return np.round(image + (255.0 - image) * streaks).astype(np.uint8)


# ---------------------------------------------------------------------------
# Pair functions: (clip, rng, config) -> (input, target) clips (T, H, W, 3).
# ---------------------------------------------------------------------------


def _photometric(degrade, clip, rng, config):
  """Pair: input = degrade(frame) for each frame, target = the frames."""
  frames = clip["frames"]
  degraded = _per_frame(lambda f: degrade(f, rng, config), frames)
  return pixels_lib.to_float(degraded), pixels_lib.to_float(frames)


def _grey_input(frame, rng, config):
  del rng, config
  return np.repeat(_gray(frame)[..., None], 3, axis=-1)


def _canny(clip, rng, config):
  del rng
  edges = _per_frame(
    lambda f: cv2.Canny(_gray(f), config.canny_low, config.canny_high), clip["frames"]
  )
  return pixels_lib.to_float(clip["frames"]), render_mask(edges > 0)


def _inpainting(clip, rng, config):
  frames = pixels_lib.to_float(clip["frames"])
  mask = inpainting_mask(*frames.shape[1:3], rng, config)
  holed = frames.copy()
  holed[:, mask] = 0.0
  return holed, frames


def _annotation(render, clip, rng, config):
  """Pair: input = the frames, target = render(clip, config)."""
  del rng
  return pixels_lib.to_float(clip["frames"]), render(clip, config)


def _swapped(render, clip, rng, config):
  """Pair: input = render(clip, config), target = the frames."""
  inputs, targets = _annotation(render, clip, rng, config)
  return targets, inputs


def _depth(clip, config):
  return render_depth(clip["depth"], config)


def _normals(clip, config):
  del config
  return render_normals(clip["normals"])


def _instances(clip, config):
  del config
  return palette(clip["instances"])


def _panoptic(clip, config):
  return render_panoptic(clip["semantic"], clip["instances"], config)


def _pose(clip, config):
  height, width = clip["frames"].shape[1:3]
  return render_pose(clip["keypoints"], height, width, config)[None]


def _foreground(clip, config):
  del config
  return render_mask(clip["instances"] > 0)


def _largest_box(clip, config):
  del config
  height, width = clip["frames"].shape[1:3]
  boxes = np.asarray(clip["boxes"], np.float32).reshape(-1, 4)
  areas = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
  if not areas.size or areas.max() <= 0:
    return render_mask(np.zeros((1, height, width), bool))
  return render_mask(box_mask(boxes[areas.argmax()], height, width)[None])


def _flow(clip, config):
  flow = render_flow(clip["flow"], config)
  still = np.ones_like(flow[:1])  # Zero flow is white.
  return np.concatenate([still, flow])


def _frame_prediction(clip, rng, config):
  del rng
  frames = pixels_lib.to_float(clip["frames"])
  return frames[: config.num_frames], frames[config.num_frames :]


# ---------------------------------------------------------------------------
# The registry.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """How a task makes a pair and how its target decodes (what it reads: TASKS)."""

  pair_fn: Callable[[dict, np.random.Generator, ml_collections.ConfigDict], Pair]
  decode_fn: Callable[[Array, ml_collections.ConfigDict], Array] | None = None
  frames_per_clip: int = 1  # Source frames consumed per output frame.


def _without_config(decode, pixels, config):
  del config
  return decode(pixels)


def _flow_decode(pixels, config):
  return decode_flow(pixels[1:], config)  # Frame 0 is the still frame.


_DEPTH = TaskSpec(partial(_annotation, _depth), decode_depth)
_NORMALS = TaskSpec(partial(_annotation, _normals), partial(_without_config, decode_normals))
_INSTANCES = TaskSpec(partial(_annotation, _instances), partial(_without_config, decode_palette))
_MASK_DECODE = partial(_without_config, decode_mask)

# Pair functions of the tasks of lavin_jax.configs.tasks.TASKS, in the same order.
REGISTRY: dict[str, TaskSpec] = {
  # Image tasks.
  "colorization": TaskSpec(partial(_photometric, _grey_input)),
  "inpainting": TaskSpec(_inpainting),
  "canny_edges": TaskSpec(_canny, _MASK_DECODE),
  "de_motion_blur": TaskSpec(partial(_photometric, _motion_blur)),
  "de_glass_blur": TaskSpec(partial(_photometric, _glass_blur)),
  "de_raining": TaskSpec(partial(_photometric, _rain)),
  "depth_estimation": _DEPTH,
  "depth_to_image": TaskSpec(partial(_swapped, _depth)),
  "normal_estimation": _NORMALS,
  "normal_to_image": TaskSpec(partial(_swapped, _normals)),
  "instance_segmentation": _INSTANCES,
  "panoptic_segmentation": TaskSpec(partial(_annotation, _panoptic), decode_panoptic),
  "detection": TaskSpec(partial(_annotation, _largest_box), _MASK_DECODE),
  "foreground_segmentation": TaskSpec(partial(_annotation, _foreground), _MASK_DECODE),
  "pose_estimation": TaskSpec(partial(_annotation, _pose), decode_pose),
  "pose_to_image": TaskSpec(partial(_swapped, _pose)),
  # Video tasks.
  "frame_prediction": TaskSpec(_frame_prediction, frames_per_clip=2),
  "video_depth": _DEPTH,
  "video_normals": _NORMALS,
  "optical_flow": TaskSpec(partial(_annotation, _flow), _flow_decode),
  "video_instance_segmentation": _INSTANCES,
  "depth_to_video": TaskSpec(partial(_swapped, _depth)),
  "normal_to_video": TaskSpec(partial(_swapped, _normals)),
}
TASK_NAMES = task_table.TASK_NAMES  # A task's id is its index here.


def task_id(name: str) -> int:
  """The integer id of a task (its index in TASK_NAMES)."""
  _check_name(name)
  return TASK_NAMES.index(name)


def _check_name(name: str) -> None:
  if name not in REGISTRY:
    raise ValueError(f"Unknown task {name!r}; known tasks: {', '.join(TASK_NAMES)}.")


def check_num_frames(num_frames: int) -> None:
  """Raises unless num_frames = 1 + 4k (k >= 0)."""
  if num_frames < 1 or (num_frames - 1) % 4:
    raise ValueError(
      f"num_frames must be 1 + 4k (1, 5, 9, ...) to match the ST-VAE's "
      f"temporal compression; got {num_frames}."
    )


def take_frames(example: dict, start: int, length: int) -> dict:
  """Frames [start, start + length) of a video example, its annotations alike."""
  out = dict(example)
  out["video"] = example["video"][start : start + length]
  for key in FRAME_KEYS:
    if key in example:
      out[key] = example[key][start : start + length]
  if "flow" in example:
    out["flow"] = example["flow"][start : start + length - 1]
  return out


@dataclasses.dataclass(frozen=True)
class Task:
  """A task bound to its options; `task(example, rng)` -> (input, target)."""

  name: str
  spec: TaskSpec
  config: ml_collections.ConfigDict

  @property
  def id(self) -> int:
    return TASK_NAMES.index(self.name)

  @property
  def info(self) -> task_table.TaskInfo:
    """What the task reads and how it is scored (lavin_jax.configs.tasks.TASKS)."""
    return task_table.TASKS[self.name]

  @property
  def media(self) -> str:
    return self.info.media

  @property
  def needs(self) -> tuple[str, ...]:
    """Source example keys this task reads."""
    return (self.info.media,) + self.info.annotations

  @property
  def num_frames(self) -> int:
    """Frames T of the input and of the target clip."""
    return 1 if self.media == "image" else self.config.num_frames

  @property
  def source_frames(self) -> int:
    """Frames a video example must have (0 for image tasks)."""
    return 0 if self.media == "image" else self.num_frames * self.spec.frames_per_clip

  def check(self, example: dict) -> None:
    """Raises a ValueError naming the task and what `example` lacks."""
    for key in self.needs:
      if key not in example:
        raise ValueError(
          f"Task {self.name!r} needs {key!r} in each source example, but the example "
          f"has only {sorted(example)}; use a source with {key!r} or drop the task "
          "(weight 0)."
        )
    if self.source_frames and len(example["video"]) < self.source_frames:
      raise ValueError(
        f"Task {self.name!r} needs clips of at least {self.source_frames} frames, but "
        f"the example has {len(example['video'])}; lower num_frames or use longer "
        "clips."
      )

  def window(self, example: dict, rng: np.random.Generator) -> dict:
    """A random window of `source_frames` frames of a video example (images: as is)."""
    self.check(example)
    if not self.source_frames:
      return example
    start = rng.integers(0, len(example["video"]) - self.source_frames + 1)
    return take_frames(example, int(start), self.source_frames)

  def __call__(self, example: dict, rng: np.random.Generator) -> Pair:
    """(input, target), each float32 (T, H, W, 3) in [-1, 1]."""
    self.check(example)
    if self.media == "image":
      clip = {k: v[None] if k in FRAME_KEYS else v for k, v in example.items()}
      clip["frames"] = example["image"][None]
    else:
      clip = take_frames(example, 0, self.source_frames)
      clip["frames"] = clip["video"]
    inputs, targets = self.spec.pair_fn(clip, rng, self.config)
    return inputs.astype(np.float32), targets.astype(np.float32)

  def decode(self, target: Array) -> Array:
    """Values of a rendered target (T, H, W, 3): depth, normals, flow, ids, a mask,
    panoptic classes and regions, or keypoints (see the module docstring)."""
    if self.spec.decode_fn is None:
      raise ValueError(
        f"Task {self.name!r} has no decoder: its target is an image to be compared as pixels."
      )
    return self.spec.decode_fn(np.asarray(target, np.float32), self.config)


def get_task(name: str, config: ml_collections.ConfigDict | None = None) -> Task:
  """The task `name` with options `config` (default `lavin_jax.configs.tasks.options()`)."""
  _check_name(name)
  config = task_table.options() if config is None else config
  check_num_frames(config.num_frames)
  return Task(name, REGISTRY[name], config)
