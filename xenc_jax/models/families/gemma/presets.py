"""HF config.json kwargs of tiny random Gemma / Gemma 2 decoders (tests) and of base-shaped ones
(benchmarks), as plain dicts (no torch, no transformers). vocab 544 covers tests/tiny_llm.py's
byte-level BPE tokenizer (<= 512 tokens).

TINY (Gemma): multi-query attention (4 query heads, 1 kv head, gemma-2b style) with head_dim 16
!= 32 / 4, tanh-GELU GeGLU, tied embeddings.
GEMMA2_TINY: 3 layers (sliding, full, sliding) with a window of 5 tokens, shorter than test rows;
query_pre_attn_scalar 24 (not head_dim), attention and final-logit soft-caps small enough to bind
on random weights (cap * tanh(x / cap) bends visibly from |x| ~ cap / 2).
"""
TINY = dict(
    vocab_size=544, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=1, head_dim=16, max_position_embeddings=128, rms_norm_eps=1e-6,
    hidden_act="gelu_pytorch_tanh", tie_word_embeddings=True, bos_token_id=None, eos_token_id=2,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
)
GEMMA2_TINY = dict(
    vocab_size=544, hidden_size=32, intermediate_size=40, num_hidden_layers=3, num_attention_heads=4,
    num_key_value_heads=2, head_dim=16, max_position_embeddings=128, rms_norm_eps=1e-6,
    hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True, bos_token_id=None, eos_token_id=2,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, sliding_window=5,
    query_pre_attn_scalar=24, attn_logit_softcapping=2.0, final_logit_softcapping=3.0,
)
# gemma-2b's shape
BASE = dict(
    vocab_size=256000, hidden_size=2048, intermediate_size=16384, num_hidden_layers=18, num_attention_heads=8,
    num_key_value_heads=1, head_dim=256, max_position_embeddings=8192, rms_norm_eps=1e-6,
    hidden_act="gelu_pytorch_tanh", tie_word_embeddings=True, bos_token_id=2, eos_token_id=1, pad_token_id=0,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
)
# gemma-2-2b's shape (bge-reranker-v2-gemma is gemma-2b-shaped: BASE)
GEMMA2_BASE = dict(
    vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
    num_key_value_heads=4, head_dim=256, max_position_embeddings=8192, rms_norm_eps=1e-6,
    hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True, bos_token_id=2, eos_token_id=1,
    pad_token_id=0, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, sliding_window=4096,
    query_pre_attn_scalar=256, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
)
# Gemma 3 text: 3 layers (sliding, sliding, full: sliding_window_pattern 3), window 5, q/k norms,
# theta 1e4 / 1e6 per layer type; a soft-cap too (Gemma 3 checkpoints have none, the switch exists)
GEMMA3_TINY = dict(
    vocab_size=544, hidden_size=32, intermediate_size=40, num_hidden_layers=3, num_attention_heads=4,
    num_key_value_heads=2, head_dim=16, max_position_embeddings=128, rms_norm_eps=1e-6,
    hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True, bos_token_id=None, eos_token_id=2,
    layer_types=["sliding_attention", "sliding_attention", "full_attention"], sliding_window=5,
    rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                     "full_attention": {"rope_type": "default", "rope_theta": 1000000.0}},
    query_pre_attn_scalar=24, final_logit_softcapping=3.0,
)
# EmbeddingGemma-300m's shape (a bidirectional Gemma 3 text model)
GEMMA3_BASE = dict(
    vocab_size=262144, hidden_size=768, intermediate_size=1152, num_hidden_layers=24, num_attention_heads=3,
    num_key_value_heads=1, head_dim=256, max_position_embeddings=2048, rms_norm_eps=1e-6,
    hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True, bos_token_id=2, eos_token_id=1, pad_token_id=0,
    layer_types=["sliding_attention"] * 5 + ["full_attention"] + ["sliding_attention"] * 5 + ["full_attention"]
    + ["sliding_attention"] * 5 + ["full_attention"] + ["sliding_attention"] * 5 + ["full_attention"],
    sliding_window=512, use_bidirectional_attention=True, query_pre_attn_scalar=256,
    rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                     "full_attention": {"rope_type": "default", "rope_theta": 1000000.0}},
)
# Gemma3TextConfig's defaults (transformers 5.25) for the keys a multimodal Gemma 3's text_config
# may leave out: gemma-3-4b/12b/27b's config.json write only the sizes that differ from these
# (tests/test_family_gemma3_multimodal.py checks them against Gemma3TextConfig()). The rope and
# layer-type defaults are the gemma3_text reader's own (the same as HF's).
GEMMA3_TEXT_DEFAULTS = dict(
    vocab_size=262208, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
    num_key_value_heads=4, head_dim=256, max_position_embeddings=131072, rms_norm_eps=1e-6,
    hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=256, sliding_window=4096, pad_token_id=0,
    attention_bias=False, final_logit_softcapping=None, attn_logit_softcapping=None,
)
# A tiny multimodal Gemma 3 (Gemma3Config, model_type gemma3): GEMMA3_TINY's text tower (sliding and
# full layers, a window of 5) beside a 1-layer SigLIP vision tower and its projector, which
# text-only scoring never runs; image tokens past the tiny tokenizer's ids (<= 512) and in the
# vocabulary (544), as gemma-3-4b's 262144 < 262208. Not the record's `tiny` (the generic suites
# build every `tiny` family with tests/tiny_llm.py, whose classes are the text-only ones).
GEMMA3_MM_TINY = dict(
    text_config=GEMMA3_TINY,
    vision_config=dict(model_type="siglip_vision_model", hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                       num_attention_heads=2, image_size=28, patch_size=14),
    mm_tokens_per_image=4, boi_token_index=538, eoi_token_index=539, image_token_index=540,
)
