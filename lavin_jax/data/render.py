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

CLASS_NAMES = ("background", "sphere", "box", "ground", "wall")
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
  object_distance: tuple[float, float] = (3.0, 8.0)  # Along the view axis.
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
  return np.stack(
    [np.stack([c, zero, s], -1), np.stack([zero, one, zero], -1), np.stack([-s, zero, c], -1)], -2
  )


def camera_rays(height: int, width: int, focal: float) -> np.ndarray:
  """Camera-frame ray directions (3, H * W) through pixel centres, with z = 1."""
  cols = (np.arange(width) + 0.5 - width / 2) / focal
  rows = (np.arange(height) + 0.5 - height / 2) / focal
  x, y = np.meshgrid(cols, rows)
  return np.stack([x.ravel(), y.ravel(), np.ones(x.size)])


# Points, directions and normals are component-major: (3, N) arrays, or (3, 1) for one
# shared by all rays. Each kind of primitive has a ray test (local rays -> ray
# parameter of the nearest hit, inf on a miss) and a normal (local points on its
# surface -> unit outward normals).
def _sphere_t(origin, direction, size):
  a = np.einsum("kn,kn->n", direction, direction)
  b = np.einsum("kn,kn->n", direction, origin)
  c = np.einsum("kn,kn->n", origin, origin) - size[0] ** 2
  disc = b * b - a * c
  t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
  return np.where((disc >= 0) & (t > _EPS), t, np.inf)


def _sphere_normal(point, size):
  return point / size[0]


def _box_t(origin, direction, size):
  near, far = -np.inf, np.inf
  for k in range(3):  # Slabs.
    d = np.where(np.abs(direction[k]) < 1e-12, 1e-12, direction[k])
    t0 = (-size[k] - origin[k]) / d
    t1 = (size[k] - origin[k]) / d
    near = np.maximum(near, np.minimum(t0, t1))
    far = np.minimum(far, np.maximum(t0, t1))
  return np.where((near <= far) & (near > _EPS), near, np.inf)


def _box_normal(point, size):
  axis = np.argmax(np.abs(point) / size[:, None], 0)  # The face the point is on.
  normal = np.zeros_like(point)
  columns = np.arange(point.shape[1])
  normal[axis, columns] = np.sign(point[axis, columns])
  return normal


def _plane_t(origin, direction, size):
  del size
  with np.errstate(divide="ignore", invalid="ignore"):
    t = -origin[1] / direction[1]
  return np.where((origin[1] > 0) & (direction[1] < 0) & (t > _EPS), t, np.inf)


def _plane_normal(point, size):
  del size
  return np.broadcast_to(np.array([[0.0], [1.0], [0.0]]), point.shape)


_RAY_TEST = {"sphere": _sphere_t, "box": _box_t, "plane": _plane_t}
_NORMAL = {"sphere": _sphere_normal, "box": _box_normal, "plane": _plane_normal}


def intersect(prim: Primitive, frame: int, origin: np.ndarray, direction: np.ndarray) -> np.ndarray:
  """Ray parameters (N,) of the nearest hits of world rays with `prim`, inf on a miss.

  `origin` and `direction` are (3, N) or (3, 1).
  """
  rotation, translation = prim.rotations[frame], prim.translations[frame]
  origin_local = rotation.T @ (origin - translation[:, None])
  direction_local = rotation.T @ direction
  n = max(origin.shape[1], direction.shape[1])
  origin_local, direction_local = np.broadcast_arrays(
    origin_local, direction_local, np.empty((1, n))
  )[:2]
  return _RAY_TEST[prim.kind](origin_local, direction_local, prim.size)


def _albedo(prim: Primitive, local_point: np.ndarray) -> np.ndarray:
  """Texture colour (3, N) at local points (3, N)."""
  cells = np.floor(local_point / prim.period).astype(np.int64)
  if prim.pattern == "checker":
    choice = cells.sum(0) % 2
  elif prim.pattern == "stripes":
    choice = cells[0 if prim.kind == "plane" else 1] % 2
  else:
    choice = np.zeros(local_point.shape[1], np.int64)
  return prim.colors[choice].T


def project(scene: Scene, frame: int, points: np.ndarray) -> np.ndarray:
  """Pixel coordinates (2, N), rows (x, y), of world points (3, N) in `frame`."""
  eye = scene.camera_positions[frame][:, None]
  cam = scene.camera_rotations[frame] @ (points - eye)
  z = np.maximum(cam[2], 1e-6)
  return np.stack(
    [scene.focal * cam[0] / z + scene.width / 2, scene.focal * cam[1] / z + scene.height / 2]
  )


