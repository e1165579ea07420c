"""lavin_jax.inference."""
