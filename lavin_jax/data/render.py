"""Procedural 3D scenes rendered by vectorised ray casting, with exact annotations.

A scene is a few textured primitives (spheres and boxes resting on a ground plane, in
front of a back wall) under one directional light with cast shadows, seen by a pinhole
camera. The camera and the objects move from frame to frame, so one scene gives a clip.

Frames and conventions:
- World frame: y up; the ground is the plane y = 0.
- Camera frame (as OpenCV): x right, y down, z forward. Focal length f in pixels,
  principal point at the image centre. Pixel (row i, column j) is the ray through its
  centre (j + 0.5, i + 0.5), i.e. camera-frame direction
  ((j + 0.5 - W / 2) / f, (i + 0.5 - H / 2) / f, 1). With that direction the ray
  parameter of a hit is its depth.
- depth: z of the visible point in the camera frame, metres (0 where the ray hits
  nothing, which the sampled scenes never leave).
- normals: unit surface normal of the visible point in the camera frame, facing the
  camera (n . ray < 0); 0 where the ray hits nothing.
- instances: 1..N for objects (spheres, boxes), 0 for the ground, the wall and nothing.
- semantic: index into `CLASS_NAMES`.
- flow: forward flow (dx, dy) in pixels from frame k to k + 1: where the surface point
  seen at each pixel of frame k projects in frame k + 1 (it moves with its object),
  whether or not it is visible there.
- boxes: [y0, x0, y1, x1] of each instance's visible pixels, y1 and x1 exclusive.

Everything is vectorised over pixels; loops run over frames and primitives only.
"""

import dataclasses
from typing import Sequence

import numpy as np

CLASS_NAMES = ('background', 'sphere', 'box', 'ground', 'wall')
SPHERE, BOX, GROUND, WALL = 1, 2, 3, 4
_EPS = 1e-4  # Minimum ray parameter of a hit (metres of depth).


@dataclasses.dataclass(frozen=True)
class SceneSpec:
  """Ranges from which `sample_scene` draws a scene (lengths in metres)."""
  min_objects: int = 2
  max_objects: int = 6
  sphere_radius: tuple[float, float] = (0.3, 0.9)
  box_half_extent: tuple[float, float] = (0.25, 0.8)
  field_of_view_degrees: tuple[float, float] = (45.0, 70.0)
  wall_distance: tuple[float, float] = (9.0, 13.0)
  camera_speed: float = 0.12  # Per frame, for the eye and the look-at point.
  object_speed: float = 0.1  # Per frame, along the ground.
  spin_speed: float = 0.12  # Radians per frame, about the vertical.
  texture_period: tuple[float, float] = (0.15, 0.6)  # Objects.
  plane_texture_period: tuple[float, float] = (0.5, 1.5)  # Ground and wall.


@dataclasses.dataclass(frozen=True)
class Primitive:
  """One shape, its texture and its pose in each frame.

  Attributes:
    kind: 'sphere' (radius size[0] about the local origin), 'box' (half extents size,
      centred on the local origin) or 'plane' (the local plane y = 0, normal +y).
    size: (3,) shape parameters as above.
    rotations: (T, 3, 3) local-to-world rotation in each frame.
    translations: (T, 3) local origin in world coordinates in each frame.
    colors: (2, 3) the two albedos of the texture, in [0, 1].
    pattern: 'checker', 'stripes' or 'plain', in local coordinates (moves with it).
    period: texture period in metres.
    semantic: class id (index into CLASS_NAMES).
    instance: instance id (0 for the ground and the wall).
  """
  kind: str
  size: np.ndarray
  rotations: np.ndarray
  translations: np.ndarray
  colors: np.ndarray
  pattern: str
  period: float
  semantic: int
  instance: int


