"""Texts and (query, document) pairs -> token ids, as sentence-transformers 6.3's Transformer
module makes them (base/modules/transformer.py, base/modality.py). ST 6.3 is the version whose
semantics we follow where versions differ (docs/model_families.md).

Which modality the Transformer takes (messages through the chat template, or text) and in which
message format is hf/st_transformer.py's `input_format`.

With messages (`ChatFormatter`), a text is [{"role": "user", ...}], a pair
[{"role": "query", ...}, {"role": "document", ...}], a prompt a leading {"role": "system", ...};
the template is rendered without add_generation_prompt and tokenized without special tokens,
truncated to max_length; a truncated row gets the template's token suffix written back over its
last tokens (the suffix: the longest common token suffix of the conversation rendered with the
contents "0" and "1 2 3 4", system messages kept; none when the renders never differ). A pair
template that does not carry both roles is an error, as in ST, not a constant score.
Without messages: the prompt is prepended to the text (to the query of a pair), text tokenization.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .batching import TOKENIZER_LOCK, Encoding, check_texts, split_pairs, tokenize_pairs, tokenize_texts
from .hf.st_transformer import InputFormat, input_format, transformer_folder_config

PAIR_ROLES = ("query", "document")
_PROBES = (("alpha", "bravo"), ("charlie", "bravo"), ("alpha", "foxtrot"))   # ST's PAIR_ROLE_PROBES


def folder_input_format(model_dir: Path, tokenizer, cfg) -> InputFormat:
    """input_format of a model folder (its Transformer module's config, or inferred)."""
    tcfg, saved = transformer_folder_config(model_dir)
    return input_format(tcfg, tokenizer, cfg.raw_dict.get("model_type", cfg.family), saved=saved,
                        where=str(model_dir))


# ----------------------------------------------------------------------------- messages -> ids

class ChatFormatter:
    """Texts and pairs as ST 6.3's message modality tokenizes them (module docstring)."""

    def __init__(self, tokenizer, max_length: int, message_format: str, name: str = "this model"):
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"the tokenizer of {name} has no chat template")
        self.tokenizer, self.max_length, self.name = tokenizer, int(max_length), name
        self.structured = message_format == "structured"
        self._suffixes: dict[tuple, list[int]] = {}
        self._roles_checked = False

    def _content(self, text: str):
        return [{"type": "text", "text": text}] if self.structured else text

    def _with_prompt(self, msgs: list[dict], prompt: str | None) -> list[dict]:
        return ([{"role": "system", "content": self._content(prompt)}] if prompt else []) + msgs

    def pair_messages(self, query: str, document: str, prompt: str | None = None) -> list[dict]:
        return self._with_prompt([{"role": r, "content": self._content(t)} for r, t in zip(PAIR_ROLES, (query, document))],
                                 prompt)

    def text_messages(self, text: str, prompt: str | None = None) -> list[dict]:
        return self._with_prompt([{"role": "user", "content": self._content(text)}], prompt)

    def _render(self, conversations: list[list[dict]]) -> list[str]:
        with TOKENIZER_LOCK:
            return [self.tokenizer.apply_chat_template(m, tokenize=False) for m in conversations]

    def _ids(self, texts: list[str], truncate: bool) -> list[list[int]]:
        kw = dict(truncation=True, max_length=self.max_length) if truncate else {}
        with TOKENIZER_LOCK:
            return self.tokenizer(texts, add_special_tokens=False, return_attention_mask=False, **kw)["input_ids"]

    def check_pair_roles(self) -> None:
        """ST's _verify_pair_roles_supported: both roles' content must reach the rendered prompt."""
        if self._roles_checked:
            return
        try:
            a, b, c = self._render([self.pair_messages(q, d) for q, d in _PROBES])
        except Exception as e:  # noqa: BLE001 - reported with the template's own error
            a = b = c = None
            err = f" (rendering a query/document conversation raised {type(e).__name__}: {e})"
        else:
            err = ""
        if a is None or a == b or a == c:
            raise ValueError(
                f"the chat template of {self.name} cannot carry a 'query'/'document' pair{err or ' (the query and document content does not reach the rendered prompt)'}: "
                "a pair becomes one message per role, so give the tokenizer a chat template that renders "
                "both roles (as the sentence-transformers ports of Qwen3-Reranker do)")
        self._roles_checked = True

    def suffix_ids(self, kind: str, prompt: str | None) -> list[int]:
        """The template's token suffix for conversations of this shape (ST's
        _chat_template_suffix_ids: renders with "0" and "1 2 3 4"; none when they never differ)."""
        key = (kind, prompt)
        if key not in self._suffixes:
            make = self.pair_messages if kind == "pair" else (lambda a, _b, p: self.text_messages(a, p))
            x, y = self._ids(self._render([make("0", "0", prompt), make("1 2 3 4", "1 2 3 4", prompt)]), False)
            k = 0
            while k < min(len(x), len(y)) and x[-1 - k] == y[-1 - k]:
                k += 1
            self._suffixes[key] = list(x[len(x) - k:]) if 0 < k < min(len(x), len(y)) else []
        return self._suffixes[key]

    def _encode(self, conversations: list[list[dict]], kind: str, prompt: str | None) -> list[Encoding]:
        ids = self._ids(self._render(conversations), True)
        suffix = self.suffix_ids(kind, prompt)
        out = []
        for row in ids:
            if len(row) >= self.max_length and suffix:   # cut by truncation: the suffix goes back over its tail
                keep = min(len(suffix), len(row))
                row = row[:len(row) - keep] + suffix[len(suffix) - keep:]
            arr = np.asarray(row, np.int32)
            out.append(Encoding(arr, np.zeros_like(arr)))
        return out

    def encode_pairs(self, pairs, prompt: str | None = None, offset: int = 0) -> list[Encoding]:
        queries, documents = split_pairs(pairs, offset)
        if not queries:
            return []
        self.check_pair_roles()
        return self._encode([self.pair_messages(q, d, prompt) for q, d in zip(queries, documents)], "pair", prompt)

    def encode_texts(self, texts, prompt: str | None = None, offset: int = 0) -> list[Encoding]:
        clean = check_texts(texts, offset)
        return self._encode([self.text_messages(t, prompt) for t in clean], "text", prompt) if clean else []


