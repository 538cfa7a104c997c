"""The tokenizer kinds decoder LLMs ship (tests/tiny_tokenizers.py: a Gemma SentencePiece BPE with
byte fallback, a Mistral / Llama 2 one, a Llama 3 tiktoken-style byte-level BPE), loaded by
xenc_jax (hf/pretrained.load_tokenizer) without importing torch, as the class transformers'
AutoTokenizer picks for each folder, with the ids AutoTokenizer and sentence-transformers'
CrossEncoder / SentenceTransformer make on accented, CJK, emoji and control-character texts
(byte fallback engaged), pairs and truncation; and a tiny Gemma cross-encoder with the Gemma
tokenizer scoring those texts as ST does.

Each folder holds a tiny random ...ForSequenceClassification of its model_type (the family's tiny
preset), so ST can load it; its pad token is the tokenizer's.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tiny_tokenizers as tt

REPO = Path(__file__).resolve().parents[1]
END_TOL = 1e-4      # fp32 end to end vs PyTorch, as tests/test_family_llama.py (measured ~1e-6)
MAX_LENGTH = 40     # the long pairs below are longer: truncation ("longest_first") cuts them
CASES = {   # name -> (tokenizer kind, model_type, pad token to set or None, the class AutoTokenizer picks)
    "gemma": ("gemma", "gemma", None, "GemmaTokenizer"),
    "gemma3": ("gemma", "gemma3_text", None, "GemmaTokenizer"),
    "mistral": ("llama2", "mistral", "</s>", "TokenizersBackend"),   # Mistral folders name LlamaTokenizer
    "llama2": ("llama2", "llama", "</s>", "LlamaTokenizer"),
    "llama3": ("llama3", "llama", "<|end_of_text|>", "TokenizersBackend"),
}
TEXTS = tt.TEXTS
PAIRS = [(TEXTS[i], TEXTS[(i + 1) % len(TEXTS)]) for i in range(len(TEXTS))] + [
    (TEXTS[3], " ".join(TEXTS)),             # > MAX_LENGTH tokens: the document is cut
    (" ".join(TEXTS[1:4]) * 2, TEXTS[0]),    # the query is cut
]


def _seqcls(model_type: str, path: Path, pad_id: int, seed: int):
    """A tiny random ...ForSequenceClassification of model_type saved into path (eager attention)."""
    import torch
    import transformers as tf

    from tiny_hf import randomize_, tiny_config
    from xenc_jax.hf import registry
    cls = getattr(tf, registry.family(model_type).architecture + "ForSequenceClassification")
    torch.manual_seed(seed)
    model = cls._from_config(tiny_config(model_type, 1, pad_token_id=pad_id), attn_implementation="eager")
    randomize_(model, seed)
    model.eval().save_pretrained(str(path), safe_serialization=True)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """name -> a folder with the kind's tokenizer files and a tiny seq-cls model of model_type."""
    pytest.importorskip("torch")
    from tokenizers import Tokenizer
    out = {}
    for seed, (name, (kind, model_type, pad, _)) in enumerate(CASES.items()):
        path = tt.build(kind, tmp_path_factory.mktemp(name), pad_token=pad)
        pad_tok = pad or json.loads((path / "tokenizer_config.json").read_text())["pad_token"]
        _seqcls(model_type, path, Tokenizer.from_file(str(path / "tokenizer.json")).token_to_id(pad_tok), seed)
        assert tt.vocab_size(path) <= json.loads((path / "config.json").read_text())["vocab_size"]
        out[name] = path
    return out


def test_generic_table_is_what_autotokenizer_registers():
    """pretrained.GENERIC_TOKENIZERS (the model_types AutoTokenizer registers no class of their own
    for) must follow transformers, and their family records name no class."""
    if __import__("importlib").util.find_spec("mistral_common") is not None:
        pytest.skip("mistral_common installed: transformers registers MistralCommonBackend for mistral")
    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES

    from xenc_jax.hf.pretrained import GENERIC_TOKENIZERS
    from xenc_jax.hf.registry import FAMILIES
    for model_type, registered in GENERIC_TOKENIZERS.items():
        assert TOKENIZER_MAPPING_NAMES.get(model_type) == registered, model_type
        assert FAMILIES[model_type].tokenizer == "", model_type