@dataclasses.dataclass(frozen=True)
class Scene:
  """Primitives, a moving camera and a directional light.

  Attributes:
    height, width: image size in pixels.
    focal: focal length in pixels.
    camera_positions: (T, 3) eye position in world coordinates.
    camera_rotations: (T, 3, 3) world-to-camera rotations (rows: right, down, forward).
    light: (3,) unit vector towards the light, world frame.
    ambient: fraction of light that reaches surfaces in shadow.
    primitives: the shapes.
  """
  height: int
  width: int
  focal: float
  camera_positions: np.ndarray
  camera_rotations: np.ndarray
  light: np.ndarray
  ambient: float
  primitives: tuple[Primitive, ...]

  @property
  def num_frames(self) -> int:
    return len(self.camera_positions)


# ----------------------------------------------------------------------------------
# Geometry.
# ----------------------------------------------------------------------------------
def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
  """World-to-camera rotation (3, 3) of a camera at `eye` looking at `target`, y up."""
  forward = target - eye
  forward = forward / np.linalg.norm(forward)
  right = np.cross(forward, [0.0, 1.0, 0.0])
  right = right / np.linalg.norm(right)
  down = np.cross(forward, right)
  return np.stack([right, down, forward])


def yaw_rotation(angle: np.ndarray) -> np.ndarray:
  """Rotations (..., 3, 3) by `angle` radians about the world y axis."""
  c, s = np.cos(angle), np.sin(angle)
  zero, one = np.zeros_like(c), np.ones_like(c)
  return np.stack([
      np.stack([c, zero, s], -1),
      np.stack([zero, one, zero], -1),
      np.stack([-s, zero, c], -1)], -2)


def camera_rays(height: int, width: int, focal: float) -> np.ndarray:
  """Camera-frame ray directions (H * W, 3) through pixel centres, with z = 1."""
  cols = (np.arange(width) + 0.5 - width / 2) / focal
  rows = (np.arange(height) + 0.5 - height / 2) / focal
  x, y = np.meshgrid(cols, rows)
  return np.stack([x, y, np.ones_like(x)], -1).reshape(-1, 3)


def _intersect_sphere(origin, direction, size):
  """Nearest hit of local rays with a sphere of radius size[0] at the origin."""
  a = np.sum(direction * direction, -1)
  b = np.sum(direction * origin, -1)
  c = np.sum(origin * origin, -1) - size[0] ** 2
  disc = b * b - a * c
  t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
  t = np.where((disc >= 0) & (t > _EPS), t, np.inf)
  point = origin + np.where(np.isfinite(t), t, 0.0)[:, None] * direction
  return t, point / size[0]


def _intersect_box(origin, direction, size):
  """Nearest hit of local rays with an axis-aligned box of half extents `size`."""
  direction = np.where(np.abs(direction) < 1e-12, 1e-12, direction)
  t0 = (-size - origin) / direction
  t1 = (size - origin) / direction
  t_enter = np.minimum(t0, t1)  # (N, 3)
  near = t_enter.max(-1)
  far = np.maximum(t0, t1).min(-1)
  t = np.where((near <= far) & (near > _EPS), near, np.inf)
  axis = t_enter.argmax(-1)
  normal = np.zeros(np.broadcast_shapes(origin.shape, direction.shape))
  sign = -np.sign(np.take_along_axis(direction, axis[:, None], -1))
  np.put_along_axis(normal, axis[:, None], sign, -1)
  return t, normal


def _intersect_plane(origin, direction, size):
  """Hit of local rays with the front (+y) side of the plane y = 0."""
  del size
  oy, dy = origin[..., 1], direction[..., 1]
  with np.errstate(divide='ignore', invalid='ignore'):
    t = -oy / dy
  t = np.where((oy > 0) & (dy < 0) & (t > _EPS), t, np.inf)
  normal = np.zeros(np.broadcast_shapes(origin.shape, direction.shape))
  normal[:, 1] = 1.0
  return t, normal


_INTERSECT = {
    'sphere': _intersect_sphere, 'box': _intersect_box, 'plane': _intersect_plane}