# ----------------------------------------------------------------------------- the encoders models use

def pair_encoder(model_dir, tokenizer, cfg, max_length: int, fmt: InputFormat | None = None):
    """pairs, prompt=None, offset=0 -> Encodings, as ST 6.3 tokenizes pairs for this model: the
    chat template when its Transformer takes messages (ChatFormatter), else a text pair with the
    prompt before the query. `fmt`: the input format when the caller knows it (default: read from
    model_dir). One function for scoring, training and evaluation, so a model is trained on the
    ids it is scored with."""
    fmt = folder_input_format(model_dir, tokenizer, cfg) if fmt is None else fmt
    if fmt.message:
        formatter = ChatFormatter(tokenizer, max_length, fmt.message_format, str(model_dir))
        formatter.check_pair_roles()   # at load, not at the first batch
        return formatter.encode_pairs

    def encode(pairs, prompt: str | None = None, offset: int = 0):
        if prompt:
            pairs = [(prompt + p[0], *p[1:]) if isinstance(p, (tuple, list)) and p and isinstance(p[0], str) else p
                     for p in pairs]
        return tokenize_pairs(tokenizer, pairs, max_length, offset=offset)
    return encode


def text_encoder(tokenizer, max_length: int, fmt: InputFormat, do_lower_case: bool = False, name: str = "this model"):
    """texts, prompt=None, offset=0 -> Encodings, as ST 6.3's Transformer tokenizes single texts:
    one user message each through the chat template (prompt: a system message) when it takes
    messages, else the prompt prepended to the text."""
    if fmt.message:
        if do_lower_case:
            raise ValueError(f"{name}: do_lower_case with chat-template (message) inputs is not supported")
        return ChatFormatter(tokenizer, max_length, fmt.message_format, name).encode_texts

    def encode(texts, prompt: str | None = None, offset: int = 0):
        if prompt:
            texts = [prompt + t if isinstance(t, str) else t for t in texts]   # non-str: check_texts explains
        return tokenize_texts(tokenizer, texts, max_length, do_lower_case, offset=offset)
    return encode
