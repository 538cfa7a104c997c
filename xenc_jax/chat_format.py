"""(query, document) pairs -> token ids through a decoder tokenizer's chat template, exactly as
sentence-transformers 6.2's Transformer module does for LLM rerankers (base/modality.py,
base/modules/transformer.py):

- a pair is the conversation [{"role": "query", ...}, {"role": "document", ...}]; a prompt
  (instruction) is a leading {"role": "system", ...} message;
- the template is rendered without add_generation_prompt (the reranker templates emit the
  assistant prefix the score is read from themselves) and tokenized without special tokens;
- a conversation of max_length tokens or more is cut to its first max_length - k tokens and
  the template's k-token suffix is put back, so the scored position is always the assistant
  prefix. The suffix is the longest common token suffix of the conversation rendered with two
  different contents ("0" and "1 2 3 4"; system messages kept), as ST derives it.

A template that does not carry both roles (their content does not reach the rendered text) is
an error, as in ST, rather than a silently constant score.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .batching import TOKENIZER_LOCK, Encoding, split_pairs
from .hf.model_folder import read_json

PAIR_ROLES = ("query", "document")
_PROBES = (("alpha", "bravo"), ("charlie", "bravo"), ("alpha", "foxtrot"))
# ST's test for a "structured" template (content as a list of typed parts) vs "flat" (a string)
_STRUCTURED_MARKS = ("content[0]", ".type", "'type'", '"type"', "item.type", "message.content[")


class ChatPairFormatter:
    def __init__(self, tokenizer, max_length: int, name: str = "this model"):
        template = tokenizer.chat_template
        if not template:
            raise ValueError(f"the tokenizer of {name} has no chat template")
        if isinstance(template, dict):   # several named templates: the default one, as transformers
            template = template.get("default") or next(iter(template.values()))
        self.tokenizer, self.max_length, self.name = tokenizer, int(max_length), name
        self.structured = any(m in template for m in _STRUCTURED_MARKS)
        self._suffixes: dict[str | None, list[int]] = {}
        self._check_roles()

    def _content(self, text: str):
        return [{"type": "text", "text": text}] if self.structured else text

    def messages(self, query: str, document: str, prompt: str | None = None) -> list[dict]:
        msgs = [{"role": role, "content": self._content(t)} for role, t in zip(PAIR_ROLES, (query, document))]
        return ([{"role": "system", "content": self._content(prompt)}] if prompt else []) + msgs

    def _render(self, conversations: list[list[dict]]) -> list[str]:
        with TOKENIZER_LOCK:
            return [self.tokenizer.apply_chat_template(m, tokenize=False) for m in conversations]

    def _check_roles(self) -> None:
        try:
            a, b, c = self._render([self.messages(q, d) for q, d in _PROBES])
        except Exception as e:
            a = b = c = None
            err = f" (rendering a query/document conversation raised {type(e).__name__}: {e})"
        else:
            err = ""
        if a is None or a == b or a == c:
            raise ValueError(
                f"the chat template of {self.name} cannot carry a 'query'/'document' pair{err or ' (the query and document content does not reach the rendered prompt)'}: "
                "a pair becomes one message per role, so give the tokenizer a chat template that renders "
                "both roles (as the sentence-transformers ports of Qwen3-Reranker do)")

    def suffix_ids(self, prompt: str | None) -> list[int]:
        if prompt not in self._suffixes:
            texts = self._render([self.messages("0", "0", prompt), self.messages("1 2 3 4", "1 2 3 4", prompt)])
            with TOKENIZER_LOCK:
                x, y = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
            k = 0
            while k < min(len(x), len(y)) and x[-1 - k] == y[-1 - k]:
                k += 1
            if k >= self.max_length:
                raise ValueError(f"max_length={self.max_length} is too short for the chat template of {self.name}: "
                                 f"its suffix alone is {k} tokens")
            self._suffixes[prompt] = list(x[len(x) - k:])
        return self._suffixes[prompt]

    def encode(self, pairs, prompt: str | None = None, offset: int = 0) -> list[Encoding]:
        queries, documents = split_pairs(pairs, offset)
        if not queries:
            return []
        texts = self._render([self.messages(q, d, prompt) for q, d in zip(queries, documents)])
        suffix = self.suffix_ids(prompt)
        with TOKENIZER_LOCK:
            ids = self.tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]
        keep = self.max_length - len(suffix)
        out = []
        for row in ids:
            if len(row) >= self.max_length:
                row = row[:keep] + suffix
            arr = np.asarray(row, np.int32)
            out.append(Encoding(arr, np.zeros_like(arr)))
        return out


def uses_chat_template(model_dir, tokenizer) -> bool:
    """Whether ST 6.2 formats pairs for this folder with the tokenizer's chat template: the
    tokenizer has one and the folder's saved Transformer config (if any) lists the "message"
    modality (an ST folder saved without modality_config is text-only)."""
    if not getattr(tokenizer, "chat_template", None):
        return False
    path = Path(model_dir) / "sentence_bert_config.json"
    if not path.is_file():
        return True
    modality = read_json(path, "Transformer config").get("modality_config")
    return modality is not None and "message" in modality


def pair_encoder(model_dir, tokenizer, cfg, max_length: int):
    """pairs, prompt=None, offset=0 -> Encodings, as ST 6.2 tokenizes pairs for this model: the
    chat template for a decoder whose folder uses it (ChatPairFormatter), else a text pair with
    the prompt before the query (batching.tokenize_pairs). One function for scoring, training
    and evaluation, so a model is trained on the ids it is scored with."""
    from .batching import tokenize_pairs
    if cfg.reads_last_token and uses_chat_template(model_dir, tokenizer):
        return ChatPairFormatter(tokenizer, max_length, str(model_dir)).encode

    def encode(pairs, prompt: str | None = None, offset: int = 0):
        if prompt:
            pairs = [(prompt + p[0], *p[1:]) if isinstance(p, (tuple, list)) and p and isinstance(p[0], str) else p
                     for p in pairs]
        return tokenize_pairs(tokenizer, pairs, max_length, offset=offset)
    return encode