def test_every_generic_model_type_picks_autotokenizers_class(tmp_path):
    """Each tokenizer kind's files (and Llama 3's byte-level files named LlamaTokenizerFast, as some
    Llama 3 fine-tunes ship them) under each model_type of GENERIC_TOKENIZERS: where load_tokenizer
    decides the class itself, it is AutoTokenizer's; it decides for every class name these folders
    use (PreTrainedTokenizerFast, LlamaTokenizer(Fast)) and leaves any other (GemmaTokenizer on a
    llama model_type) to AutoTokenizer."""
    import transformers as tf

    from xenc_jax.hf.pretrained import GENERIC_TOKENIZERS, _direct_tokenizer_class
    variants = {kind: tt.build(kind, tmp_path / kind) for kind in tt.KINDS}
    renamed = tt.build("llama3", tmp_path / "llama3-named-llama")
    cfg = json.loads((renamed / "tokenizer_config.json").read_text())
    (renamed / "tokenizer_config.json").write_text(json.dumps({**cfg, "tokenizer_class": "LlamaTokenizerFast"}))
    variants["llama3-named-llama"] = renamed
    picked = set()
    for model_type in GENERIC_TOKENIZERS:
        for kind, path in variants.items():
            (path / "config.json").write_text(json.dumps({"model_type": model_type}))
            cls = _direct_tokenizer_class(path)
            assert (cls is None) == (kind == "gemma"), (model_type, kind)
            if cls is not None:
                assert cls is type(tf.AutoTokenizer.from_pretrained(str(path))), (model_type, kind)
                picked.add(cls.__name__)
    assert picked == {"TokenizersBackend", "LlamaTokenizer"}


def _token_ids(enc) -> list[list[int]]:
    """Each row's ids without padding (ST pads; left or right as the tokenizer says)."""
    ids, mask = np.asarray(enc["input_ids"]), np.asarray(enc["attention_mask"]).astype(bool)
    return [row[m].tolist() for row, m in zip(ids, mask)]


@pytest.mark.parametrize("name", list(CASES))
def test_same_class_and_ids_as_autotokenizer(folders, name):
    """load_tokenizer picks AutoTokenizer's class itself (no AutoTokenizer, so no torch import):
    same class, same ids on single texts, pairs, truncated pairs and padded batches; the
    non-ASCII texts go through byte fallback ("<0xNN>" tokens) or Llama 3's byte alphabet, and
    decode back to the text."""
    import transformers as tf

    from xenc_jax.hf.pretrained import _direct_tokenizer_class, load_tokenizer
    kind, _, _, want = CASES[name]
    path = folders[name]
    assert _direct_tokenizer_class(path) is not None
    ours, auto = load_tokenizer(path), tf.AutoTokenizer.from_pretrained(str(path))
    assert type(ours) is type(auto) and type(ours).__name__ == want
    for text in TEXTS:
        assert ours(text)["input_ids"] == auto(text)["input_ids"], text
    first, second = [a for a, _ in PAIRS], [b for _, b in PAIRS]
    for kw in ({}, {"truncation": "longest_first", "max_length": MAX_LENGTH}, {"padding": True}):
        assert ours(first, second, **kw)["input_ids"] == auto(first, second, **kw)["input_ids"], kw
    assert max(map(len, ours(first, second)["input_ids"])) > MAX_LENGTH   # truncation above did cut
    for text in TEXTS[1:4]:   # accents, CJK, emoji: none of their letters is in the ASCII-trained vocab
        tokens = ours.convert_ids_to_tokens(ours(text, add_special_tokens=False)["input_ids"])
        if kind == "llama3":   # byte-level: a character outside the vocab is one token per UTF-8 byte
            assert len([t for t in tokens if len(t) == 1]) >= len(text.encode()) - len(text.encode("ascii", "ignore"))
        else:
            assert any(t.startswith("<0x") and t.endswith(">") for t in tokens), tokens
        assert ours.decode(ours(text)["input_ids"], skip_special_tokens=True) == text
    literal = ours.convert_ids_to_tokens(ours(TEXTS[5])["input_ids"])
    assert "<0x41>" not in literal   # a byte token's spelling in the text stays text


