"""lavin_jax.parallel."""
