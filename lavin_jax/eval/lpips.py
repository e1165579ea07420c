"""LPIPS (Zhang et al. 2018), VGG16 variant, version 0.1, as in the `lpips` package.

Both images are shifted and scaled to the package's normalisation, run through VGG16's
five conv stages (relu1_2 ... relu5_3), unit-normalised over channels; the squared
differences go through per-stage 1x1 linear heads, are averaged over space and summed
over stages. Runs in float32 so scores match the package.

Weights: torchvision's ImageNet VGG16 state dict (`vgg16-397923af.pth`, only its
`features.*` entries are used) and the package's linear heads for VGG v0.1 (saved as
`lpips_vgg_lin_v0.1.pth`); see `lavin_jax.eval.weights` for where they are looked up.

  module, params = load_lpips()
  dist = module.apply({'params': params}, x0, x1)  # (B, H, W, 3) in [-1, 1] -> (B,)
"""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp

from lavin_jax.eval import weights

VGG16_FILE = "vgg16-397923af.pth"
VGG16_SOURCE = "https://download.pytorch.org/models/vgg16-397923af.pth"
LIN_FILE = "lpips_vgg_lin_v0.1.pth"
LIN_SOURCE = (
  "the `lpips` package (pip install lpips; the file lpips/weights/v0.1/vgg.pth "
  "inside it, also at https://github.com/richzhang/PerceptualSimilarity), "
  f"renamed to {LIN_FILE}"
)

_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
# Indices of the conv layers of each stage in torchvision's `vgg16().features`.
_STAGE_CONVS = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))
_STAGE_WIDTHS = (64, 128, 256, 512, 512)
_MIN_SIZE = 16  # four 2x2 max pools before the last stage


class VGG16Features(nn.Module):
  """VGG16 conv stages; returns the five stage outputs relu1_2 ... relu5_3."""

  @nn.compact
  def __call__(self, x):
    stages = []
    for s, (convs, width) in enumerate(zip(_STAGE_CONVS, _STAGE_WIDTHS)):
      if s:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      for i in convs:
        x = nn.relu(nn.Conv(width, (3, 3), padding=1, name=f"features_{i}")(x))
      stages.append(x)
    return stages


def _unit_channels(x, eps=1e-10):
  return x / (jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True)) + eps)


class LPIPS(nn.Module):
  """Perceptual distance between image batches (B, H, W, 3) in [-1, 1]; returns (B,)."""

  @nn.compact
  def __call__(self, x0, x1):
    check_images(x0, x1)
    shift = jnp.asarray(_SHIFT, jnp.float32)
    scale = jnp.asarray(_SCALE, jnp.float32)
    x = (jnp.concatenate([x0, x1]).astype(jnp.float32) - shift) / scale
    dist = 0.0
    for k, features in enumerate(VGG16Features(name="vgg")(x)):
      f0, f1 = jnp.split(_unit_channels(features), 2)
      head = nn.Dense(1, use_bias=False, name=f"lin{k}")
      dist += jnp.mean(head(jnp.square(f0 - f1))[..., 0], axis=(1, 2))
    return dist


def check_images(x0, x1):
  """Raises ValueError unless x0, x1 are equal-shaped (B, H, W, 3), H and W >= 16."""
  if x0.shape != x1.shape:
    raise ValueError(f"LPIPS: the image batches differ in shape: {x0.shape} vs {x1.shape}.")
  if x0.ndim != 4 or x0.shape[-1] != 3:
    raise ValueError(f"LPIPS: expected (B, H, W, 3) images, got shape {x0.shape}.")
  if min(x0.shape[1:3]) < _MIN_SIZE:
    raise ValueError(
      f"LPIPS: images must be at least {_MIN_SIZE}x{_MIN_SIZE} pixels, got {x0.shape[1:3]}."
    )


def params_from_state_dicts(vgg_state, lin_state, vgg_name=VGG16_FILE, lin_name=LIN_FILE):
  """Converts the torchvision VGG16 and LPIPS head state dicts (numpy) to LPIPS params."""
  expected = _expected_params()
  flat = {}
  for key, value in vgg_state.items():
    match = re.fullmatch(r"features\.(\d+)\.(weight|bias)", key)
    if match and match.group(2) == "weight":
      flat[("features_" + match.group(1), "kernel")] = weights.conv_kernel(value)
    elif match:
      flat[("features_" + match.group(1), "bias")] = value
    elif not key.startswith("classifier."):  # the classifier is not part of LPIPS
      flat[(key,)] = value
  params = {"vgg": weights.tree_from_torch(flat, expected.pop("vgg"), vgg_name)}
  flat = {}
  for key, value in lin_state.items():
    match = re.fullmatch(r"lin(\d)\.model\.1\.weight", key)
    # (1, C, 1, 1) 1x1 conv -> (C, 1) dense kernel.
    flat[("lin" + match.group(1), "kernel") if match else (key,)] = value.reshape(-1, 1)
  return params | weights.tree_from_torch(flat, expected, lin_name)


def _expected_params():
  x = jax.ShapeDtypeStruct((1, _MIN_SIZE, _MIN_SIZE, 3), jnp.float32)
  return jax.eval_shape(LPIPS().init, jax.random.key(0), x, x)["params"]


def load_lpips(vgg_path=None, lin_path=None):
  """Returns (LPIPS module, params) from the standard weight files.

  Args:
    vgg_path: torchvision's VGG16 state dict; None looks for `vgg16-397923af.pth` in
      `lavin_jax.eval.weights.weights_dir()`.
    lin_path: the LPIPS VGG v0.1 linear heads; None looks for `lpips_vgg_lin_v0.1.pth`
      there.
  """
  vgg_path = weights.find_weight_file(
    VGG16_FILE, vgg_path, what="torchvision VGG16", source=VGG16_SOURCE
  )
  lin_path = weights.find_weight_file(
    LIN_FILE, lin_path, what="LPIPS VGG linear heads", source=LIN_SOURCE
  )
  params = params_from_state_dicts(
    weights.read_torch_state_dict(vgg_path),
    weights.read_torch_state_dict(lin_path),
    str(vgg_path),
    str(lin_path),
  )
  return LPIPS(), jax.tree.map(jnp.asarray, params)