def test_llama2_class_matters(folders):
    """Why the class must be AutoTokenizer's: on a llama model_type LlamaTokenizer rebuilds the
    SentencePiece pre-tokenizer, and leading spaces come out differently than tokenizer.json's
    own pipeline (what the Mistral folder's TokenizersBackend runs)."""
    from transformers import TokenizersBackend

    from xenc_jax.hf.pretrained import load_tokenizer
    text = TEXTS[5]   # starts with two spaces
    llama, mistral = load_tokenizer(folders["llama2"]), load_tokenizer(folders["mistral"])
    assert llama(text)["input_ids"] != mistral(text)["input_ids"]
    assert TokenizersBackend.from_pretrained(str(folders["llama2"]))(text)["input_ids"] == mistral(text)["input_ids"]


@pytest.mark.parametrize("name", ["gemma", "mistral", "llama3"])
def test_ids_match_sentence_transformers(folders, name):
    """xenc_jax's CrossEncoder and BiEncoder make ST's ids: pairs truncated at MAX_LENGTH
    (CrossEncoder.preprocess) and texts cut at max_seq_length 12 (SentenceTransformer.preprocess)."""
    from sentence_transformers import CrossEncoder as STCrossEncoder
    from sentence_transformers import SentenceTransformer

    from xenc_jax import BiEncoder, CrossEncoder
    path = folders[name]
    st = STCrossEncoder(str(path), max_length=MAX_LENGTH, local_files_only=True)
    ours = CrossEncoder(path, max_length=MAX_LENGTH)
    pairs = [e.input_ids.tolist() for e in ours.encode_pairs(PAIRS)]
    assert pairs == _token_ids(st.preprocess(PAIRS)) and max(map(len, pairs)) == MAX_LENGTH
    st_bi = SentenceTransformer(str(path), local_files_only=True)
    st_bi.max_seq_length = 12
    bi = BiEncoder(path, max_seq_length=12)
    texts = [e.input_ids.tolist() for e in bi.encode_texts(TEXTS)]
    assert texts == _token_ids(st_bi.preprocess(TEXTS)) and max(map(len, texts)) == 12


_CHILD = """
import json, sys
from pathlib import Path
from xenc_jax.hf.pretrained import load_tokenizer
from xenc_jax import CrossEncoder
folders, pairs, max_length = json.loads(sys.argv[1])
ids = {name: load_tokenizer(Path(p))(pairs[0][0])["input_ids"] for name, p in folders.items()}
after_tokenizers = 'torch' in sys.modules
scores = CrossEncoder(folders["gemma"], max_length=max_length).predict(pairs, activation_fn="identity")
print(json.dumps({"ids": ids, "torch": [after_tokenizers, 'torch' in sys.modules], "scores": scores.tolist()}))
"""


def test_no_torch_import_and_gemma_scores_match_st(folders):
    """A fresh process loads every kind's tokenizer and scores the Gemma cross-encoder without
    importing torch; its ids are AutoTokenizer's and its scores ST's (raw logits, <= END_TOL)."""
    import torch
    import transformers as tf
    from sentence_transformers import CrossEncoder as STCrossEncoder
    arg = json.dumps([{k: str(v) for k, v in folders.items()}, PAIRS, MAX_LENGTH])
    got = subprocess.run([sys.executable, "-c", _CHILD, arg], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)})
    assert got.returncode == 0, got.stderr[-2000:]
    out = json.loads(got.stdout.strip().splitlines()[-1])
    assert out["torch"] == [False, False]
    for name, ids in out["ids"].items():
        assert ids == tf.AutoTokenizer.from_pretrained(str(folders[name]))(PAIRS[0][0])["input_ids"], name
    st = STCrossEncoder(str(folders["gemma"]), max_length=MAX_LENGTH, local_files_only=True,
                        model_kwargs={"attn_implementation": "eager"})
    want = st.predict(PAIRS, activation_fn=torch.nn.Identity())
    assert np.ptp(want) > 0.05, want    # scores that differ per pair: a wrong id would show
    assert np.abs(np.asarray(out["scores"]) - want).max() <= END_TOL
