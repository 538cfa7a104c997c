"""Tiny tokenizers of the kinds decoder LLMs ship, trained locally and deterministically with the
`tokenizers` library on a fixed ASCII corpus, and saved in the layout of the real folders (which
files, which tokenizer_config.json keys and classes: read from google/gemma-2b / gemma-2-2b,
mistralai/Mistral-7B-v0.1 and meta-llama/Meta-Llama-3-8B-Instruct, whose vocabularies we do not
have here). No torch, no transformers: tokenizer.json is written by `tokenizers`, the JSON
configs by hand, as the hub folders hold them (transformers 4's save_pretrained output).

Kinds (build(kind, path)):
  "gemma":  SentencePiece-converted BPE with byte fallback: "<0xNN>" byte tokens in the model's
            vocab, spaces normalized to "▁" (no prefix), <pad>=0 <eos>=1 <bos>=2 <unk>=3 <mask>=4,
            "<bos> $A" / "<bos> $A <bos> $B"; tokenizer_class GemmaTokenizer.
  "llama2": Mistral-7B / Llama 2 style: byte fallback, "▁" prepended and spaces replaced (the
            legacy SentencePiece conversion), <unk>=0 <s>=1 </s>=2, no pad token;
            tokenizer_class LlamaTokenizer (as Mistral folders name it too).
  "llama3": tiktoken-style byte-level BPE: Llama 3's split regex then ByteLevel (no prefix
            space), merges ignored for whole words in the vocab (ignore_merges), special tokens
            <|begin_of_text|> <|end_of_text|> <|start_header_id|> <|end_header_id|> <|eot_id|>
            after the learned vocab; tokenizer_class PreTrainedTokenizerFast, eos <|eot_id|>.

Every kind's vocab stays below the tiny decoder presets' 544 embedding rows. The corpus is ASCII
only, so accented, CJK and emoji text reaches byte fallback (gemma, llama2) or the raw-byte
alphabet (llama3): TEXTS holds such texts.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path

KINDS = ("gemma", "llama2", "llama3")
VOCAB_SIZE = 480          # BPE target per kind (the byte tokens included), below the presets' 544
HUGE = 1000000000000000019884624838656   # the real folders' model_max_length ("no limit")

# Llama 3's pre-tokenizer split (tiktoken's cl100k-like pattern, numbers in groups of <= 3 digits)
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# Texts the tests tokenize: plain English (fully in the vocab), accents, CJK, emoji (a ZWJ
# sequence and a flag), a control character, digits, doubled spaces and a literal "<0x41>"
# (a byte token's spelling must stay text, not become the byte).
TEXTS = [
    "the cat sees the red ball today.",
    "Café déjà vu — naïve façade",
    "東京の天気は晴れです。北京欢迎你",
    "family 👨‍👩‍👧 and flag 🇩🇪 🙂",
    "tab\there, bell\x07 and 12345 numbers",
    "  two  spaces   and <0x41> literal",
]

_SUBJECTS = ["the cat", "a dog", "the river", "my friend", "the city", "a small bird", "the teacher",
             "our team", "the train", "a young girl"]
_VERBS = ["sees", "likes", "finds", "needs", "wants", "makes", "keeps", "helps", "reads"]
_OBJECTS = ["the red ball", "a long book", "some fresh water", "the green hill", "a warm coat",
            "the blue sky", "an open door", "the quiet street"]
_TAILS = ["today.", "at night.", "in the morning.", "near the sea.", "after school."]


def corpus() -> list[str]:
    """A fixed ASCII corpus (no randomness): a few hundred short lines, questions and numbers."""
    lines = []
    for i, (s, v, o) in enumerate(itertools.product(_SUBJECTS, _VERBS, _OBJECTS)):
        if i % 3 == 0:
            lines.append(f"{s} {v} {o} {_TAILS[i % len(_TAILS)]}")
    for i, s in enumerate(_SUBJECTS):
        lines += [f"is {s} here?", f"yes, {s} is here.", f"no, {s} is not. {i * 37} or {i + 3}"]
    return lines


def _train(pre_tokenizer, normalizer=None, alphabet=(), specials=()) -> tuple[dict, list]:
    """(vocab, merges) of a BPE trained on corpus() with this pre-tokenization."""
    from tokenizers import Tokenizer, models, trainers
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=list(specials),
                                  initial_alphabet=list(alphabet), show_progress=False)
    tok.train_from_iterator(corpus(), trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    return model["vocab"], model["merges"]


def _spm_bpe(specials: list[str], unk: str):
    """A SentencePiece-converted BPE: specials, then the 256 "<0xNN>" byte tokens (byte fallback
    encodes any character the vocab lacks as these), then pieces learned on "▁"-joined words."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    learned, merges = _train(pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always"))
    vocab = {t: i for i, t in enumerate(specials + [f"<0x{b:02X}>" for b in range(256)])}
    for piece in sorted(learned, key=learned.get):
        vocab.setdefault(piece, len(vocab))
    bpe = models.BPE(vocab=vocab, merges=[tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in merges],
                     unk_token=unk, fuse_unk=True, byte_fallback=True)
    return Tokenizer(bpe)


