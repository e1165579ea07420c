"""Renderer: determinism, exact geometry against closed forms, flow consistency."""

import dataclasses

import cv2
import numpy as np
import pytest

from lavin_jax.data import render

H, W, FOCAL = 48, 64, 60.0


def _static_scene(primitives, eye, target, num_frames=1, eye_step=(0.0, 0.0, 0.0)):
  """A scene with a camera translating by `eye_step` per frame (fixed orientation)."""
  frames = np.arange(num_frames)[:, None]
  eyes = np.asarray(eye, float) + frames * np.asarray(eye_step, float)
  rotation = render.look_at(np.asarray(eye, float), np.asarray(target, float))
  return render.Scene(
    height=H,
    width=W,
    focal=FOCAL,
    camera_positions=eyes,
    camera_rotations=np.broadcast_to(rotation, (num_frames, 3, 3)),
    light=np.array([0.0, 1.0, 0.0]),
    ambient=0.3,
    primitives=tuple(primitives),
  )


def _primitive(
  kind, size, position, num_frames=1, rotation=None, semantic=1, instance=1, pattern="checker"
):
  rotation = np.eye(3) if rotation is None else rotation
  return render.Primitive(
    kind,
    np.asarray(size, float),
    np.broadcast_to(rotation, (num_frames, 3, 3)),
    np.broadcast_to(np.asarray(position, float), (num_frames, 3)),
    colors=np.array([[0.9, 0.2, 0.1], [0.1, 0.3, 0.9]]),
    pattern=pattern,
    period=0.3,
    semantic=semantic,
    instance=instance,
  )


def _pixel_rays():
  """Camera-frame rays (H, W, 3) through pixel centres, z = 1 (own computation)."""
  rows, cols = np.mgrid[0:H, 0:W] + 0.5
  return np.stack([(cols - W / 2) / FOCAL, (rows - H / 2) / FOCAL, np.ones((H, W))], -1)


def test_deterministic_for_a_seed():
  a = render.render_clip(3, 5, 32, 48)
  b = render.render_clip(3, 5, 32, 48)
  c = render.render_clip(4, 5, 32, 48)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  assert not np.array_equal(a["video"], c["video"])


def test_sphere_depth_and_normals_match_ray_sphere_intersection():
  eye, target = np.array([0.4, 1.0, -1.0]), np.array([0.0, 0.5, 5.0])
  centre, radius = np.array([0.2, 0.7, 5.0]), 1.3
  scene = _static_scene([_primitive("sphere", [radius] * 3, centre)], eye, target)
  out = render.render_frame(scene, 0)

  # Ray-sphere intersection in the camera frame: |t d - c|^2 = r^2, depth z = t.
  c = scene.camera_rotations[0] @ (centre - eye)
  d = _pixel_rays()
  a, b = np.sum(d * d, -1), d @ c
  disc = b * b - a * (c @ c - radius**2)
  hit = disc > 1e-9
  t = (b - np.sqrt(np.maximum(disc, 0))) / a
  normal = (t[..., None] * d - c) / radius

  assert hit.sum() > 200
  np.testing.assert_array_equal(out["instances"] == 1, hit)
  np.testing.assert_allclose(out["depth"][hit], t[hit], rtol=1e-6)
  np.testing.assert_allclose(out["normals"][hit], normal[hit], atol=1e-5)
  assert np.all(out["depth"][~hit] == 0) and np.all(out["normals"][~hit] == 0)


def test_ground_plane_depth_and_normals():
  height = 1.5  # Camera looking straight ahead: depth = height * f / (v - cy).
  ground = _primitive("plane", [0, 0, 0], [0, 0, 0], semantic=3, instance=0)
  scene = _static_scene([ground], [0.0, height, 0.0], [0.0, height, 1.0])
  out = render.render_frame(scene, 0)
  v = np.arange(H) + 0.5 - H / 2
  below = v > 0
  expected = np.where(below, height * FOCAL / np.where(below, v, 1), 0)[:, None]
  np.testing.assert_allclose(out["depth"], np.broadcast_to(expected, (H, W)), rtol=1e-6)
  # World up is -y in a camera looking along the horizon.
  np.testing.assert_array_equal(
    out["normals"][below], np.broadcast_to([0.0, -1.0, 0.0], (below.sum(), W, 3))
  )
  assert np.all(out["semantic"][below] == 3) and np.all(out["semantic"][~below] == 0)
  assert np.all(out["instances"] == 0)


