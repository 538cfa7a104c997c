"""HF config.json kwargs of a tiny random DeBERTa-v2 (tests) and of a DeBERTa-v3-base-shaped one
(benchmarks), as plain dicts (no torch, no transformers): tests build one with
`transformers.AutoConfig.for_model("deberta-v2", **{**TINY, **overrides})`.

TINY: hidden 32, 2 layers, 4 heads, intermediate 37, 120 tokens, with DeBERTa-v3's switches:
relative attention (c2p + p2c) over 8 log position buckets (max distance 32), keys shared with the
content projections, a layer-normed relative table, no absolute positions, no token types.
BASE: microsoft/deberta-v3-base's shape (12 x 768, 256 log buckets, the same switches), its
vocabulary (128100) and pad id (0).
"""
TINY = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64, relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=8,
            max_relative_positions=32, share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False,
            type_vocab_size=0)
BASE = dict(vocab_size=128100, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
            max_position_embeddings=512, relative_attention=True, position_buckets=256, norm_rel_ebd="layer_norm",
            share_att_key=True, pos_att_type=["p2c", "c2p"], layer_norm_eps=1e-7, max_relative_positions=-1,
            position_biased_input=False, type_vocab_size=0, pooler_hidden_size=768, pooler_hidden_act="gelu",
            hidden_act="gelu", pad_token_id=0)