def intersect(prim: Primitive, frame: int, origin: np.ndarray,
              direction: np.ndarray):
  """Casts world rays (broadcastable (N, 3)) at `prim` in `frame`.

  Returns:
    t: (N,) ray parameter of the nearest hit, inf on a miss.
    local_point: (N, 3) hit point in the primitive's local frame.
    world_normal: (N, 3) unit outward normal in the world frame.
  """
  rotation, translation = prim.rotations[frame], prim.translations[frame]
  origin_local = (origin - translation) @ rotation  # R^T (o - p), row vectors.
  direction_local = direction @ rotation
  n = max(len(np.atleast_2d(origin)), len(np.atleast_2d(direction)))
  origin_local = np.broadcast_to(origin_local, (n, 3))
  direction_local = np.broadcast_to(direction_local, (n, 3))
  t, normal_local = _INTERSECT[prim.kind](origin_local, direction_local, prim.size)
  local_point = origin_local + np.where(np.isfinite(t), t, 0.0)[:, None] * direction_local
  return t, local_point, normal_local @ rotation.T


def _albedo(prim: Primitive, local_point: np.ndarray) -> np.ndarray:
  """Texture colour (N, 3) at local points."""
  cells = np.floor(local_point / prim.period).astype(np.int64)
  if prim.pattern == 'checker':
    choice = cells.sum(-1) % 2
  elif prim.pattern == 'stripes':
    choice = cells[:, 0 if prim.kind == 'plane' else 1] % 2
  else:
    choice = np.zeros(len(local_point), np.int64)
  return prim.colors[choice]


def project(scene: Scene, frame: int, points: np.ndarray) -> np.ndarray:
  """Pixel coordinates (N, 2) as (x, y) of world points (N, 3) in `frame`."""
  cam = (points - scene.camera_positions[frame]) @ scene.camera_rotations[frame].T
  z = np.maximum(cam[:, 2], 1e-6)
  x = scene.focal * cam[:, 0] / z + scene.width / 2
  y = scene.focal * cam[:, 1] / z + scene.height / 2
  return np.stack([x, y], -1)


# ----------------------------------------------------------------------------------
# Rendering.
# ----------------------------------------------------------------------------------
def render_frame(scene: Scene, frame: int) -> dict[str, np.ndarray]:
  """Renders one frame: 'image', 'depth', 'normals', 'instances', 'semantic'.

  Also returns the per-pixel 'primitive' index (-1 on a miss) and 'local_point' (H * W,
  3) that `render` needs for flow.
  """
  h, w = scene.height, scene.width
  rays_cam = camera_rays(h, w, scene.focal)  # (N, 3), z = 1.
  cam_rotation = scene.camera_rotations[frame]
  eye = scene.camera_positions[frame]
  rays = rays_cam @ cam_rotation  # R^T d: world directions, camera z stays 1.

  hits = [intersect(p, frame, eye, rays) for p in scene.primitives]
  ts = np.stack([t for t, _, _ in hits])  # (P, N)
  index = ts.argmin(0)
  depth = ts.min(0)
  hit = np.isfinite(depth)
  index = np.where(hit, index, -1)
  depth = np.where(hit, depth, 0.0)

  n = h * w
  local_point = np.zeros((n, 3))
  normal = np.zeros((n, 3))
  albedo = np.zeros((n, 3))
  instances = np.zeros(n, np.int32)
  semantic = np.zeros(n, np.int32)
  for i, (prim, (_, point_i, normal_i)) in enumerate(zip(scene.primitives, hits)):
    sel = index == i
    local_point[sel] = point_i[sel]
    normal[sel] = normal_i[sel]
    albedo[sel] = _albedo(prim, point_i[sel])
    instances[sel] = prim.instance
    semantic[sel] = prim.semantic

  # Lambert shading with shadows cast by the objects towards the light.
  world_point = eye + depth[:, None] * rays
  shadow_origin = world_point + 1e-3 * normal
  in_shadow = np.zeros(n, bool)
  for prim in scene.primitives:
    if prim.kind != 'plane':
      in_shadow |= np.isfinite(intersect(prim, frame, shadow_origin, scene.light)[0])
  lambert = np.maximum(normal @ scene.light, 0.0) * ~in_shadow
  shade = scene.ambient + (1.0 - scene.ambient) * lambert
  color = np.where(hit[:, None], albedo * shade[:, None], 0.0)

  return {
      'image': np.round(np.clip(color, 0.0, 1.0) * 255).astype(np.uint8).reshape(h, w, 3),
      'depth': depth.astype(np.float32).reshape(h, w),
      'normals': (normal @ cam_rotation.T).astype(np.float32).reshape(h, w, 3),
      'instances': instances.reshape(h, w),
      'semantic': semantic.reshape(h, w),
      'primitive': index,
      'local_point': local_point,
  }


