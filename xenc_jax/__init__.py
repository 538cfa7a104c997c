"""xenc_jax: JAX/Flax cross-encoders and bi-encoders with Hugging Face weights."""
__version__ = "0.1.0"
