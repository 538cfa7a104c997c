"""The family conformance suite's table (tests/test_family_conformance.py): one row per registered
family, the tiny seeded random PyTorch model it is checked against, and the padded batches.

A row says only what differs between families: config switches on top of the family's tiny
config, the classifier sizes built, a decoder's tests/tiny_llm.py kind, input lengths (longer than
every bucket / window / relative range the switches set), whether HF's last hidden state is after
a final norm, and which tensor the strict-loading check removes. Everything else (which head
class, which inputs the model takes, pad ids, positions) is read from the model's own config.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MODULE_TOL = 1e-5   # one layer (or the embeddings), fp32: torch vs XLA op order, ~1e-6 measured
END_TOL = 1e-4      # the whole model, fp32: the project's parity bound


@dataclass(frozen=True)
class Row:
    overrides: dict = field(default_factory=dict)   # tiny config switches (tiny_hf / tiny_llm builders)
    labels: tuple = (1, 3)          # num_labels of the classifiers built (each checked end to end)
    llm_kind: str | None = None     # decoders: tests/tiny_llm.py kind (its head class)
    lengths: tuple = (9, 4, 13, 1)  # the per-layer / packed batch (right-padded)
    final_norm: bool = False        # HF's last hidden state is a final norm's output, not a layer's
    strict_key: str | None = None   # the tensor strict loading removes (None: the first 2-D one of layer 1)


LONG = (150, 9, 40, 1, 131)        # past relative distance 128 (MPNet) and every DeBERTa bucket range

ROWS = {   # model_type -> Row, in hf/registry.FAMILIES order
    "bert": Row(),
    "roberta": Row(),
    "xlm-roberta": Row(),
    "electra": Row(),               # embedding_size 16 -> 32: a projection after the embeddings
    "distilbert": Row(),
    # 32 relative buckets (HF's fixed count); tests/test_family_mpnet.py checks a 64-row table
    "mpnet": Row(overrides=dict(max_position_embeddings=202), lengths=LONG,
                 strict_key="mpnet.encoder.relative_attention_bias.weight"),
    # DeBERTa-v3's switches (tiny_hf default); tests/test_family_deberta.py has the other variants
    "deberta-v2": Row(overrides=dict(max_position_embeddings=202), lengths=LONG,
                      strict_key="deberta.encoder.rel_embeddings.weight"),
    # global / local every 2nd layer, a window of 8 < the rows; pooling, biases: its own file
    "modernbert": Row(overrides=dict(num_hidden_layers=3, global_attn_every_n_layers=2, local_attention=8),
                      lengths=(70, 9, 41, 1, 57), final_norm=True,
                      strict_key="model.layers.1.attn.Wqkv.weight"),
    # decoders: GQA (4 query heads, 2 kv heads), each row read at its last real token
    "qwen2": Row(llm_kind="qwen2-causal", labels=(1,), lengths=(23, 9, 17, 1), final_norm=True),
    "qwen3": Row(llm_kind="qwen3-seqcls", labels=(3,), overrides=dict(head_dim=16), lengths=(23, 9, 17, 1),
                 final_norm=True),
}

# registered model_types the suite does not build, and where they are checked instead
ELSEWHERE = {
    "camembert": "an alias of roberta (same record); tests/test_family_registry.py loads an alias",
    "llama": "tests/test_family_llama.py (its tiny models are built there from the family's presets)",
    "mistral": "tests/test_family_llama.py (its tiny models are built there from the family's presets)",
    "t5": "tests/test_family_t5.py (an encoder without a classifier head: embeddings through ST folders)",
    "mt5": "an alias of t5 (same record); tests/test_family_t5.py",
    "gemma": "tests/test_family_gemma.py",
    "gemma2": "tests/test_family_gemma.py",
    "gemma3_text": "tests/test_family_gemma.py",
    "gemma3": "tests/test_family_gemma3_multimodal.py (the text tower of a multimodal Gemma 3)",
}


def build(model_type: str, row: Row, path: Path, num_labels: int, seed: int):
    """The tiny random PyTorch classifier of a row, saved (with a tokenizer for decoders, whose
    score tokens are read from it); returns the torch model in eval mode."""
    if row.llm_kind is not None:
        from tiny_llm import make_tiny_llm
        return make_tiny_llm(row.llm_kind, path, seed=seed, num_labels=num_labels, **row.overrides)
    from tiny_hf import make_tiny
    return make_tiny(model_type, path, head=True, num_labels=num_labels, seed=seed, **row.overrides)


def padded_batch(hf_config, lengths, seed: int = 0):
    """input_ids / attention_mask / token_type_ids (None where the model has no token types) with
    real right-padding by the config's pad id; ids from 3 (never a special token of the tiny
    tokenizers); token types 1 on the second half of each row where the model has two."""
    rng = np.random.default_rng(seed)
    pad = hf_config.pad_token_id or 0
    ids = np.full((len(lengths), max(lengths)), pad, np.int64)
    mask = np.zeros_like(ids)
    types = np.zeros_like(ids)
    for r, n in enumerate(lengths):
        ids[r, :n] = rng.integers(3, hf_config.vocab_size, n)
        mask[r, :n] = 1
        types[r, n // 2:n] = 1
    n_types = getattr(hf_config, "type_vocab_size", 0)
    return ids, mask, (types if n_types >= 2 else np.zeros_like(ids) if n_types else None)


def torch_inputs(ids, mask, types) -> dict:
    import torch
    kw = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    if types is not None:
        kw["token_type_ids"] = torch.tensor(types)
    return kw


def pack(ids, mask, types, lengths, position_offset: int, tail: int = 5):
    """The rows' real tokens in one row, one segment each (1, 2, ...), positions restarting at
    each segment (0-based + the config's offset, as the library's batches give them), then `tail`
    padding tokens; returns (ids, segments, types, positions, starts), each [1, ...]."""
    cat = lambda a: np.concatenate([a[r, :n] for r, n in enumerate(lengths)] + [np.zeros(tail, a.dtype)])[None]
    segments = np.concatenate([np.full(n, r + 1) for r, n in enumerate(lengths)] + [np.zeros(tail, int)])[None]
    positions = np.concatenate([np.arange(n) for n in lengths] + [np.zeros(tail, int)])[None] + position_offset
    starts = np.cumsum((0,) + tuple(lengths[:-1]))[None]
    return cat(ids), segments, None if types is None else cat(types), positions, starts