def forward_flow(scene: Scene, frame: int, primitive: np.ndarray,
                 local_point: np.ndarray) -> np.ndarray:
  """Flow (H, W, 2) from `frame` to `frame + 1` of the points `render_frame` saw."""
  h, w = scene.height, scene.width
  world_next = np.zeros((h * w, 3))
  for i, prim in enumerate(scene.primitives):
    sel = primitive == i
    rotation, translation = prim.rotations[frame + 1], prim.translations[frame + 1]
    world_next[sel] = local_point[sel] @ rotation.T + translation
  xy_next = project(scene, frame + 1, world_next)
  cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
  flow = xy_next.reshape(h, w, 2) - np.stack([cols, rows], -1)
  flow[(primitive < 0).reshape(h, w)] = 0.0
  return flow.astype(np.float32)


def render(scene: Scene) -> dict[str, np.ndarray]:
  """Renders every frame of a scene.

  Returns:
    'video' uint8 (T, H, W, 3); 'depth' float32 (T, H, W); 'normals' float32
    (T, H, W, 3); 'instances', 'semantic' int32 (T, H, W); 'flow' float32
    (T - 1, H, W, 2). Instance ids are those of the scene in every frame.
  """
  frames = [render_frame(scene, k) for k in range(scene.num_frames)]
  flows = [forward_flow(scene, k, f['primitive'], f['local_point'])
           for k, f in enumerate(frames[:-1])]
  out = {key: np.stack([f[key] for f in frames])
         for key in ('image', 'depth', 'normals', 'instances', 'semantic')}
  out['video'] = out.pop('image')
  out['flow'] = (np.stack(flows) if flows else
                 np.zeros((0, scene.height, scene.width, 2), np.float32))
  return out


def instance_boxes(instances: np.ndarray, num_instances: int) -> np.ndarray:
  """Boxes (num_instances, 4) [y0, x0, y1, x1] of ids 1..num_instances in (H, W)."""
  boxes = np.zeros((num_instances, 4), np.float32)
  for i in range(num_instances):
    rows = np.flatnonzero((instances == i + 1).any(1))
    cols = np.flatnonzero((instances == i + 1).any(0))
    if rows.size:
      boxes[i] = rows[0], cols[0], rows[-1] + 1, cols[-1] + 1
  return boxes


