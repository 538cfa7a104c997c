"""Tiny, seeded, fully random Hugging Face models built with transformers + torch, saved with
save_pretrained: the reference side of every parity test.

Every parameter (biases and LayerNorms included) is drawn at random, so a wrong transform or a
missed bias cannot hide behind HF's zero/one initialisation.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
import transformers as tf

from xenc_jax.hf import registry

# the BERT-like model_types test_parity.py / test_hf_loading.py parametrize over
FAMILIES = ("bert", "roberta", "xlm-roberta", "electra", "distilbert")


def tiny_config(family: str, num_labels: int = 1, **overrides):
    """The HF config of `family`'s (a registered model_type's) tiny test model: its record's `tiny`
    preset (models/families/<name>/presets.py) with `overrides`, all given to the config's
    constructor (ModernBERT derives layer_types / rope_parameters there)."""
    preset = registry.family(family).tiny
    if not preset:
        raise ValueError(f"model_type {family!r} has no tiny preset (its family folder's presets.py)")
    # deep copy: HF config constructors may normalise nested values (lists, rope dicts) in place
    cfg = tf.AutoConfig.for_model(family, **copy.deepcopy({**preset, **overrides}))
    cfg.num_labels = num_labels
    return cfg


def randomize_(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.2
            is_norm_scale = ("LayerNorm" in name or "layer_norm" in name) and name.endswith("weight")
            is_norm_scale = is_norm_scale or name.endswith("norm.weight")  # ModernBERT: norm, attn_norm, ...
            p.copy_(1.0 + noise if is_norm_scale else noise)


def make_tiny(family: str, path: Path, *, head: bool = True, num_labels: int = 1, seed: int = 0, **overrides):
    """Build, randomize and save a tiny model; returns the torch model in eval mode."""
    torch.manual_seed(seed)
    cfg = tiny_config(family, num_labels, **overrides)
    cls = tf.AutoModelForSequenceClassification if head else tf.AutoModel
    # eager attention as the reference (every family accepts it; ModernBERT would pick sdpa)
    model = cls.from_config(cfg, attn_implementation="eager")
    randomize_(model, seed)
    model.eval()
    model.save_pretrained(str(path))
    return model


def make_tiny_minilm(family: str, path: Path, minilm_dir: Path, *, tokenizer=None, **kwargs):
    """`make_tiny` sized to all-MiniLM-L6-v2's real uncased WordPiece vocabulary, with that
    tokenizer (or `tokenizer`, e.g. `mpnet_tokenizer(minilm_dir)`) saved beside the weights: a
    loadable model folder that tokenizes real text. Returns the torch model, as `make_tiny`.
    `kwargs` go to `make_tiny` (head, num_labels, seed, config overrides)."""
    tok = tokenizer if tokenizer is not None else tf.AutoTokenizer.from_pretrained(str(minilm_dir))
    model = make_tiny(family, path, vocab_size=tok.vocab_size, **kwargs)
    tok.save_pretrained(str(path))
    return model


def random_batch(family: str, lengths=(9, 4, 13, 1), vocab=120, seed=0):
    """input_ids / attention_mask / token_type_ids with real right-padding of different lengths:
    padded with the tiny model's pad id; second halves of type 1 where it has two token types."""
    rng = np.random.default_rng(seed)
    cfg = tiny_config(family)
    pad = cfg.pad_token_id
    L = max(lengths)
    ids = np.full((len(lengths), L), pad, np.int64)
    mask = np.zeros((len(lengths), L), np.int64)
    types = np.zeros((len(lengths), L), np.int64)
    for r, n in enumerate(lengths):
        ids[r, :n] = rng.integers(3, vocab, n)
        mask[r, :n] = 1
        if getattr(cfg, "type_vocab_size", 0) >= 2:
            types[r, n // 2:n] = 1
    return ids, mask, types


def mpnet_tokenizer(minilm_dir: Path):
    """An MPNet tokenizer as all-mpnet-base-v2's is built: <s> <pad> </s> <unk>, the uncased
    WordPiece vocabulary (here all-MiniLM-L6-v2's), <mask> (30527 tokens, pad id 1)."""
    vocab = (Path(minilm_dir) / "vocab.txt").read_text(encoding="utf-8").splitlines()
    tokens = ["<s>", "<pad>", "</s>", "<unk>"] + vocab + ["<mask>"]
    return tf.MPNetTokenizer(vocab={t: i for i, t in enumerate(tokens)}, do_lower_case=True,
                             bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
                             unk_token="<unk>", pad_token="<pad>", mask_token="<mask>", model_max_length=512)


def modernbert_tokenizer(minilm_dir: Path):
    """all-MiniLM-L6-v2's uncased WordPiece vocabulary with ModernBERT's model inputs (no token
    type ids): the tokenizer is not what is under test, the vocabulary only needs real text."""
    return tf.BertTokenizerFast(vocab_file=str(Path(minilm_dir) / "vocab.txt"), do_lower_case=True,
                                model_input_names=["input_ids", "attention_mask"], model_max_length=8192)


def deberta_tokenizer(minilm_dir: Path):
    """A stand-in for DeBERTa-v3's SentencePiece tokenizer (not available offline): the uncased
    WordPiece vocabulary of all-MiniLM-L6-v2 as a fast tokenizer, with DeBERTa's special token
    names ([CLS] [SEP] [PAD]=0 [UNK] [MASK]); AutoTokenizer reads it back from tokenizer.json."""
    return tf.BertTokenizerFast(vocab_file=str(Path(minilm_dir) / "vocab.txt"), do_lower_case=True,
                                model_max_length=512)


def right_padded_ids(lengths, vocab, seed=0):
    """input_ids / attention_mask of rows of `lengths` real tokens (ids 3..vocab-1, seeded),
    right-padded with id 0: the decoder and T5 tests' batch."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((len(lengths), max(lengths)), np.int64)
    mask = np.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n], mask[i, :n] = rng.integers(3, vocab, n), 1
    return ids, mask
