"""lavin_jax.data."""
