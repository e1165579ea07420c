"""lavin_jax.models."""
