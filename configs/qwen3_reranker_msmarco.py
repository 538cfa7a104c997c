"""Fine-tune a causal-LM reranker (Qwen3-Reranker-0.6B) on MS MARCO triplets with the listwise
MultipleNegativesRankingLoss on its logit["yes"] - logit["no"] score (each query's positive
against its hard negative, in-group softmax), bf16 compute, parameters sharded FSDP-style over
every device, each layer rematerialised in the backward pass (remat: activations of 512-token
rows through 28 layers would otherwise dominate device memory; costs about one more forward).

The model folder must be one sentence-transformers 6.2 loads as a CrossEncoder: a chat template
with "query"/"document" roles (the ST port of Qwen3-Reranker), or a LogitScore module; pairs are
tokenized through that template, exactly as CrossEncoder scores them, and the export keeps the
template and tokens. For a pod: set mesh="data=-1,fsdp=8" (or sharding="fsdp_tp" with a model
axis) and run one process per host (docs/multihost.md).

Data: ../shared/data/msmarco-toy-triplets (100 real triples) as a smoke-size example; point
`train` at a real MS MARCO triples file for a real run.
"""
import os
from pathlib import Path

from xenc_jax.train.config import TrainConfig
from xenc_jax.train.data import DataSource
from xenc_jax.train.optim import OptimConfig

DATA = Path(os.environ.get("XENC_DATA_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "data"))

CONFIG = TrainConfig(
    name="qwen3_reranker_msmarco",
    model="Qwen/Qwen3-Reranker-0.6B",
    task="cross_encoder",
    num_labels=1,
    loss="mnrl",
    max_length=512,
    train=DataSource(path=str(DATA / "msmarco-toy-triplets" / "triplets.tsv"), kind="triplets",
                     format="tsv", columns=(0, 1, 2), label_column=None),
    epochs=1,
    batch_size=16,
    bucket_lengths=(128, 256, 512),
    dtype="bfloat16",
    sharding="fsdp",
    remat=True,
    optim=OptimConfig(learning_rate=1e-5, weight_decay=0.01, warmup_ratio=0.1, schedule="linear", max_grad_norm=1.0),
    checkpoint_every=200,
    keep_checkpoints=2,
    log_every=10,
)
