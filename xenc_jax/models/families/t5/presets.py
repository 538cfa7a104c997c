"""HF config.json kwargs of a tiny random T5 encoder (tests) and of a GTR-T5-base / sentence-t5-base
shaped one (benchmarks), as plain dicts (no torch, no transformers): tests build one with
`transformers.AutoConfig.for_model("t5", **{**TINY, **overrides})`.

TINY: d_model 32, d_kv 8 with 3 heads (heads * d_kv = 24 != d_model: the head dim is T5's own),
2 layers, d_ff 37, 8 relative buckets with max distance 16 (test rows are longer, so the
log-spaced and the clipped buckets all occur), v1.0's ReLU feed-forward (tests switch
feed_forward_proj to "gated-gelu" for v1.1 / mT5).
BASE: GTR-T5-base's / sentence-t5-base's encoder (12 x 768, 12 heads of 64, d_ff 3072, ReLU,
32 buckets, 32128 tokens).
"""
TINY = dict(vocab_size=120, d_model=32, d_kv=8, num_heads=3, num_layers=2, d_ff=37, feed_forward_proj="relu",
            relative_attention_num_buckets=8, relative_attention_max_distance=16, layer_norm_epsilon=1e-6,
            pad_token_id=0, eos_token_id=1)
BASE = dict(vocab_size=32128, d_model=768, d_kv=64, num_heads=12, num_layers=12, d_ff=3072, feed_forward_proj="relu",
            relative_attention_num_buckets=32, relative_attention_max_distance=128, layer_norm_epsilon=1e-6,
            pad_token_id=0, eos_token_id=1)
