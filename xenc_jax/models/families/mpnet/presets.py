"""HF config.json kwargs of a tiny random MPNet (tests) and of an MPNet-base-shaped one (benchmarks),
as plain dicts (no torch, no transformers): tests build one with
`transformers.AutoConfig.for_model("mpnet", **{**TINY, **overrides})`.

TINY: hidden 32, 2 layers, 4 heads, intermediate 37, 120 tokens; pad id 1, so positions start at
padding_idx + 1 = 2 like RoBERTa's (64 + 2 position rows).
BASE: all-mpnet-base-v2's shape (12 x 768), its vocabulary (30527) and pad id (1).
"""
TINY = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=66, pad_token_id=1)
BASE = dict(vocab_size=30527, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
            max_position_embeddings=514, pad_token_id=1)
