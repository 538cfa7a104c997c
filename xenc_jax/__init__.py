"""xenc_jax: JAX/Flax cross-encoders and bi-encoders with Hugging Face weights."""
from .batching import BucketConfig
from .bi_encoder import BiEncoder
from .cross_encoder import CrossEncoder
from .mining import mine_hard_negatives
from .retrieval import evaluate_retrieval, retrieve_rerank
from .search import pairwise_similarity, semantic_search, similarity

__version__ = "0.1.0"
__all__ = ["CrossEncoder", "BiEncoder", "BucketConfig", "semantic_search", "similarity",
           "pairwise_similarity", "retrieve_rerank", "evaluate_retrieval", "mine_hard_negatives"]
