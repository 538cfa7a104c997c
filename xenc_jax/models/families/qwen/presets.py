"""HF config.json kwargs of tiny random Qwen3 / Qwen2 decoders (tests) and of a Qwen3-0.6B-shaped
one (benchmarks), as plain dicts (no torch, no transformers): tests build one with
`transformers.AutoConfig.for_model(model_type, **{**TINY, **overrides})` (the pad id comes from the
tokenizer, tests/tiny_llm.py's byte-level BPE: <= 512 tokens, so 544 embedding rows, a bit more than
the tokenizer like Qwen's; eos 2 = <|im_end|>, no bos).

TINY (Qwen3): hidden 32, 2 layers, 4 query heads over 2 kv heads, an explicit head_dim (8, not
32 / 4), intermediate 37, tied embeddings; q/k norms are always on in Qwen3.
QWEN2_TINY: the same dims with Qwen2's defaults: head_dim = hidden / heads, q/k/v biases, an untied
LM head.
BASE: Qwen3-0.6B's config.json (Qwen3-Reranker-0.6B and Qwen3-Embedding-0.6B share it).
"""
TINY = dict(vocab_size=544, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, rms_norm_eps=1e-6,
            bos_token_id=None, eos_token_id=2, head_dim=8, tie_word_embeddings=True)
QWEN2_TINY = {k: v for k, v in TINY.items() if k != "head_dim"} | {"tie_word_embeddings": False}
BASE = dict(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
            num_key_value_heads=8, head_dim=128, max_position_embeddings=40960, rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0}, tie_word_embeddings=True,
            bos_token_id=151643, eos_token_id=151645)