def _added(tokens: dict[int, str]) -> dict:
    """tokenizer_config.json's added_tokens_decoder for these special tokens."""
    return {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                     "special": True} for i, t in tokens.items()}


def _gemma(path: Path) -> None:
    from tokenizers import AddedToken, decoders, normalizers, pre_tokenizers, processors
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"]
    tok = _spm_bpe(specials, "<unk>")
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.post_processor = processors.TemplateProcessing(single="<bos>:0 $A:0", pair="<bos>:0 $A:0 <bos>:1 $B:1",
                                                       special_tokens=[("<bos>", 2)])
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in specials])
    tok.save(str(path / "tokenizer.json"))
    names = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"}
    cfg = {"add_bos_token": True, "add_eos_token": False, "added_tokens_decoder": _added(dict(enumerate(specials))),
           "additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"], **names,
           "clean_up_tokenization_spaces": False, "legacy": None, "model_max_length": HUGE, "sp_model_kwargs": {},
           "spaces_between_special_tokens": False, "tokenizer_class": "GemmaTokenizer",
           "use_default_system_prompt": False}
    _write_configs(path, cfg, {**names, "additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]})


def _llama2(path: Path) -> None:
    from tokenizers import AddedToken, decoders, normalizers, processors
    specials = ["<unk>", "<s>", "</s>"]
    tok = _spm_bpe(specials, "<unk>")
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1",
                                                       special_tokens=[("<s>", 1)])
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in specials])
    tok.save(str(path / "tokenizer.json"))
    names = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    cfg = {"add_bos_token": True, "add_eos_token": False, "added_tokens_decoder": _added(dict(enumerate(specials))),
           "additional_special_tokens": [], **names, "clean_up_tokenization_spaces": False, "legacy": True,
           "model_max_length": HUGE, "pad_token": None, "sp_model_kwargs": {}, "spaces_between_special_tokens": False,
           "tokenizer_class": "LlamaTokenizer", "use_default_system_prompt": False}
    _write_configs(path, cfg, names)


LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                   "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def _llama3(path: Path) -> None:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    split = pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False)
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)
    vocab, merges = _train(pre_tokenizers.Sequence([split, byte_level]), alphabet=pre_tokenizers.ByteLevel.alphabet())
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in merges]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([split, byte_level])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in LLAMA3_SPECIALS])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|>:0 $A:0",
                                      pair="<|begin_of_text|>:0 $A:0 <|begin_of_text|>:1 $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    tok.save(str(path / "tokenizer.json"))
    ids = {tok.token_to_id(t): t for t in LLAMA3_SPECIALS}
    names = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
    cfg = {"added_tokens_decoder": _added(ids), **names, "clean_up_tokenization_spaces": True,
           "model_input_names": ["input_ids", "attention_mask"], "model_max_length": HUGE,
           "tokenizer_class": "PreTrainedTokenizerFast"}
    _write_configs(path, cfg, names)


def _write_json(file: Path, obj: dict) -> None:
    file.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_configs(path: Path, cfg: dict, special_map: dict) -> None:
    _write_json(path / "tokenizer_config.json", cfg)
    _write_json(path / "special_tokens_map.json", special_map)


BUILDERS = {"gemma": _gemma, "llama2": _llama2, "llama3": _llama3}


def build(kind: str, path: Path, *, pad_token: str | None = None) -> Path:
    """Write `kind`'s tokenizer files (tokenizer.json, tokenizer_config.json,
    special_tokens_map.json) into path; returns path. pad_token: set one where the kind's base
    folder has none (llama2, llama3), as fine-tuned rerankers and embedders on them do (an
    existing token, e.g. "</s>" or "<|end_of_text|>"): padded batches need one."""
    if kind not in BUILDERS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    BUILDERS[kind](path)
    if pad_token is not None:
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            cfg = json.loads((path / name).read_text())
            _write_json(path / name, {**cfg, "pad_token": pad_token})
    return path


def vocab_size(path: Path) -> int:
    """Size of the saved tokenizer's vocab, added tokens included (the model's rows must cover it)."""
    from tokenizers import Tokenizer
    return Tokenizer.from_file(str(Path(path) / "tokenizer.json")).get_vocab_size(with_added_tokens=True)


if __name__ == "__main__":
    import sys
    import tempfile
    from tokenizers import Tokenizer
    with tempfile.TemporaryDirectory() as tmp:
        for kind in KINDS:
            d = build(kind, Path(tmp) / kind)
            tok = Tokenizer.from_file(str(d / "tokenizer.json"))
            print(kind, vocab_size(d), sorted(p.name for p in d.iterdir()), file=sys.stderr)
            for text in TEXTS[:4]:
                print("  ", tok.encode(text).tokens[:24])
