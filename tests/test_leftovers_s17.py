"""Small user-facing leftovers of the training walk-through (session 17): each test reproduces
what a user saw and checks the fix on real files, without compiling a model."""
from __future__ import annotations

import numpy as np


def test_bi_encoder_export_keeps_source_pooler(minilm_dir, tmp_path):
    """A bi-encoder export of all-MiniLM-L6-v2 (BertModel) carries the source's pooler tensors
    unchanged: transformers (and so sentence-transformers 6.3) loads it reporting no MISSING /
    newly initialized weights. BiHead.export on the source's own params (what an export after
    0 steps writes): no compile needed."""
    from transformers import AutoModel

    from xenc_jax.hf.checkpoint_files import read_checkpoint
    from xenc_jax.train.bi_head import load_with_head
    from xenc_jax.train.config import TrainConfig
    cfg = TrainConfig(model=str(minilm_dir), task="bi_encoder", loss="mnrl")
    pt, head = load_with_head(cfg, minilm_dir)
    out = head.export(tmp_path / "export", pt.config, pt.params, pt.tokenizer, 64)
    model, info = AutoModel.from_pretrained(str(out), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    src, ours = read_checkpoint(minilm_dir), read_checkpoint(out)
    for k in ("pooler.dense.weight", "pooler.dense.bias"):
        np.testing.assert_array_equal(ours[k], src[k])   # copied, not trained: bit-equal
    # and the encoder weights are the export's params, untouched by the rewrite of the file
    np.testing.assert_array_equal(ours["embeddings.word_embeddings.weight"], src["embeddings.word_embeddings.weight"])
