"""Import of the released checkpoints (J-DiT safetensors, ST-VAE .pt) into Flax params."""

from lavin_jax.convert.jdit import load_released_jdit
from lavin_jax.convert.stvae import load_released_stvae

__all__ = ["load_released_jdit", "load_released_stvae"]