# ----------------------------------------------------------------------------------
# Rendering.
# ----------------------------------------------------------------------------------
def render_frame(scene: Scene, frame: int) -> dict[str, np.ndarray]:
  """Renders one frame: 'image', 'depth', 'normals', 'instances', 'semantic'.

  Also returns the per-pixel 'primitive' index (H * W,) (-1 on a miss) and
  'local_point' (3, H * W), which `forward_flow` needs.
  """
  h, w, n = scene.height, scene.width, scene.height * scene.width
  cam_rotation = scene.camera_rotations[frame]
  eye = scene.camera_positions[frame][:, None]
  rays = cam_rotation.T @ camera_rays(h, w, scene.focal)  # World; camera z stays 1.

  ts = np.stack([intersect(p, frame, eye, rays) for p in scene.primitives])  # (P, N)
  index = ts.argmin(0)
  depth = ts[index, np.arange(n)]
  hit = np.isfinite(depth)
  index = np.where(hit, index, -1)
  depth = np.where(hit, depth, 0.0)
  world_point = eye + depth * rays

  local_point = np.zeros((3, n))
  normal = np.zeros((3, n))
  albedo = np.zeros((3, n))
  instances = np.zeros(n, np.int32)
  semantic = np.zeros(n, np.int32)
  for i, prim in enumerate(scene.primitives):
    sel = index == i
    rotation, translation = prim.rotations[frame], prim.translations[frame]
    point = rotation.T @ (world_point[:, sel] - translation[:, None])
    if prim.kind == "plane":
      point[1] = 0.0  # On the plane: keep rounding off the texture's y cells.
    local_point[:, sel] = point
    normal[:, sel] = rotation @ _NORMAL[prim.kind](point, prim.size)
    albedo[:, sel] = _albedo(prim, point)
    instances[sel] = prim.instance
    semantic[sel] = prim.semantic

  # Lambert shading, with shadows cast by the objects on surfaces facing the light.
  lambert = np.maximum(scene.light @ normal, 0.0)
  lit = np.flatnonzero(lambert > 0)
  shadow_origin = world_point[:, lit] + 1e-3 * normal[:, lit]
  for prim in scene.primitives:
    if prim.kind != "plane":
      blocked = np.isfinite(intersect(prim, frame, shadow_origin, scene.light[:, None]))
      lambert[lit[blocked]] = 0.0
  shade = scene.ambient + (1.0 - scene.ambient) * lambert
  color = np.where(hit, albedo * shade, 0.0).T.reshape(h, w, 3)

  return {
    "image": np.round(np.clip(color, 0.0, 1.0) * 255).astype(np.uint8),
    "depth": depth.astype(np.float32).reshape(h, w),
    "normals": (cam_rotation @ normal).T.astype(np.float32).reshape(h, w, 3),
    "instances": instances.reshape(h, w),
    "semantic": semantic.reshape(h, w),
    "primitive": index,
    "local_point": local_point,
  }


def forward_flow(
  scene: Scene, frame: int, primitive: np.ndarray, local_point: np.ndarray
) -> np.ndarray:
  """Flow (H, W, 2) from `frame` to `frame + 1` of the points `render_frame` saw."""
  h, w = scene.height, scene.width
  world_next = np.zeros((3, h * w))
  for i, prim in enumerate(scene.primitives):
    sel = primitive == i
    rotation, translation = prim.rotations[frame + 1], prim.translations[frame + 1]
    world_next[:, sel] = rotation @ local_point[:, sel] + translation[:, None]
  xy = project(scene, frame + 1, world_next).T.reshape(h, w, 2)
  cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
  flow = xy - np.stack([cols, rows], -1)
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
  flows = [
    forward_flow(scene, k, f["primitive"], f["local_point"]) for k, f in enumerate(frames[:-1])
  ]
  out = {
    key: np.stack([f[key] for f in frames])
    for key in ("image", "depth", "normals", "instances", "semantic")
  }
  out["video"] = out.pop("image")
  out["flow"] = (
    np.stack(flows) if flows else np.zeros((0, scene.height, scene.width, 2), np.float32)
  )
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
  return dict(
    colors=rng.uniform(0.05, 1.0, (2, 3)),
    pattern=str(rng.choice(["checker", "checker", "stripes", "plain"])),
    period=float(_ranged(rng, period_range)),
  )


