"""lavin_jax: LaVin-DiT (in-context vision with a diffusion transformer) in JAX/Flax."""

__version__ = "0.1.0"
