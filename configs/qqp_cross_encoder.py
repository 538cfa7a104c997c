"""QQP duplicate-question cross-encoder (binary, BCE) from all-MiniLM-L6-v2 on the qqp-sample
re-split: the first 20000 rows train, the rest evaluate (the one malformed row is skipped)."""
import os
from pathlib import Path

from xenc_jax.train.config import EvalConfig, TrainConfig
from xenc_jax.train.data import DataSource
from xenc_jax.train.optim import OptimConfig

DATA = Path(os.environ.get("XENC_DATA_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
QQP = str(DATA / "qqp-sample" / "qqp_sample.tsv")


def qqp(rows) -> DataSource:
    # id, qid1, qid2, question1, question2, is_duplicate
    return DataSource(path=QQP, format="tsv", kind="pairs", columns=(3, 4), label_column=5,
                      rows=rows, on_bad_row="skip")


CONFIG = TrainConfig(
    name="qqp_cross_encoder",
    model="sentence-transformers/all-MiniLM-L6-v2",
    num_labels=1,
    loss="bce",
    max_length=128,
    train=qqp((0, 20000)),
    evaluator=EvalConfig(kind="classification", data=qqp((20000, 21500)), metric="average_precision", name="qqp-dev"),
    test=EvalConfig(kind="classification", data=qqp((21500, None)), metric="average_precision", name="qqp-test"),
    epochs=1,
    batch_size=32,
    bucket_lengths=(32, 64),
    optim=OptimConfig(learning_rate=3e-5, warmup_ratio=0.1, eps=1e-8),
    checkpoint_every=250,
)