def compact_instances(instances: np.ndarray) -> np.ndarray:
  """Renumbers the ids present in `instances` to 1..N in increasing order."""
  ids = np.unique(instances)
  ids = ids[ids > 0]
  lookup = np.zeros(int(instances.max(initial=0)) + 1, np.int32)
  lookup[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
  return lookup[instances]


# ----------------------------------------------------------------------------------
# Random scenes.
# ----------------------------------------------------------------------------------
def _ranged(rng, bounds, size=None):
  return rng.uniform(bounds[0], bounds[1], size)


def _texture(rng, period_range):
  return dict(colors=rng.uniform(0.05, 1.0, (2, 3)),
              pattern=str(rng.choice(['checker', 'checker', 'stripes', 'plain'])),
              period=float(_ranged(rng, period_range)))


def _static(matrix, vector, num_frames):
  return (np.broadcast_to(matrix, (num_frames, 3, 3)),
          np.broadcast_to(vector, (num_frames, 3)))


def sample_scene(rng: np.random.Generator, num_frames: int, height: int, width: int,
                 spec: SceneSpec = SceneSpec()) -> Scene:
  """Draws a random scene of `num_frames` frames from `spec`."""
  frames = np.arange(num_frames)[:, None]
  ground_rot, ground_pos = _static(np.eye(3), np.zeros(3), num_frames)
  wall_axes = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
  wall_rot, wall_pos = _static(
      wall_axes, [0.0, 0.0, _ranged(rng, spec.wall_distance)], num_frames)
  primitives = [
      Primitive('plane', np.zeros(3), ground_rot, ground_pos, semantic=GROUND,
                instance=0, **_texture(rng, spec.plane_texture_period)),
      Primitive('plane', np.zeros(3), wall_rot, wall_pos, semantic=WALL, instance=0,
                **_texture(rng, spec.plane_texture_period)),
  ]
  centres = []
  for instance in range(1, rng.integers(spec.min_objects, spec.max_objects + 1) + 1):
    if rng.random() < 0.5:
      kind, semantic = 'sphere', SPHERE
      size = np.full(3, _ranged(rng, spec.sphere_radius))
      height_above = size[1] + (rng.random() < 0.3) * rng.uniform(0.0, 0.8)
    else:
      kind, semantic = 'box', BOX
      size = _ranged(rng, spec.box_half_extent, 3)
      height_above = size[1]
    for _ in range(20):  # Avoid starting inside another object.
      centre = np.array([rng.uniform(-2.5, 2.5), height_above, rng.uniform(3.0, 8.0)])
      if all(np.linalg.norm((centre - c)[[0, 2]]) > 1.6 for c in centres):
        break
    centres.append(centre)
    velocity = np.zeros(3)
    velocity[[0, 2]] = rng.uniform(-spec.object_speed, spec.object_speed, 2)
    yaw = rng.uniform(0, 2 * np.pi) + rng.uniform(-1, 1) * spec.spin_speed * frames[:, 0]
    primitives.append(Primitive(
        kind, size, yaw_rotation(yaw), centre + velocity * frames, semantic=semantic,
        instance=instance, **_texture(rng, spec.texture_period)))

  eye = np.array([rng.uniform(-1.5, 1.5), rng.uniform(1.2, 2.5), rng.uniform(-2.0, 0.0)])
  target = np.array([rng.uniform(-0.5, 0.5), rng.uniform(0.2, 1.0), rng.uniform(4.0, 6.0)])
  eyes = eye + rng.uniform(-1, 1, 3) * spec.camera_speed * frames
  targets = target + rng.uniform(-1, 1, 3) * spec.camera_speed * frames
  fov = np.deg2rad(_ranged(rng, spec.field_of_view_degrees))
  light = np.array([rng.uniform(-1, 1), rng.uniform(0.8, 1.5), rng.uniform(-1, 0.2)])
  return Scene(
      height=height, width=width, focal=float(width / 2 / np.tan(fov / 2)),
      camera_positions=eyes,
      camera_rotations=np.stack([look_at(e, t) for e, t in zip(eyes, targets)]),
      light=light / np.linalg.norm(light), ambient=float(rng.uniform(0.25, 0.45)),
      primitives=tuple(primitives))


def render_image(seed: int | Sequence[int], height: int, width: int,
                 spec: SceneSpec = SceneSpec()) -> dict[str, np.ndarray]:
  """One random still: the source schema's image example (see sources.py).

  Instance ids are renumbered 1..N over the objects in view, and 'boxes' (N, 4) holds
  their boxes.
  """
  out = render(sample_scene(np.random.default_rng(seed), 1, height, width, spec))
  example = {key: out[key][0] for key in ('depth', 'normals', 'instances', 'semantic')}
  example['image'] = out['video'][0]
  example['instances'] = compact_instances(example['instances'])
  example['boxes'] = instance_boxes(example['instances'],
                                    int(example['instances'].max(initial=0)))
  return example


def render_clip(seed: int | Sequence[int], num_frames: int, height: int, width: int,
                spec: SceneSpec = SceneSpec()) -> dict[str, np.ndarray]:
  """One random clip: the source schema's video example (see sources.py)."""
  out = render(sample_scene(np.random.default_rng(seed), num_frames, height, width, spec))
  out['instances'] = compact_instances(out['instances'])
  return out
