"""The tokenizer's output is checked before it is scored (task s16/H):

1. A BERT cross-encoder folder whose tokenizer_config.json names a tokenizer_class transformers does
   not have ("NoSuchTokenizer") or the generic PreTrainedTokenizerFast gets TokenizersBackend from
   AutoTokenizer, which returns no token_type_ids: every pair was scored with all-zero types and
   other scores (0.632 -> 0.498 on MiniLM), exit 0; sentence-transformers 6.3 does the same
   silently. Loading now refuses it, naming tokenizer_class and the class to set; folders whose
   model has no or one token type keep loading (test_tokenizer_kinds.py and the family tests cover
   Llama 3's PreTrainedTokenizerFast, RoBERTa, MPNet, DeBERTa-v2, ModernBERT folders).
2. A text with a lone surrogate ("caf\\udce9", a badly decoded file) failed in the tokenizer with
   "TextInputSequence must be str"; it is refused by name with the fix.

Tiny random BERTs with MiniLM's real WordPiece tokenizer (tests/tiny_hf.py).
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from xenc_jax import CrossEncoder
from xenc_jax.batching import split_pairs, tokenize_texts
from xenc_jax.hf.configs import load_config
from xenc_jax.hf.model_folder import ModelFolderError
from xenc_jax.hf.pretrained import check_pair_token_types, load_tokenizer


@pytest.fixture(scope="module")
def bert_ce(tmp_path_factory, minilm_dir) -> Path:
    from tiny_hf import make_tiny_minilm
    path = tmp_path_factory.mktemp("tokchecks") / "bert"
    make_tiny_minilm("bert", path, minilm_dir, seed=5, max_position_embeddings=64)
    return path


def _with_class(src: Path, dst: Path, name: str) -> Path:
    shutil.copytree(src, dst)
    cfg_path = dst / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = name
    cfg_path.write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize("name", ["NoSuchTokenizer", "PreTrainedTokenizerFast"])
def test_generic_tokenizer_without_token_types_is_refused(bert_ce, tmp_path, name):
    folder = _with_class(bert_ce, tmp_path / name, name)
    # the premise: transformers' fallback really drops the types of a pair
    assert load_tokenizer(folder)("a", "b").get("token_type_ids") is None
    with pytest.raises(ModelFolderError) as err:
        CrossEncoder(folder)
    msg = str(err.value)
    assert "type_vocab_size=2" in msg and "no token_type_ids" in msg
    assert f"tokenizer_class {name!r}" in msg and "'BertTokenizer'" in msg
    assert ("which transformers does not have" in msg) == (name == "NoSuchTokenizer")


def test_the_original_folder_loads_with_its_types(bert_ce):
    types = load_tokenizer(bert_ce)("a", "b")["token_type_ids"]
    assert 1 in types   # the pair's second text has type 1: what the refused folders would lose
    check_pair_token_types(load_tokenizer(bert_ce), load_config(bert_ce), bert_ce)


def test_token_types_against_the_models_table(bert_ce, tmp_path):
    """One token type (RoBERTa, XLM-R): a tokenizer without types is right, one giving type 1 has no
    embedding row for it (JAX's gather would clamp it silently; PyTorch raises)."""
    one = dataclasses.replace(load_config(bert_ce), type_vocab_size=1)
    generic = _with_class(bert_ce, tmp_path / "generic", "PreTrainedTokenizerFast")
    check_pair_token_types(load_tokenizer(generic), one, generic)
    with pytest.raises(ModelFolderError, match=r"gives a pair's tokens type 1 but the model has only 1"):
        check_pair_token_types(load_tokenizer(bert_ce), one, bert_ce)
    none = dataclasses.replace(one, type_vocab_size=0)   # DistilBERT, MPNet, decoders: types unused
    check_pair_token_types(load_tokenizer(bert_ce), none, bert_ce)


def test_lone_surrogate_is_refused_by_name(bert_ce):
    bad = "caf\udce9"   # b"caf\xe9" decoded as UTF-8 with errors="surrogateescape"
    fix = r"cannot be encoded as UTF-8: it holds the lone surrogate '\\udce9' at character 3 .*errors='replace'"
    model = CrossEncoder(bert_ce)
    with pytest.raises(ValueError, match=r"query " + fix):
        model.rank(bad, ["a document", "another"])
    with pytest.raises(ValueError, match=r"pairs\[3\]\[1\] "):
        split_pairs([("a", "b")] * 3 + [(np.str_("q"), bad)])   # np.str_: the slow path
    with pytest.raises(ValueError, match=r"texts\[1\] " + fix):
        tokenize_texts(model.tokenizer, ["fine", bad], 16)
    # valid non-ASCII text still passes (only surrogates fail to encode)
    assert split_pairs([("café", "東京 🙂")]) == (["café"], ["東京 🙂"])
