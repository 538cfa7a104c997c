"""HF config.json kwargs of a tiny random Llama / Mistral (tests) and of base-shaped ones
(benchmarks), as plain dicts (no torch, no transformers). Tests build a model with
`transformers.AutoConfig.for_model(model_type, **{**TINY, **overrides})`.

TINY switches what Llama can switch: odd kv head count (6 query heads over 3 kv heads), an explicit
head_dim (8, not 36 / 6), biases on attention and MLP, and Llama 3 rope scaling whose three bands
(kept, smoothed, divided) all occur at head_dim 8 with original_max_position_embeddings 64.
MISTRAL_TINY: grouped-query attention with a sliding window of 7 tokens, shorter than test rows.
vocab 544 covers tests/tiny_llm.py's byte-level BPE tokenizer (<= 512 tokens).
"""
TINY = dict(
    vocab_size=544, hidden_size=36, intermediate_size=40, num_hidden_layers=2, num_attention_heads=6,
    num_key_value_heads=3, head_dim=8, max_position_embeddings=128, rms_norm_eps=1e-5, attention_bias=True,
    mlp_bias=True, tie_word_embeddings=False, bos_token_id=None, eos_token_id=2,
    rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
)
MISTRAL_TINY = dict(
    vocab_size=544, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, sliding_window=7,
    tie_word_embeddings=True, bos_token_id=None, eos_token_id=2,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
)
# Llama-3.2-1B's shape (benchmarks override num_hidden_layers to run a few layers on CPU)
BASE = dict(
    vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
    num_key_value_heads=8, head_dim=64, max_position_embeddings=131072, rms_norm_eps=1e-5,
    tie_word_embeddings=True, bos_token_id=128000, eos_token_id=128001,
    rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
)
# e5-mistral-7b-instruct / SFR-Embedding-Mistral / Linq-Embed-Mistral's shape (Mistral-7B-v0.1)
MISTRAL_BASE = dict(
    vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=8, max_position_embeddings=32768, rms_norm_eps=1e-5, sliding_window=4096,
    tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
)
