"""PatchGAN discriminator for ST-VAE training (paper: MSE + LPIPS + adversarial + KL).

A stack of 4x4 convolutions (pix2pix's N-layer PatchGAN): stride 2 while the width
doubles (capped at 8x), then two stride-1 layers, the last giving one logit per patch.
Per-frame GroupNorm instead of BatchNorm (no batch statistics to carry). `temporal=True`
makes every kernel 3 frames deep (stride 1 in time, zero-padded), so clips are judged
as clips (a 3D PatchGAN); otherwise each frame is judged alone. Kernels carry the
logical axes ('disc_in', 'disc_out'), norms ('norm',) (rules: lavin_jax.parallel.mesh).

  disc = PatchDiscriminator(channels=64, num_layers=3)
  logits = disc.apply({'params': p}, pixels)  # (B, T, H, W, 3) -> (B, T, H/8 - 2, W/8 - 2, 1)
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class PatchDiscriminator(nn.Module):
  """Per-patch real/fake logits of pixels (B, T, H, W, C) in [-1, 1]."""

  channels: int = 64
  num_layers: int = 3
  temporal: bool = False
  norm_groups: int = 32
  dtype: Any = jnp.float32

  def _conv(self, features, stride, name):
    t = 3 if self.temporal else 1
    return nn.Conv(
      features,
      (t, 4, 4),
      strides=(1, stride, stride),
      padding=((t // 2, t // 2), (1, 1), (1, 1)),
      dtype=self.dtype,
      kernel_init=nn.with_logical_partitioning(
        nn.initializers.lecun_normal(), (None, None, None, "disc_in", "disc_out")
      ),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("disc_out",)),
      name=name,
    )

  def _norm(self, features, name):
    return nn.GroupNorm(
      num_groups=min(self.norm_groups, features),
      dtype=jnp.float32,
      reduction_axes=(-3, -2, -1),  # per frame
      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)),
      name=name,
    )

  @nn.compact
  def __call__(self, x):
    x = nn.leaky_relu(self._conv(self.channels, 2, "conv_0")(x), 0.2)
    for i in range(1, self.num_layers + 1):
      features = self.channels * min(2**i, 8)
      stride = 2 if i < self.num_layers else 1
      x = self._conv(features, stride, f"conv_{i}")(x)
      x = nn.leaky_relu(self._norm(features, f"norm_{i}")(x), 0.2)
    return self._conv(1, 1, "logits")(x).astype(jnp.float32)
