"""Bi-encoder fine-tuning with MultipleNegativesRankingLoss (in-batch + hard negatives) from
all-MiniLM-L6-v2 on the MS MARCO toy triplets (query, positive, negative), through the model's own
mean pooling and Normalize (exported as trained), scale 20.
Evaluated by cosine Spearman on STS-B dev (a sanity check that embeddings stay useful)."""
import os
from pathlib import Path

from xenc_jax.train.config import EvalConfig, TrainConfig
from xenc_jax.train.data import DataSource
from xenc_jax.train.optim import OptimConfig

DATA = Path(os.environ.get("XENC_DATA_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "data"))

CONFIG = TrainConfig(
    name="bi_encoder_mnrl",
    model="sentence-transformers/all-MiniLM-L6-v2",
    task="bi_encoder",
    loss="mnrl",
    loss_kwargs={"scale": 20.0},
    pooling=None,                # the model folder's 1_Pooling (mean for all-MiniLM-L6-v2)
    max_length=256,
    train=DataSource(path=str(DATA / "msmarco-toy-triplets" / "triplets.tsv"), kind="triplets",
                     format="tsv", columns=(0, 1, 2), label_column=None),
    evaluator=EvalConfig(kind="embedding_similarity", name="sts-dev",
                         data=DataSource(path=str(DATA / "stsbenchmark" / "sts-dev.csv"), format="tsv",
                                         columns=(5, 6), label_column=4, label_scale=0.2,
                                         extra_columns="ignore")),  # 2 trailing columns on some rows
    epochs=1,
    batch_size=16,
    # GradCache: e.g. batch_size=256 with cache_chunks=16 keeps 256 in-batch negatives at the
    # activation memory of 16 rows per mini-batch (one extra forward per step).
    cache_chunks=1,
    bucket_lengths=(32, 64, 128, 256),
    optim=OptimConfig(learning_rate=2e-5, warmup_ratio=0.1, eps=1e-8),
    checkpoint_every=0,
)