def test_box_front_face():
  half = np.array([0.6, 0.4, 0.5])
  centre = np.array([0.0, 0.0, 4.0])
  scene = _static_scene([_primitive("box", half, centre)], [0, 0, 0], [0, 0, 1])
  out = render.render_frame(scene, 0)
  front = centre[2] - half[2]
  # The face z = front spans |x| <= 0.6, |y| <= 0.4: pixels whose rays land there.
  d = _pixel_rays()
  inside = (np.abs(d[..., 0] * front) < half[0]) & (np.abs(d[..., 1] * front) < half[1])
  np.testing.assert_array_equal(out["instances"] == 1, inside)
  np.testing.assert_allclose(out["depth"][inside], front, rtol=1e-6)
  np.testing.assert_allclose(out["normals"][inside], [[0, 0, -1]] * inside.sum(), atol=1e-12)


def test_flow_of_static_scene_under_camera_translation():
  step = np.array([0.15, -0.05, 0.2])
  eye, target = np.array([0.3, 1.6, -1.0]), np.array([0.0, 0.6, 6.0])
  prims = [
    _primitive("plane", 0, [0, 0, 0], 3, semantic=3, instance=0),
    _primitive("sphere", [0.8] * 3, [0.3, 0.8, 4.0], 3),
    _primitive("box", [0.5, 0.5, 0.5], [-1.2, 0.5, 5.0], 3, instance=2),
  ]
  scene = _static_scene(prims, eye, target, num_frames=3, eye_step=step)
  out = render.render(scene)

  # A static point X (camera frame) becomes X - R step after the move.
  rotation = scene.camera_rotations[0]
  points = out["depth"][0][..., None] * _pixel_rays()
  moved = points - rotation @ step
  rows, cols = np.mgrid[0:H, 0:W] + 0.5
  expected = np.stack(
    [
      FOCAL * moved[..., 0] / moved[..., 2] + W / 2 - cols,
      FOCAL * moved[..., 1] / moved[..., 2] + H / 2 - rows,
    ],
    -1,
  )
  seen = out["depth"][0] > 0
  assert seen.mean() > 0.4
  np.testing.assert_allclose(out["flow"][0][seen], expected[seen], atol=2e-3)
  assert out["flow"].shape == (2, H, W, 2)


def test_flow_of_moving_object_seen_by_static_camera():
  velocity = np.array([0.2, 0.05, -0.3])
  eye, target = np.array([-0.5, 1.2, -0.5]), np.array([0.0, 0.5, 5.0])
  sphere = _primitive("sphere", [0.9] * 3, [0.0, 0.9, 4.5], 2)
  sphere = dataclasses.replace(
    sphere, translations=np.array([[0.0, 0.9, 4.5], [0.0, 0.9, 4.5] + velocity])
  )
  ground = _primitive("plane", 0, [0, 0, 0], 2, semantic=3, instance=0)
  scene = _static_scene([ground, sphere], eye, target, num_frames=2)
  out = render.render(scene)

  moving = out["instances"][0] == 1
  points = out["depth"][0][..., None] * _pixel_rays()
  moved = points + np.where(moving[..., None], scene.camera_rotations[0] @ velocity, 0)
  rows, cols = np.mgrid[0:H, 0:W] + 0.5
  with np.errstate(invalid="ignore"):  # No surface (depth 0) where the sky is.
    expected = np.stack(
      [
        FOCAL * moved[..., 0] / moved[..., 2] + W / 2 - cols,
        FOCAL * moved[..., 1] / moved[..., 2] + H / 2 - rows,
      ],
      -1,
    )
  assert moving.sum() > 100
  seen = out["depth"][0] > 0
  np.testing.assert_allclose(out["flow"][0][seen], expected[seen], atol=2e-3)
  assert np.abs(out["flow"][0][moving]).max() > 1


