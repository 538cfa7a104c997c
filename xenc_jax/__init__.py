"""xenc_jax: JAX/Flax cross-encoders and bi-encoders with Hugging Face weights.

The public names load on first use (PEP 562): `import xenc_jax` alone, `xenc_jax.__version__` and
`xenc --help` do not import jax, flax or transformers (1.5-3 s of start-up). `from xenc_jax import
CrossEncoder` works as before and imports only what CrossEncoder needs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # type checkers and IDEs see the names; at run time __getattr__ loads them
    from .batching import BucketConfig
    from .bi_encoder import BiEncoder
    from .cross_encoder import CrossEncoder
    from .hf.configs import ConfigError
    from .hf.model_folder import MissingHeadError, ModelFolderError
    from .hf.weights import WeightsError
    from .mining import mine_hard_negatives
    from .retrieval import evaluate_retrieval, retrieve_rerank
    from .runner import NonFiniteOutput
    from .search import pairwise_similarity, semantic_search, similarity
    from .train.rows import DataError

__version__ = "0.1.0"
__all__ = ["CrossEncoder", "BiEncoder", "BucketConfig", "semantic_search", "similarity",
           "pairwise_similarity", "retrieve_rerank", "evaluate_retrieval", "mine_hard_negatives",
           # the errors a caller may catch (all ValueErrors, each a one-line message naming the cause):
           "ConfigError", "ModelFolderError", "MissingHeadError", "WeightsError", "NonFiniteOutput", "DataError"]


def __getattr__(name: str):
    # Written out rather than importlib + a table, so the import-graph test and tools see the edges.
    if name == "BucketConfig":
        from . import batching as module
    elif name == "BiEncoder":
        from . import bi_encoder as module
    elif name == "CrossEncoder":
        from . import cross_encoder as module
    elif name == "mine_hard_negatives":
        from . import mining as module
    elif name in ("evaluate_retrieval", "retrieve_rerank"):
        from . import retrieval as module
    elif name in ("pairwise_similarity", "semantic_search", "similarity"):
        from . import search as module
    elif name == "ConfigError":   # config.json's; a training setting's (train.config) is a subclass
        from .hf import configs as module
    elif name in ("MissingHeadError", "ModelFolderError"):
        from .hf import model_folder as module
    elif name == "WeightsError":
        from .hf import weights as module
    elif name == "NonFiniteOutput":
        from . import runner as module
    elif name == "DataError":
        from .train import rows as module
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(module, name)
    globals()[name] = value  # later lookups find it directly, without __getattr__
    return value


def __dir__() -> list[str]:
    # The public names (loaded or not), plus what is already here, less this file's own helpers.
    return sorted((set(globals()) - {"annotations", "TYPE_CHECKING"}) | set(__all__))
