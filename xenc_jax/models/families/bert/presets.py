"""HF config.json kwargs of tiny random BERT-family models (tests), as plain dicts (no torch, no
transformers): tests build one with `transformers.AutoConfig.for_model(model_type, **{**TINY, **overrides})`.

Dims: hidden 32, 2 layers, 4 heads, an intermediate size (37) that is no multiple of the hidden size,
120 tokens. Each record varies what its model_type can: BERT and ELECTRA with two token types,
ELECTRA with an embedding projection (16 -> 32), RoBERTa with pad id 1 (positions start at
padding_idx + 1 = 2, so 64 + 2 position rows), XLM-RoBERTa (an alias of RoBERTa) with the tanh GELU,
DistilBERT under its own config names. No base presets: the BERT-family benchmarks use the real
all-MiniLM-L6-v2.
"""
TINY = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64, type_vocab_size=2)
ROBERTA_TINY = {**TINY, "max_position_embeddings": 66, "type_vocab_size": 1, "pad_token_id": 1}
XLM_ROBERTA_TINY = {**ROBERTA_TINY, "hidden_act": "gelu_new"}
ELECTRA_TINY = {**TINY, "embedding_size": 16}
DISTILBERT_TINY = dict(vocab_size=120, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64)
