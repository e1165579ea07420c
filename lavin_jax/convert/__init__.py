"""lavin_jax.convert."""
