"""Distil a teacher cross-encoder into a MiniLM-sized student on mined hard negatives (the
recipe of sentence-transformers' cross-encoder distillation: mined candidates, the teacher's
score for each, MarginMSE on the student's margins).

1. Mine negatives and score them with the teacher (one JSON line per (query, positive): the
   positive and the negatives in `answer`, the teacher's score of each in `scores`):

     xenc mine --pairs train_pairs.jsonl --columns query,answer --corpus corpus.jsonl \\
         --model sentence-transformers/all-MiniLM-L6-v2 --rerank TEACHER \\
         --format labeled-list --scores --num-negatives 7 --range-min 5 --relative-margin 0.05 \\
         -o runs/mined/msmarco_distill.jsonl

   TEACHER: any cross-encoder with one output (e.g. cross-encoder/ms-marco-MiniLM-L12-v2 or
   BAAI/bge-reranker-base). With --rerank the teacher also picks the negatives among the
   bi-encoder's candidates, as sentence-transformers' `cross_encoder=` does. range_min skips
   the very top candidates and relative_margin those scored within 5% of the positive: both
   drop likely false negatives.
2. Train: xenc train --config configs/msmarco_distill_cross_encoder.py [--set train.path=FILE]

The teacher's scores are sigmoid outputs (CrossEncoder.predict's default for one label), so the
student's logits go through the same sigmoid before the margins are taken (loss_kwargs). The
same file trains ListNet (`--set loss=listnet`, the teacher's scores as soft relevance labels).
Lists shorter than list_size (anchors with fewer negatives) are padded with masked slots.
"""
from xenc_jax.train.config import TrainConfig
from xenc_jax.train.data import DataSource
from xenc_jax.train.optim import OptimConfig

NUM_NEGATIVES = 7

CONFIG = TrainConfig(
    name="msmarco_distill_cross_encoder",
    model="sentence-transformers/all-MiniLM-L6-v2",   # the student: MiniLM-L6, a fresh head
    task="cross_encoder",
    num_labels=1,
    loss="margin_mse",
    loss_kwargs={"activation_fn": "sigmoid"},
    max_length=256,
    train=DataSource(path="runs/mined/msmarco_distill.jsonl", kind="lists", format="jsonl",
                     columns=("query", "answer"), label_column="scores"),
    list_size=1 + NUM_NEGATIVES,   # the positive, then the negatives
    epochs=1,
    batch_size=16,                 # queries per step: 16 x 8 pairs
    bucket_lengths=(64, 128, 256),
    seed=12,
    optim=OptimConfig(learning_rate=2e-5, weight_decay=0.01, warmup_ratio=0.1, schedule="linear",
                      max_grad_norm=1.0),
    checkpoint_every=500,
    keep_checkpoints=2,
    log_every=20,
)
