"""lavin_jax.flow."""
