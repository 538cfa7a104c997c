"""The recipe check's cross-encoder (issue 31, docs/recipe_check.md): all-MiniLM-L6-v2 with a fresh
one-logit head (the STS-B preset's model, configs/stsb_cross_encoder.py), trained with
BinaryCrossEntropyLoss on labeled (query, passage, 0/1) pairs, as sentence-transformers' reranker
training guide does on mined negatives.

Both arms of the check use this one file, so they differ only in the data:
  random: the MS MARCO toy triplets' given negatives, as (query, positive, 1), (query, negative, 0)
  mined:  the same positives, negatives mined by `xenc mine --format labeled-pair`
scripts/recipe_check.py writes both files under runs/recipe_check/ and runs

  nice -n 5 xenc train --config configs/recipe_check_cross_encoder.py \\
      --set name=recipe_random --set train.path=runs/recipe_check/random_pairs.jsonl
  (and name=recipe_mined, train.path=runs/recipe_check/mined_pairs.jsonl)

Settings: the STS-B preset's (batch 16, AdamW, 10% warmup, linear decay, clip 1.0, seed 12) with a
fixed step count (max_steps) instead of epochs, so both arms take the same number of optimizer
steps, and lr 1e-4 instead of 5e-5: the check affords ~65 steps on a shared 2-core CPU, and at 5e-5
a 26-step probe moved the training loss only from 0.695 to 0.686 (the fresh head learns slowly). No evaluator during training: DL19 is the test
and is only scored after training, by the script.
"""
from xenc_jax.train.config import TrainConfig
from xenc_jax.train.data import DataSource
from xenc_jax.train.optim import OptimConfig

CONFIG = TrainConfig(
    name="recipe_random",
    model="sentence-transformers/all-MiniLM-L6-v2",   # its packaged copy offline; the head is new
    task="cross_encoder",
    num_labels=1,
    loss="bce",
    max_length=256,
    train=DataSource(path="runs/recipe_check/random_pairs.jsonl", kind="pairs", format="jsonl",
                     columns=("query", "passage"), label_column="label"),
    epochs=1,
    max_steps=65,                  # 5 epochs of the 200 pairs (13 steps each); ~10 s a step on the shared 2-core CPU
    batch_size=16,
    bucket_lengths=(64, 128, 256),
    seed=12,
    optim=OptimConfig(learning_rate=1e-4, weight_decay=0.01, eps=1e-8, warmup_ratio=0.1,
                      schedule="linear", max_grad_norm=1.0),
    checkpoint_every=0,
    keep_checkpoints=1,
    log_every=10,
    export_best=False,
    progress=False,
)
