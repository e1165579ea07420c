"""lavin_jax.train."""
