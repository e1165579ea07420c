"""Import of the released PyTorch checkpoints (J-DiT safetensors, ST-VAE .pt)."""

import importlib

_PUBLIC = {
    "load_released_jdit": "lavin_jax.convert.jdit",
    "load_released_stvae": "lavin_jax.convert.stvae",
}


def __getattr__(name):
  # Lazy, so that importing lavin_jax.convert pulls in neither torch nor safetensors.
  if name in _PUBLIC:
    return getattr(importlib.import_module(_PUBLIC[name]), name)
  raise AttributeError(f"module 'lavin_jax.convert' has no attribute {name!r}")


__all__ = sorted(_PUBLIC)
