"""lavin_jax.io: file formats, safe writes and pixel coding; imports only configs."""