def _static(matrix, vector, num_frames):
  return (np.broadcast_to(matrix, (num_frames, 3, 3)), np.broadcast_to(vector, (num_frames, 3)))


def sample_scene(
  rng: np.random.Generator, num_frames: int, height: int, width: int, spec: SceneSpec = SceneSpec()
) -> Scene:
  """Draws a random scene of `num_frames` frames from `spec`."""
  frames = np.arange(num_frames)[:, None]
  ground_rot, ground_pos = _static(np.eye(3), np.zeros(3), num_frames)
  wall_axes = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
  wall_rot, wall_pos = _static(wall_axes, [0.0, 0.0, _ranged(rng, spec.wall_distance)], num_frames)
  primitives = [
    Primitive(
      "plane",
      np.zeros(3),
      ground_rot,
      ground_pos,
      semantic=GROUND,
      instance=0,
      **_texture(rng, spec.plane_texture_period),
    ),
    Primitive(
      "plane",
      np.zeros(3),
      wall_rot,
      wall_pos,
      semantic=WALL,
      instance=0,
      **_texture(rng, spec.plane_texture_period),
    ),
  ]
  centres = []
  for instance in range(1, rng.integers(spec.min_objects, spec.max_objects + 1) + 1):
    if rng.random() < 0.5:
      kind, semantic = "sphere", SPHERE
      size = np.full(3, _ranged(rng, spec.sphere_radius))
      height_above = size[1] + (rng.random() < 0.3) * rng.uniform(0.0, 0.8)
    else:
      kind, semantic = "box", BOX
      size = _ranged(rng, spec.box_half_extent, 3)
      height_above = size[1]
    for _ in range(20):  # Avoid starting inside another object.
      centre = np.array([rng.uniform(-2.5, 2.5), height_above, _ranged(rng, spec.object_distance)])
      if all(np.linalg.norm((centre - c)[[0, 2]]) > 1.6 for c in centres):
        break
    centres.append(centre)
    velocity = np.zeros(3)
    velocity[[0, 2]] = rng.uniform(-spec.object_speed, spec.object_speed, 2)
    spin = rng.uniform(-1, 1) * spec.spin_speed
    yaw = rng.uniform(0, 2 * np.pi) + spin * frames[:, 0]
    primitives.append(
      Primitive(
        kind,
        size,
        yaw_rotation(yaw),
        centre + velocity * frames,
        semantic=semantic,
        instance=instance,
        **_texture(rng, spec.texture_period),
      )
    )

  eye = rng.uniform([-1.5, 1.2, -2.0], [1.5, 2.5, 0.0])
  target = rng.uniform([-0.5, 0.2, 4.0], [0.5, 1.0, 6.0])
  eyes = eye + rng.uniform(-1, 1, 3) * spec.camera_speed * frames
  targets = target + rng.uniform(-1, 1, 3) * spec.camera_speed * frames
  fov = np.deg2rad(_ranged(rng, spec.field_of_view_degrees))
  light = np.array([rng.uniform(-1, 1), rng.uniform(0.8, 1.5), rng.uniform(-1, 0.2)])
  return Scene(
    height=height,
    width=width,
    focal=float(width / 2 / np.tan(fov / 2)),
    camera_positions=eyes,
    camera_rotations=np.stack([look_at(e, t) for e, t in zip(eyes, targets)]),
    light=light / np.linalg.norm(light),
    ambient=float(rng.uniform(0.25, 0.45)),
    primitives=tuple(primitives),
  )


def render_image(
  seed: int | Sequence[int], height: int, width: int, spec: SceneSpec = SceneSpec()
) -> dict[str, np.ndarray]:
  """One random still: the source schema's image example (see sources.py).

  Instance ids are renumbered 1..N over the objects in view, and 'boxes' (N, 4) holds
  their boxes.
  """
  out = render(sample_scene(np.random.default_rng(seed), 1, height, width, spec))
  example = {key: out[key][0] for key in ("depth", "normals", "instances", "semantic")}
  example["image"] = out["video"][0]
  example["instances"] = compact_instances(example["instances"])
  example["boxes"] = instance_boxes(example["instances"], int(example["instances"].max(initial=0)))
  return example


def render_clip(
  seed: int | Sequence[int], num_frames: int, height: int, width: int, spec: SceneSpec = SceneSpec()
) -> dict[str, np.ndarray]:
  """One random clip: the source schema's video example (see sources.py)."""
  scene = sample_scene(np.random.default_rng(seed), num_frames, height, width, spec)
  out = render(scene)
  out["instances"] = compact_instances(out["instances"])
  return out