def test_warping_by_flow_reproduces_the_previous_frame():
  spec = render.SceneSpec(spin_speed=0.0, min_objects=4, object_speed=0.15)
  hits, errors, zero_flow_errors = 0, [], []
  for seed in range(3):
    scene = render.sample_scene(np.random.default_rng(seed), 2, 96, 96, spec)
    out = render.render(scene)
    flow = out["flow"][0]
    grid = np.mgrid[0:96, 0:96].astype(np.float32)
    map_x, map_y = grid[1] + flow[..., 0], grid[0] + flow[..., 1]
    warped = cv2.remap(out["video"][1], map_x, map_y, cv2.INTER_LINEAR)
    # Surfaces visible in both frames: the same instance and class at the target.
    tx, ty = np.round(map_x).astype(int), np.round(map_y).astype(int)
    inside = (tx >= 0) & (tx < 96) & (ty >= 0) & (ty < 96)
    tx, ty = np.clip(tx, 0, 95), np.clip(ty, 0, 95)
    same = (
      (out["instances"][1][ty, tx] == out["instances"][0])
      & (out["semantic"][1][ty, tx] == out["semantic"][0])
      & inside
    )
    hits += same.sum()
    frame0 = out["video"][0].astype(float)
    errors.append(np.abs(warped.astype(float) - frame0).max(-1)[same])
    still = np.abs(out["video"][1].astype(float) - frame0).max(-1)
    zero_flow_errors.append(still[same])
  errors, zero_flow_errors = np.concatenate(errors), np.concatenate(zero_flow_errors)
  assert hits > 0.5 * 3 * 96 * 96
  # Point-sampled textures alias at cell edges, where interpolation mixes cells.
  assert np.median(errors) <= 2
  assert np.mean(errors < 30) > 0.9
  assert np.mean(errors) < 0.35 * np.mean(zero_flow_errors)


def test_image_annotations_are_consistent():
  for seed in range(4):
    ex = render.render_image(seed, 64, 80)
    assert ex["image"].shape == (64, 80, 3) and ex["image"].dtype == np.uint8
    assert ex["depth"].dtype == np.float32 and np.all(ex["depth"] > 0)
    np.testing.assert_allclose(np.linalg.norm(ex["normals"], axis=-1), 1, atol=1e-5)
    n = ex["instances"].max()
    np.testing.assert_array_equal(np.unique(ex["instances"]), np.arange(n + 1))
    assert ex["boxes"].shape == (n, 4)
    for i, (y0, x0, y1, x1) in enumerate(ex["boxes"].astype(int)):
      ys, xs = np.nonzero(ex["instances"] == i + 1)
      assert (y0, x0, y1, x1) == (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)
    objects = ex["instances"] > 0
    assert set(np.unique(ex["semantic"][objects])) <= {render.SPHERE, render.BOX}
    assert set(np.unique(ex["semantic"][~objects])) <= {render.GROUND, render.WALL}


def test_normals_face_the_camera():
  scene = render.sample_scene(np.random.default_rng(7), 3, 40, 56)
  out = render.render(scene)
  rows, cols = np.mgrid[0:40, 0:56] + 0.5
  rays = np.stack([(cols - 28) / scene.focal, (rows - 20) / scene.focal, np.ones((40, 56))], -1)
  assert np.all(np.sum(out["normals"] * rays, -1) < 0)


@pytest.mark.parametrize("num_frames", [1, 5])
def test_clip_shapes(num_frames):
  ex = render.render_clip(0, num_frames, 32, 32)
  assert ex["video"].shape == (num_frames, 32, 32, 3)
  assert ex["flow"].shape == (num_frames - 1, 32, 32, 2)
  assert ex["instances"].dtype == np.int32 and ex["semantic"].dtype == np.int32
