"""xenc_jax: JAX/Flax cross-encoders and bi-encoders with Hugging Face weights."""
from .batching import BucketConfig
from .cross_encoder import CrossEncoder
from .search import pairwise_similarity, semantic_search, similarity

__version__ = "0.1.0"
__all__ = ["CrossEncoder", "BucketConfig", "semantic_search", "similarity", "pairwise_similarity"]
