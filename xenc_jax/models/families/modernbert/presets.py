"""HF config.json kwargs of a tiny random ModernBERT (tests) and of a ModernBERT-base-shaped one
(benchmarks), as plain dicts (no torch, no transformers): tests build one with
`transformers.AutoConfig.for_model("modernbert", **{**TINY, **overrides})`. Overrides must go to
the constructor (not setattr afterwards): it derives layer_types and rope_parameters from
global_attn_every_n_layers, num_hidden_layers and the *_rope_theta.

TINY: hidden 32, 2 layers (a local one, then a global one), 4 heads, intermediate 37, 120 tokens,
a local window of 8; token ids 0-2 are pad / cls / sep (the real ones are past this vocabulary).
BASE: answerdotai/ModernBERT-base's shape (22 x 768, GeGLU 1152, a global layer every third, local
window 128, rope theta 160000 global / 10000 local, no biases, mean pooling) and its special ids.
"""
TINY = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64, pad_token_id=0, cls_token_id=1, bos_token_id=1, sep_token_id=2,
            eos_token_id=2, global_attn_every_n_layers=2, local_attention=8)
BASE = dict(vocab_size=50368, hidden_size=768, num_hidden_layers=22, num_attention_heads=12, intermediate_size=1152,
            max_position_embeddings=8192, global_attn_every_n_layers=3, local_attention=128,
            global_rope_theta=160000.0, local_rope_theta=10000.0, norm_eps=1e-5, norm_bias=False,
            attention_bias=False, mlp_bias=False, classifier_pooling="mean", pad_token_id=50283,
            cls_token_id=50281, sep_token_id=50282, bos_token_id=50281, eos_token_id=50282)
