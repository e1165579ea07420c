"""FID: the InceptionV3 pool3 network of the standard FID tools, statistics, distance.

`InceptionV3Pool3` is torchvision's Inception3 with pytorch-fid's FIDInceptionA/C/E_1/E_2
blocks (average pools that exclude padding; a max pool in the last block), the network
of the TensorFlow FID code ported to PyTorch. Images are resized to 299x299 (bilinear,
half-pixel centres, no antialiasing, as torch's align_corners=False) and the 2048
features after the global average pool are returned. It takes pixels in [-1, 1], which
is what pytorch-fid feeds the network after mapping its [0, 1] input. Runs in float32.

Weights: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (see
`lavin_jax.eval.weights` for where it is looked up).

  module, variables = load_fid_inception()
  features = module.apply(variables, images)  # (B, H, W, 3) in [-1, 1] -> (B, 2048)
  stats = RunningStats(); stats.update(np.asarray(features)); ...
  fid = frechet_distance(real.mean, real.covariance(), fake.mean, fake.covariance())
"""

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lavin_jax.eval import weights

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_SOURCE = (
  "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + INCEPTION_FILE
)
INPUT_SIZE = 299
_MIN_SIZE = 8  # smaller images are not meaningful inputs, even though they are resized


class BasicConv(nn.Module):
  """Conv (no bias) + BatchNorm (running statistics, eps 1e-3) + ReLU."""

  features: int
  kernel: int | tuple[int, int]
  strides: int = 1
  padding: str = "SAME"  # stride 1 and odd kernels: torch's symmetric k // 2 padding

  @nn.compact
  def __call__(self, x):
    kernel = (self.kernel,) * 2 if isinstance(self.kernel, int) else self.kernel
    x = nn.Conv(
      self.features, kernel, strides=self.strides, padding=self.padding, use_bias=False, name="conv"
    )(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3(x):
  return nn.avg_pool(x, (3, 3), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_stride2(x):
  return nn.max_pool(x, (3, 3), strides=(2, 2))


class InceptionA(nn.Module):
  """Mixed_5b/c/d (FIDInceptionA)."""

  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv(64, 1, name="branch1x1")(x)
    b5 = BasicConv(48, 1, name="branch5x5_1")(x)
    b5 = BasicConv(64, 5, name="branch5x5_2")(b5)
    b3 = BasicConv(64, 1, name="branch3x3dbl_1")(x)
    b3 = BasicConv(96, 3, name="branch3x3dbl_2")(b3)
    b3 = BasicConv(96, 3, name="branch3x3dbl_3")(b3)
    bp = BasicConv(self.pool_features, 1, name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Mixed_6a: grid reduction 35 -> 17."""

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv(384, 3, strides=2, padding="VALID", name="branch3x3")(x)
    bd = BasicConv(64, 1, name="branch3x3dbl_1")(x)
    bd = BasicConv(96, 3, name="branch3x3dbl_2")(bd)
    bd = BasicConv(96, 3, strides=2, padding="VALID", name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_stride2(x)], axis=-1)


class InceptionC(nn.Module):
  """Mixed_6b/c/d/e (FIDInceptionC): factorised 7x7 convolutions."""

  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c = self.channels_7x7
    b1 = BasicConv(192, 1, name="branch1x1")(x)
    b7 = BasicConv(c, 1, name="branch7x7_1")(x)
    b7 = BasicConv(c, (1, 7), name="branch7x7_2")(b7)
    b7 = BasicConv(192, (7, 1), name="branch7x7_3")(b7)
    bd = BasicConv(c, 1, name="branch7x7dbl_1")(x)
    bd = BasicConv(c, (7, 1), name="branch7x7dbl_2")(bd)
    bd = BasicConv(c, (1, 7), name="branch7x7dbl_3")(bd)
    bd = BasicConv(c, (7, 1), name="branch7x7dbl_4")(bd)
    bd = BasicConv(192, (1, 7), name="branch7x7dbl_5")(bd)
    bp = BasicConv(192, 1, name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """Mixed_7a: grid reduction 17 -> 8."""

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv(192, 1, name="branch3x3_1")(x)
    b3 = BasicConv(320, 3, strides=2, padding="VALID", name="branch3x3_2")(b3)
    b7 = BasicConv(192, 1, name="branch7x7x3_1")(x)
    b7 = BasicConv(192, (1, 7), name="branch7x7x3_2")(b7)
    b7 = BasicConv(192, (7, 1), name="branch7x7x3_3")(b7)
    b7 = BasicConv(192, 3, strides=2, padding="VALID", name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_stride2(x)], axis=-1)


class InceptionE(nn.Module):
  """Mixed_7b (FIDInceptionE_1, average pool) and Mixed_7c (FIDInceptionE_2, max pool)."""

  max_pool: bool

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv(320, 1, name="branch1x1")(x)
    b3 = BasicConv(384, 1, name="branch3x3_1")(x)
    b3 = jnp.concatenate(
      [
        BasicConv(384, (1, 3), name="branch3x3_2a")(b3),
        BasicConv(384, (3, 1), name="branch3x3_2b")(b3),
      ],
      axis=-1,
    )
    bd = BasicConv(448, 1, name="branch3x3dbl_1")(x)
    bd = BasicConv(384, 3, name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate(
      [
        BasicConv(384, (1, 3), name="branch3x3dbl_3a")(bd),
        BasicConv(384, (3, 1), name="branch3x3dbl_3b")(bd),
      ],
      axis=-1,
    )
    if self.max_pool:
      pooled = nn.max_pool(x, (3, 3), padding=((1, 1), (1, 1)))
    else:
      pooled = _avg_pool_3x3(x)
    bp = BasicConv(192, 1, name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


def resize_bilinear(images, size: int = INPUT_SIZE):
  """(B, H, W, C) -> (B, size, size, C), as torch's bilinear align_corners=False."""
  shape = (images.shape[0], size, size, images.shape[-1])
  return jax.image.resize(images, shape, method="linear", antialias=False)


class InceptionV3Pool3(nn.Module):
  """FID InceptionV3: images (B, H, W, 3) in [-1, 1] -> pool3 features (B, 2048)."""

  @nn.compact
  def __call__(self, images):
    check_images(images)
    x = resize_bilinear(images.astype(jnp.float32))
    x = BasicConv(32, 3, strides=2, padding="VALID", name="Conv2d_1a_3x3")(x)
    x = BasicConv(32, 3, padding="VALID", name="Conv2d_2a_3x3")(x)
    x = BasicConv(64, 3, name="Conv2d_2b_3x3")(x)
    x = _max_pool_3x3_stride2(x)
    x = BasicConv(80, 1, name="Conv2d_3b_1x1")(x)
    x = BasicConv(192, 3, padding="VALID", name="Conv2d_4a_3x3")(x)
    x = _max_pool_3x3_stride2(x)  # (B, 35, 35, 192)
    for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
      x = InceptionA(pool_features, name=name)(x)
    x = InceptionB(name="Mixed_6a")(x)  # (B, 17, 17, 768)
    for name, channels in (
      ("Mixed_6b", 128),
      ("Mixed_6c", 160),
      ("Mixed_6d", 160),
      ("Mixed_6e", 192),
    ):
      x = InceptionC(channels, name=name)(x)
    x = InceptionD(name="Mixed_7a")(x)  # (B, 8, 8, 1280)
    x = InceptionE(max_pool=False, name="Mixed_7b")(x)
    x = InceptionE(max_pool=True, name="Mixed_7c")(x)  # (B, 8, 8, 2048)
    return jnp.mean(x, axis=(1, 2))


def check_images(images):
  """Raises ValueError unless images is (B, H, W, 3) with H, W >= 8."""
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"FID Inception: expected (B, H, W, 3) images, got {images.shape}.")
  if min(images.shape[1:3]) < _MIN_SIZE:
    raise ValueError(
      f"FID Inception: images must be at least {_MIN_SIZE}x{_MIN_SIZE} "
      f"pixels, got {images.shape[1:3]}."
    )


# State-dict leaf -> (variable collection, flax leaf name).
_LEAVES = {
  "conv.weight": ("params", "kernel"),
  "bn.weight": ("params", "scale"),
  "bn.bias": ("params", "bias"),
  "bn.running_mean": ("batch_stats", "mean"),
  "bn.running_var": ("batch_stats", "var"),
}


@functools.cache
def _expected_variables():
  x = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
  return jax.eval_shape(InceptionV3Pool3().init, jax.random.key(0), x)


def variables_from_state_dict(state, name=INCEPTION_FILE):
  """Converts pytorch-fid's Inception state dict (numpy) to {'params', 'batch_stats'}."""
  flat = {}
  for key, value in state.items():
    if key.startswith("fc."):  # the classifier is not part of the pool3 features
      continue
    match = re.fullmatch(r"(.+)\.(conv\.weight|bn\.\w+)", key)
    if match and match.group(2) in _LEAVES:
      collection, leaf = _LEAVES[match.group(2)]
      if leaf == "kernel":
        value = weights.conv_kernel(value)
      module = match.group(1).split(".") + [match.group(2).split(".")[0]]
      flat[(collection, *module, leaf)] = value
    else:
      flat[(key,)] = value
  return weights.tree_from_torch(flat, _expected_variables(), name)


def load_fid_inception(path=None):
  """Returns (InceptionV3Pool3 module, variables) from pytorch-fid's weight file.

  Args:
    path: the .pth file; None looks for `pt_inception-2015-12-05-6726825d.pth` in
      `lavin_jax.eval.weights.weights_dir()`.
  """
  path = weights.find_weight_file(
    INCEPTION_FILE, path, what="pytorch-fid InceptionV3", source=INCEPTION_SOURCE
  )
  variables = variables_from_state_dict(weights.read_torch_state_dict(path), str(path))
  return InceptionV3Pool3(), jax.tree.map(jnp.asarray, variables)


class RunningStats:
  """Streaming mean and covariance of feature rows, in float64.

  Batches are merged with Chan et al.'s pairwise update (sums of centred outer
  products), so the result equals numpy.cov over all rows (ddof 1) without storing them.
  """

  def __init__(self, dim: int):
    self.count = 0
    self.mean = np.zeros(dim, np.float64)
    self._centred_sq = np.zeros((dim, dim), np.float64)

  def update(self, features):
    """Adds a batch of feature rows (N, dim)."""
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or x.shape[1] != self.mean.shape[0]:
      raise ValueError(f"RunningStats: expected (N, {self.mean.shape[0]}) features, got {x.shape}.")
    n = x.shape[0]
    if n == 0:
      return
    batch_mean = x.mean(axis=0)
    centred = x - batch_mean
    delta = batch_mean - self.mean
    total = self.count + n
    self._centred_sq += centred.T @ centred + np.outer(delta, delta) * (self.count * n / total)
    self.mean = self.mean + delta * (n / total)
    self.count = total

  def covariance(self) -> np.ndarray:
    """The unbiased (ddof 1) covariance, (dim, dim)."""
    if self.count < 2:
      raise ValueError(f"RunningStats: a covariance needs 2 or more rows, got {self.count}.")
    return self._centred_sq / (self.count - 1)


def _psd_sqrt(matrix):
  values, vectors = np.linalg.eigh(matrix)
  return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """Frechet distance of two Gaussians, in float64.

  ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2)), where the
  last trace is taken as tr((s1^(1/2) sigma2 s1^(1/2))^(1/2)): the same eigenvalues, of
  a symmetric matrix, so singular covariances need no regularising offset.
  """
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  d = mu1.shape[-1]
  if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
    raise ValueError(
      f"frechet_distance: means {mu1.shape}, {mu2.shape} and covariances "
      f"{sigma1.shape}, {sigma2.shape} do not fit one dimension."
    )
  root1 = _psd_sqrt(sigma1)
  product = root1 @ sigma2 @ root1
  eigenvalues = np.linalg.eigvalsh((product + product.T) / 2)
  trace_sqrt = np.sum(np.sqrt(np.clip(eigenvalues, 0, None)))
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)
