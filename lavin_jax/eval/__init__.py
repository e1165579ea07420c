"""lavin_jax.eval."""
