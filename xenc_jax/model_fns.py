"""The one batch contract: what every jitted model call takes and returns.

Inference (CrossEncoder / BiEncoder through runner.BucketedRunner), the training steps
(train/step.py) and the evaluators (train/evaluators.py) all call the two functions made here:

    score_fn(params, batch, rng=None, deterministic=True) -> fp32 logits [B, P, num_labels]
    embed_fn(params, batch, rng=None, deterministic=True) -> fp32 embeddings [B, P, D]

`batch` is a mapping (a dict pytree inside jit) holding at least the MODEL_INPUTS keys, the
device half of batching.Batch (`Batch.arrays()` builds it); other keys (a training batch's
"labels" and "valid") are ignored here:

    input_ids       int32 [B, L]  token ids, the pad id on padding
    attention_mask  int32 [B, L]  segment ids: 0 on padding, else 1..P (which packed example
                                  a token belongs to; an unpacked row is all 1s then 0s)
    token_type_ids  int32 [B, L]  the tokenizer's token types (zeros where it has none)
    position_ids    int32 [B, L]  0-BASED position of each token within its own segment,
                                  0 on padding (see "positions" below)
    cls_positions   int32 [B, P]  read positions: the first column of each segment (0 for an
                                  empty slot); P = 1 for unpacked rows, where it is all zeros

Positions: the batch always carries 0-based positions; the model's `position_offset`
(RoBERTa-style checkpoints start their position table at pad_token_id + 1, MPNet at 2) is
added inside the jitted function, here, and nowhere else. Host code (batching, train/data,
evaluators) never needs to know a model's offset, and pooling ("weightedmean") reads the
0-based positions directly. Every batch, inference's and training's, is laid out by one
function (batching.fill_rows). A training batch (train/data.TrainBatch) has one segment per
row: position_ids = arange(n), cls_positions = zeros [R, 1], attention_mask = 1 on real tokens;
score_fn(...)[:, 0] is then the [R, C] logits and embed_fn(...)[:, 0] the [R, D] embeddings
that the losses take (read at token 0: for a decoder family the module itself moves the read
position to each segment's last token).

rng / deterministic: dropout for training (rng is the "dropout" key); inference passes neither.
"""
from __future__ import annotations

from typing import Mapping, Protocol, Sequence

import jax
import jax.numpy as jnp

from .batching import MODEL_INPUTS  # noqa: F401  (re-exported: the keys a batch must hold)
from .models import pooling as P


class ModelFn(Protocol):
    def __call__(self, params, batch: Mapping[str, jax.Array], rng: jax.Array | None = None,
                 deterministic: bool = True) -> jax.Array: ...


def _rngs(rng, deterministic: bool):
    return None if deterministic else {"dropout": rng}


def make_score_fn(module, position_offset: int) -> ModelFn:
    """score_fn for a SequenceClassifier-like `module` (family encoder + head): fp32 logits
    [B, P, C], one per segment read at cls_positions. `position_offset`: the model config's."""
    offset = int(position_offset)

    def score_fn(params, batch, rng=None, deterministic=True):
        return module.apply({"params": params}, batch["input_ids"], batch["attention_mask"],
                            batch["token_type_ids"], batch["position_ids"] + offset, batch["cls_positions"],
                            deterministic=deterministic, rngs=_rngs(rng, deterministic))
    return score_fn


def make_embed_fn(module, position_offset: int, pooling: Sequence[str] | str = "mean", ops: Sequence[tuple] = (),
                  frozen_dense: Sequence[dict] | None = None) -> ModelFn:
    """embed_fn for a BareEncoder-like `module`: the encoder, then models.pooling.sentence_head
    (pooling per segment, then ST's Dense / Normalize `ops`): fp32 [B, P, D].

    params: {"encoder": ..., "dense": [one dict per Dense op]}; with `frozen_dense` the Dense
    weights are constants of the function instead (training them off: no gradient)."""
    offset, modes, ops = int(position_offset), P.check_modes(pooling), tuple(ops)
    n_dense = sum(kind == "dense" for kind, _ in ops)
    if frozen_dense is not None:
        frozen_dense = [{k: jnp.asarray(v, jnp.float32) for k, v in p.items()} for p in frozen_dense]

    def embed_fn(params, batch, rng=None, deterministic=True):
        h = module.apply({"params": {"encoder": params["encoder"]}}, batch["input_ids"], batch["attention_mask"],
                         batch["token_type_ids"], batch["position_ids"] + offset,
                         deterministic=deterministic, rngs=_rngs(rng, deterministic))
        dense = frozen_dense if frozen_dense is not None else params.get("dense", [])
        if len(dense) != n_dense:
            raise ValueError(f"{len(dense)} Dense param sets for {n_dense} Dense modules in {ops}")
        return P.sentence_head(modes, ops, dense, h, batch["attention_mask"], batch["position_ids"],
                               batch["cls_positions"])
    return embed_fn

