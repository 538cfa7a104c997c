"""SNLI 3-class cross-encoder (softmax cross-entropy) from all-MiniLM-L6-v2. Only the SNLI dev and
test samples exist here: train on the dev sample, evaluate on the test sample. Labels in ST's NLI
order: contradiction 0, entailment 1, neutral 2; unlabelled rows ('-') are dropped."""
import os
from pathlib import Path

from xenc_jax.train.config import EvalConfig, TrainConfig
from xenc_jax.train.data import DataSource
from xenc_jax.train.optim import OptimConfig

DATA = Path(os.environ.get("XENC_DATA_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
LABELS = {"contradiction": 0, "entailment": 1, "neutral": 2}


def snli(split: str) -> DataSource:
    return DataSource(path=str(DATA / "snli-subset" / f"snli_1.0_{split}_subset.jsonl"), kind="pairs",
                      format="jsonl", columns=("sentence1", "sentence2"), label_column="gold_label",
                      label_map=LABELS, skip_labels=("-",))


CONFIG = TrainConfig(
    name="snli_cross_encoder",
    model="sentence-transformers/all-MiniLM-L6-v2",
    num_labels=3,
    loss="ce",
    max_length=128,
    train=snli("dev"),
    test=EvalConfig(kind="classification", data=snli("test"), metric="accuracy", name="snli-test"),
    epochs=3,
    batch_size=16,
    bucket_lengths=(32, 64),
    optim=OptimConfig(learning_rate=5e-5, warmup_ratio=0.1, eps=1e-8),
    checkpoint_every=200,
)
