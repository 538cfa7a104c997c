"""Tiny, seeded, fully random Hugging Face models built with transformers + torch, saved with
save_pretrained: the reference side of every parity test.

Every parameter (biases and LayerNorms included) is drawn at random, so a wrong transform or a
missed bias cannot hide behind HF's zero/one initialisation.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import transformers as tf

FAMILIES = ("bert", "roberta", "xlm-roberta", "electra", "distilbert")

_COMMON = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
               intermediate_size=37, max_position_embeddings=64)


_ATTENTION = {"modernbert": dict(attn_implementation="eager")}


def tiny_config(family: str, num_labels: int = 1, **overrides):
    if family == "bert":
        cfg = tf.BertConfig(**_COMMON, type_vocab_size=2)
    elif family == "roberta":
        cfg = tf.RobertaConfig(**{**_COMMON, "max_position_embeddings": 66}, type_vocab_size=1, pad_token_id=1)
    elif family == "xlm-roberta":
        cfg = tf.XLMRobertaConfig(**{**_COMMON, "max_position_embeddings": 66}, type_vocab_size=1,
                                  pad_token_id=1, hidden_act="gelu_new")
    elif family == "electra":
        cfg = tf.ElectraConfig(**_COMMON, embedding_size=16, type_vocab_size=2)
    elif family == "camembert":  # an alias of RoBERTa in hf/registry.py
        cfg = tf.CamembertConfig(**{**_COMMON, "max_position_embeddings": 66}, type_vocab_size=1, pad_token_id=1)
    elif family == "mpnet":  # positions start at padding_idx + 1 = 2, like RoBERTa
        cfg = tf.MPNetConfig(**{**_COMMON, "max_position_embeddings": 66}, pad_token_id=1)
    elif family == "modernbert":
        # token ids 0-2 are pad/cls/sep (the real ones are past this vocab). Overrides go to the
        # constructor: layer_types and rope_parameters are derived there from
        # global_attn_every_n_layers / num_hidden_layers / *_rope_theta.
        cfg = tf.ModernBertConfig(**{**_COMMON, **dict(pad_token_id=0, cls_token_id=1, bos_token_id=1,
                                                       sep_token_id=2, eos_token_id=2, global_attn_every_n_layers=2,
                                                       local_attention=8), **overrides})
        overrides = {}
    elif family == "deberta-v2":  # DeBERTa-v3's switches (relative, log buckets, shared keys, normed table)
        cfg = tf.DebertaV2Config(**_COMMON, relative_attention=True, pos_att_type=["p2c", "c2p"],
                                 position_buckets=8, max_relative_positions=32, share_att_key=True,
                                 norm_rel_ebd="layer_norm", position_biased_input=False, type_vocab_size=0)
    elif family == "distilbert":
        cfg = tf.DistilBertConfig(vocab_size=120, dim=32, n_layers=2, n_heads=4, hidden_dim=37,
                                  max_position_embeddings=64)
    else:
        raise ValueError(family)
    cfg.num_labels = num_labels
    for k, v in overrides.items():
        setattr(cfg, k, v)
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
    # eager attention as the reference where HF would pick another kernel (ModernBERT: sdpa)
    model = cls.from_config(cfg, **_ATTENTION.get(family, {}))
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
    """input_ids / attention_mask / token_type_ids with real right-padding of different lengths."""
    rng = np.random.default_rng(seed)
    pad = 1 if family in ("roberta", "xlm-roberta", "camembert", "mpnet") else 0  # deberta-v2: 0
    L = max(lengths)
    ids = np.full((len(lengths), L), pad, np.int64)
    mask = np.zeros((len(lengths), L), np.int64)
    types = np.zeros((len(lengths), L), np.int64)
    for r, n in enumerate(lengths):
        ids[r, :n] = rng.integers(3, vocab, n)
        mask[r, :n] = 1
        if family in ("bert", "electra"):
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
