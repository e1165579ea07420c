"""Tasks: shapes, ranges, one pixel-level property each, decoders and bad inputs."""

import cv2
import numpy as np
import pytest

from lavin_jax.configs import tasks as task_table
from lavin_jax.data import tasks

H, W, FRAMES = 32, 40, 10


def _rng(seed=0):
  return np.random.default_rng(seed)


def _textured(rng, shape):
  """Smooth random colours plus fine noise: edges and texture for every task."""
  base = rng.integers(0, 256, shape[:-3] + (4, 5, 3)).astype(np.float32)
  base = np.repeat(np.repeat(base, shape[-3] // 4, -3), shape[-2] // 5, -2)
  return np.clip(base + rng.normal(0, 10, shape), 0, 255).astype(np.uint8)


def _annotations(rng, lead):
  normals = rng.normal(size=lead + (H, W, 3)).astype(np.float32)
  instances = np.zeros(lead + (H, W), np.int32)
  instances[..., 4:12, 5:15] = 1
  instances[..., 16:30, 20:38] = 2
  return {
    "depth": rng.uniform(0.5, 30.0, lead + (H, W)).astype(np.float32),
    "normals": normals / np.linalg.norm(normals, axis=-1, keepdims=True),
    "instances": instances,
    "semantic": np.where(instances > 0, 1, 3).astype(np.int32),
  }


@pytest.fixture(scope="module")
def image_example():
  rng = _rng(1)
  ex = {"image": _textured(rng, (H, W, 3)), **_annotations(rng, ())}
  ex["boxes"] = np.array([[4, 5, 12, 15], [16, 20, 30, 38]], np.float32)
  ex["keypoints"] = np.zeros((1, 17, 3), np.float32)
  ex["keypoints"][0, :6] = [  # (x, y, v): nose, eyes, an unlabelled ear, ear, shoulder.
    [6.5, 6.5, 2],
    [16.5, 6.5, 2],
    [26.5, 14.5, 1],
    [0, 0, 0],
    [30.5, 26.5, 2],
    [10.5, 24.5, 2],
  ]
  return ex


@pytest.fixture(scope="module")
def video_example():
  rng = _rng(2)
  ex = {"video": _textured(rng, (FRAMES, H, W, 3)), **_annotations(rng, (FRAMES,))}
  ex["flow"] = rng.normal(0, 6, (FRAMES - 1, H, W, 2)).astype(np.float32)
  return ex


@pytest.mark.parametrize("name", tasks.TASK_NAMES)
def test_shapes_ranges_and_determinism(name, image_example, video_example):
  task = tasks.get_task(name)
  example = image_example if task.media == "image" else video_example
  inputs, targets = task(example, _rng(3))
  assert inputs.shape == targets.shape == (task.num_frames, H, W, 3)
  assert inputs.dtype == targets.dtype == np.float32
  for x in (inputs, targets):
    assert x.min() >= -1.0 and x.max() <= 1.0
  assert not np.array_equal(inputs, targets)
  again = task(example, _rng(3))
  np.testing.assert_array_equal(again[0], inputs)
  np.testing.assert_array_equal(again[1], targets)
  assert tasks.TASK_NAMES[task.id] == name


def test_every_required_task_is_registered():
  images = {
    "colorization",
    "inpainting",
    "canny_edges",
    "de_motion_blur",
    "de_glass_blur",
    "de_raining",
    "depth_estimation",
    "depth_to_image",
    "normal_estimation",
    "normal_to_image",
    "instance_segmentation",
    "panoptic_segmentation",
    "detection",
    "foreground_segmentation",
    "pose_estimation",
    "pose_to_image",
  }
  videos = {
    "frame_prediction",
    "video_depth",
    "video_normals",
    "optical_flow",
    "video_instance_segmentation",
    "depth_to_video",
    "normal_to_video",
  }
  assert {n for n in tasks.TASK_NAMES if tasks.get_task(n).media == "image"} >= images
  assert {n for n in tasks.TASK_NAMES if tasks.get_task(n).media == "video"} >= videos
  assert tasks.get_task("video_depth").num_frames == task_table.options().num_frames
  # The paper's 22 (appendix C) and instance segmentation (its Table 4).
  assert len(tasks.TASK_NAMES) == 23


def test_default_weights_fit_the_synthetic_data_set():
  from lavin_jax.data import render  # pylint: disable=g-import-not-at-top

  keys = set(render.render_image(0, 8, 8)) | set(render.render_clip(0, 2, 8, 8))
  assert set(task_table.SYNTHETIC_ANNOTATIONS) <= keys
  image = task_table.weights("image")
  assert image["pose_estimation"] == image["pose_to_image"] == 0.0
  assert image["depth_estimation"] == 1.0 and task_table.weights("video")["optical_flow"] == 1.0
  assert task_table.weights("image", ("keypoints",))["pose_estimation"] == 1.0


# ---------------------------------------------------------------------------
# Photometric tasks.
# ---------------------------------------------------------------------------


def test_colorization_input_is_luma_grey(image_example):
  inputs, targets = tasks.get_task("colorization")(image_example, _rng())
  np.testing.assert_array_equal(inputs[..., 0], inputs[..., 1])
  np.testing.assert_array_equal(inputs[..., 0], inputs[..., 2])
  rgb = image_example["image"].astype(np.float64)
  luma = rgb @ np.array([0.299, 0.587, 0.114])  # ITU-R BT.601
  np.testing.assert_allclose((inputs[0, ..., 0] + 1) * 127.5, luma, atol=0.51)
  np.testing.assert_allclose(targets[0], rgb / 127.5 - 1, atol=1e-6)


def test_inpainting_hole_is_where_the_mask_says(image_example):
  task = tasks.get_task("inpainting")
  inputs, targets = task(image_example, _rng())
  hole = np.zeros((H, W), bool)
  hole[8:24, 12:28] = True  # Side 0.5 * 32 = 16, centred in 32 x 40.
  np.testing.assert_array_equal(tasks.inpainting_mask(H, W, _rng(), task.config), hole)
  assert np.all(inputs[0][hole] == 0.0)
  np.testing.assert_array_equal(inputs[0][~hole], targets[0][~hole])


def test_inpainting_hole_is_128_at_256():
  mask = tasks.inpainting_mask(256, 256, _rng(), task_table.options())
  rows, cols = np.nonzero(mask)
  assert (rows.min(), rows.max(), cols.min(), cols.max()) == (64, 191, 64, 191)


def test_random_inpainting_hole_follows_the_rng(image_example):
  config = task_table.options()
  config.inpaint_random = True
  task = tasks.get_task("inpainting", config)
  holes = set()
  for seed in range(6):
    inputs, targets = task(image_example, _rng(seed))
    mask = tasks.inpainting_mask(H, W, _rng(seed), config)
    assert mask.sum() == 16 * 16
    assert np.all(inputs[0][mask] == 0.0)
    np.testing.assert_array_equal(inputs[0][~mask], targets[0][~mask])
    holes.add(mask.tobytes())
  assert len(holes) > 1


def test_canny_marks_a_step_edge_only():
  image = np.full((H, W, 3), 40, np.uint8)
  image[:, 20:] = 220
  inputs, targets = tasks.get_task("canny_edges")({"image": image}, _rng())
  assert set(np.unique(targets)) == {-1.0, 1.0}
  edge_cols = np.unique(np.nonzero(targets[0, ..., 0] > 0)[1])
  assert set(edge_cols) <= {19, 20} and len(edge_cols) >= 1
  assert (targets[0, :, edge_cols[0], 0] > 0).all()  # The whole column.
  np.testing.assert_allclose(inputs[0], image / 127.5 - 1, atol=1e-6)


def _gradient_energy(x):
  return np.abs(np.diff(x, axis=-2)).mean() + np.abs(np.diff(x, axis=-3)).mean()


@pytest.mark.parametrize("name", ["de_motion_blur", "de_glass_blur"])
def test_blurs_keep_constants_and_smooth(name, image_example):
  task = tasks.get_task(name)
  flat = {"image": np.full((H, W, 3), 77, np.uint8)}
  inputs, targets = task(flat, _rng())
  np.testing.assert_array_equal(inputs, targets)
  inputs, targets = task(image_example, _rng())
  assert _gradient_energy(inputs) < 0.8 * _gradient_energy(targets)


def test_line_kernel_is_a_normalised_segment():
  kernel = tasks.line_kernel(9, 0.0)
  assert kernel.shape == (9, 9)
  np.testing.assert_allclose(kernel.sum(), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(np.nonzero(kernel.sum(1))[0], [4])  # One row.
  vertical = tasks.line_kernel(9, 90.0)
  np.testing.assert_array_equal(np.nonzero(vertical.sum(0))[0], [4])


def test_rain_only_brightens(image_example):
  inputs, targets = tasks.get_task("de_raining")(image_example, _rng())
  assert np.all(inputs >= targets - 1e-6)
  assert (inputs > targets + 0.05).mean() > 0.005


# ---------------------------------------------------------------------------
# Annotation renderings and their decoders.
# ---------------------------------------------------------------------------


def test_depth_rendering_closed_form_and_round_trip(image_example):
  config = task_table.options()
  lo, hi = config.depth_min, config.depth_max
  special = np.array([[np.sqrt(lo * hi), lo, hi, lo / 10, hi * 10, 0.0, np.inf]], np.float32)
  pixels = tasks.render_depth(special, config)
  np.testing.assert_allclose(pixels[0, :, 0], [0, 1, -1, 1, -1, -1, -1], atol=1e-6)
  task = tasks.get_task("depth_estimation", config)
  inputs, targets = task(image_example, _rng())
  np.testing.assert_array_equal(targets[..., 0], targets[..., 2])
  depth = image_example["depth"][None]
  np.testing.assert_allclose(task.decode(targets), depth, rtol=1e-4)
  # Stored as 8 bits, the decoded depth is within half a quantisation step (in log).
  stored = np.round((targets + 1) * 127.5) / 127.5 - 1
  bound = np.exp(np.log(hi / lo) / 510) - 1
  relative = np.abs(task.decode(stored) / depth - 1)
  assert relative.max() <= bound * 1.001 and bound < 0.014


def test_depth_to_image_is_the_swapped_pair(image_example):
  forward = tasks.get_task("depth_estimation")(image_example, _rng())
  backward = tasks.get_task("depth_to_image")(image_example, _rng())
  np.testing.assert_array_equal(forward[0], backward[1])
  np.testing.assert_array_equal(forward[1], backward[0])


def test_normals_are_half_shifted_rgb(image_example):
  task = tasks.get_task("normal_estimation")
  _, targets = task(image_example, _rng())
  normals = image_example["normals"]
  np.testing.assert_allclose((targets[0] + 1) / 2, (normals + 1) / 2, atol=1e-6)
  np.testing.assert_allclose(task.decode(targets)[0], normals, atol=1e-6)
  assert np.all(tasks.decode_normals(np.zeros((2, 2, 3))) == 0)


def test_flow_colour_wheel_round_trips_and_is_a_hue_wheel():
  config = task_table.options()
  m = config.flow_max
  rng = _rng(4)
  angle = rng.uniform(0, 2 * np.pi, (2, 8, 8))
  radius = rng.uniform(0, m, (2, 8, 8))
  flow = np.stack([radius * np.cos(angle), radius * np.sin(angle)], -1).astype(np.float32)
  decoded = tasks.decode_flow(tasks.render_flow(flow, config), config)
  np.testing.assert_allclose(decoded, flow, atol=1e-3 * m)
  # Full length: +x red, +y (down) chartreuse (hue 90), -x cyan; zero flow white.
  known = np.array([[[[m, 0], [0, m], [-m, 0], [0, 0]]]], np.float32)
  expected = np.array([[1, 0, 0], [0.5, 1, 0], [0, 1, 1], [1, 1, 1]])
  np.testing.assert_allclose((tasks.render_flow(known, config)[0, 0] + 1) / 2, expected, atol=1e-5)
  # Longer than flow_max saturates: decodes to the same direction at length flow_max.
  long = tasks.decode_flow(tasks.render_flow(known * 3, config), config)
  np.testing.assert_allclose(long, known, atol=1e-3 * m)


def test_optical_flow_task_decodes_to_the_source_flow(video_example):
  config = task_table.options()
  config.flow_max = 100.0  # Above every sampled flow: no saturation.
  task = tasks.get_task("optical_flow", config)
  inputs, targets = task(video_example, _rng())
  np.testing.assert_allclose(targets[0], 1.0, atol=1e-6)  # Frame 0: zero flow, white.
  flow = video_example["flow"][: task.num_frames - 1]
  np.testing.assert_allclose(task.decode(targets), flow, atol=1e-3)


def test_instance_palette_round_trips(image_example):
  assert len(np.unique(tasks.palette(np.arange(64)), axis=0)) == 64
  np.testing.assert_array_equal(tasks.palette(0), [-1, -1, -1])
  np.testing.assert_array_equal(tasks.palette(64), tasks.palette(1))  # Period 63.
  ids = _rng().integers(0, 64, (3, 5))
  np.testing.assert_array_equal(tasks.decode_palette(tasks.palette(ids)), ids)
  task = tasks.get_task("instance_segmentation")
  _, targets = task(image_example, _rng())
  noisy = targets + _rng().normal(0, 0.1, targets.shape).astype(np.float32)
  np.testing.assert_array_equal(task.decode(noisy)[0], image_example["instances"])


def _panoptic_scene():
  """Classes (1, 24, 32): stuff 3, void rows 0-1, two touching instances of class 1, and a
  class-150 instance next to a crowd of its class (instance id 0)."""
  semantic = np.full((1, 24, 32), 3, np.int32)
  instances = np.zeros((1, 24, 32), np.int32)
  semantic[0, :2] = 0
  semantic[0, 4:14, 4:20] = 1
  instances[0, 4:14, 4:12] = 1
  instances[0, 4:14, 12:20] = 2
  semantic[0, 16:22, 2:30] = 150
  instances[0, 16:22, 2:12] = 3  # Columns 12..29 are the crowd.
  return semantic, instances


def test_panoptic_colours_classes_and_rims_touching_instances():
  config = task_table.options()
  palette = tasks.class_palette(np.arange(216))
  assert len(np.unique(palette, axis=0)) == 215  # Black, then 214 colours, repeating.
  np.testing.assert_array_equal(palette[0], [-1, -1, -1])
  np.testing.assert_array_equal(palette[215], palette[1])
  assert not (palette == 1).all(-1).any()  # White is the rims' colour only.
  semantic, instances = _panoptic_scene()
  pixels = tasks.render_panoptic(semantic, instances, config)
  rim = (pixels[0] == 1).all(-1)
  want = np.zeros((24, 32), bool)
  want[4:14, 10:14] = True  # 2 pixels either side of the contact at column 12.
  want[16:22, 10:14] = True  # The instance and its crowd.
  np.testing.assert_array_equal(rim, want)
  np.testing.assert_array_equal(pixels[0][~rim], tasks.class_palette(semantic[0][~rim]))
  _, targets = tasks.get_task("panoptic_segmentation", config)(
    {"image": np.zeros((24, 32, 3), np.uint8), "semantic": semantic[0], "instances": instances[0]},
    _rng(),
  )
  np.testing.assert_array_equal(targets, pixels)


def test_panoptic_decodes_to_classes_and_regions():
  config = task_table.options()
  semantic, instances = _panoptic_scene()
  pixels = tasks.render_panoptic(semantic, instances, config)
  noisy = pixels + _rng().uniform(-0.15, 0.15, pixels.shape).astype(np.float32)
  for rendered in (pixels, noisy):
    decoded = tasks.decode_panoptic(rendered, config)[0]
    np.testing.assert_array_equal(decoded[..., 0], semantic[0])
    regions = decoded[..., 1]
    assert (regions == 0).sum() == (semantic[0] == 0).sum()
    parts = [(semantic[0] == 3), instances[0] == 1, instances[0] == 2, instances[0] == 3]
    parts.append((semantic[0] == 150) & (instances[0] == 0))
    ids = [np.unique(regions[part]) for part in parts]
    assert all(len(i) == 1 for i in ids) and len(set(np.concatenate(ids).tolist())) == 5


def test_foreground_mask_round_trips(image_example):
  task = tasks.get_task("foreground_segmentation")
  _, targets = task(image_example, _rng())
  np.testing.assert_array_equal(task.decode(targets)[0], image_example["instances"] > 0)


def test_detection_renders_the_largest_box(image_example):
  task = tasks.get_task("detection")
  _, targets = task(image_example, _rng())
  expected = np.zeros((H, W), bool)
  expected[16:30, 20:38] = True  # The larger of the two boxes, y1 / x1 exclusive.
  np.testing.assert_array_equal(task.decode(targets)[0], expected)
  no_boxes = dict(image_example, boxes=np.zeros((0, 4), np.float32))
  assert not task.decode(task(no_boxes, _rng())[1]).any()


def test_pose_draws_joints_and_limbs_and_decodes_to_the_keypoints(image_example):
  config = task_table.options()
  task = tasks.get_task("pose_estimation", config)
  _, targets = task(image_example, _rng())
  unit = (targets[0] + 1) / 2
  np.testing.assert_allclose(unit[6, 8], [1, 0, 0], atol=1e-6)  # Nose: hue 0, visible.
  hidden = cv2.cvtColor(unit[14:15, 26:27], cv2.COLOR_RGB2HSV)[0, 0]  # Right eye, hidden.
  np.testing.assert_allclose(hidden, [720 / 17, 1, config.pose_hidden_value], atol=1e-3)
  np.testing.assert_allclose(unit[6, 11], config.pose_limb_grey)  # Nose - left eye limb.
  # The shoulder's limbs lead to unlabelled joints: its disc stands alone.
  assert unit[24, 10].any() and not unit[24, 15:20].any() and not unit[15:20, 10].any()
  decoded = task.decode(targets)[0]
  want = image_example["keypoints"][0]
  for j in range(17):
    found = decoded[j][decoded[j, :, 2] > 0]
    if want[j, 2] > 0:
      assert len(found) == 1, j
      np.testing.assert_allclose(found[0], want[j], atol=0.05)
    else:
      assert not len(found), j
  inputs, image = tasks.get_task("pose_to_image", config)(image_example, _rng())
  np.testing.assert_array_equal(inputs, targets)
  assert not decoded[:, 1:].any()  # One point per joint, the other slots zero.


def test_pose_decoding_finds_people_and_ignores_noise():
  config = task_table.options()
  people = np.zeros((2, 17, 3), np.float32)
  for p, (x0, y0) in enumerate([(6.5, 6.5), (6.5, 40.5)]):
    for j in range(17):
      people[p, j] = x0 + 10 * (j % 9), y0 + 12 * (j // 9), 2
  pixels = tasks.render_pose(people, 72, 96, config)[None]
  noisy = pixels + _rng().normal(0, 0.05, pixels.shape).astype(np.float32)
  decoded = tasks.decode_pose(noisy, config)[0]
  for j in range(17):
    found = decoded[j][decoded[j, :, 2] > 0]
    assert len(found) == 2, j
    np.testing.assert_allclose(found[np.argsort(found[:, 1])], people[:, j], atol=0.3)


# ---------------------------------------------------------------------------
# Video tasks.
# ---------------------------------------------------------------------------


def test_frame_prediction_continues_the_clip(video_example):
  task = tasks.get_task("frame_prediction")
  t = task.num_frames
  inputs, targets = task(video_example, _rng())
  frames = video_example["video"] / 127.5 - 1
  np.testing.assert_allclose(inputs, frames[:t], atol=1e-6)
  np.testing.assert_allclose(targets, frames[t : 2 * t], atol=1e-6)
  assert task.source_frames == 2 * t


def test_window_keeps_frames_and_annotations_aligned():
  t = np.arange(FRAMES)
  video = np.broadcast_to(t[:, None, None, None], (FRAMES, 4, 4, 3)).astype(np.uint8)
  flow = np.broadcast_to(t[:-1, None, None, None], (FRAMES - 1, 4, 4, 2)).astype(np.float32)
  depth = np.broadcast_to(t[:, None, None], (FRAMES, 4, 4)).astype(np.float32)
  valid = np.broadcast_to(t[:, None, None] % 2 == 0, (FRAMES, 4, 4))
  example = {"video": video, "flow": flow, "depth": depth, "valid": valid}
  task = tasks.get_task("optical_flow")
  starts = set()
  for seed in range(8):
    window = task.window(example, _rng(seed))
    start = int(window["video"][0, 0, 0, 0])
    starts.add(start)
    np.testing.assert_array_equal(window["video"][:, 0, 0, 0], start + np.arange(5))
    np.testing.assert_array_equal(window["depth"][:, 0, 0], start + np.arange(5))
    np.testing.assert_array_equal(window["flow"][:, 0, 0, 0], start + np.arange(4))
    np.testing.assert_array_equal(window["valid"][:, 0, 0], (start + np.arange(5)) % 2 == 0)
  assert len(starts) > 1 and max(starts) <= FRAMES - 5


def test_video_tasks_follow_num_frames(video_example):
  config = task_table.options()
  config.num_frames = 9
  inputs, targets = tasks.get_task("video_normals", config)(video_example, _rng())
  assert inputs.shape == targets.shape == (9, H, W, 3)


# ---------------------------------------------------------------------------
# Bad inputs.
# ---------------------------------------------------------------------------


def test_unknown_task_name():
  with pytest.raises(ValueError, match="Unknown task 'segmentation'.*colorization"):
    tasks.get_task("segmentation")


def test_missing_annotation_names_task_and_key(image_example):
  photo = {"image": image_example["image"]}
  with pytest.raises(ValueError, match="'depth_estimation' needs 'depth'"):
    tasks.get_task("depth_estimation")(photo, _rng())
  with pytest.raises(ValueError, match="'video_depth' needs 'video'"):
    tasks.get_task("video_depth")(image_example, _rng())
  with pytest.raises(ValueError, match="'panoptic_segmentation' needs 'semantic'"):
    tasks.get_task("panoptic_segmentation")(
      {"image": photo["image"], "instances": image_example["instances"]}, _rng()
    )


def test_short_clip_and_bad_frame_count(video_example):
  short = tasks.take_frames(video_example, 0, 7)
  with pytest.raises(ValueError, match="'frame_prediction' needs clips of at least 10"):
    tasks.get_task("frame_prediction")(short, _rng())
  config = task_table.options()
  config.num_frames = 6
  with pytest.raises(ValueError, match="1 \\+ 4k"):
    tasks.get_task("video_depth", config)


def test_decode_without_decoder():
  with pytest.raises(ValueError, match="'colorization' has no decoder"):
    tasks.get_task("colorization").decode(np.zeros((1, 4, 4, 3)))
