"""HF records of Qwen2 and Qwen3 (Qwen{2,3}Model, ...ForCausalLM, ...ForSequenceClassification;
model.py).

What the head is comes from `architectures`: *ForCausalLM is a causal-LM scorer (the LM head's
columns of the scoring tokens, which hf/causal_score.py resolves), anything else gets
ForSequenceClassification's `score` Linear (fresh when the checkpoint has none, as HF).

Rotary positions: only HF's "default" rope type (plain RoPE with rope_theta) is implemented; every
scaled type (linear, dynamic, yarn, llama3, ...) is rejected by name, as is sliding-window attention.
Both config spellings are read: transformers 5's `rope_parameters` and 4.x's `rope_theta` /
`rope_scaling`.
"""
from __future__ import annotations

from . import presets
from .model import QwenConfig
from ....hf.decoder import COMMON_KEYS, decoder_table, head_dim, read_common
from ....hf.family import ConfigError, Family

_OTHER = ("use_sliding_window", "sliding_window", "layer_types")


def _reader(qwen3: bool):
    def read(d: dict, family: str) -> tuple[dict, set]:
        v = read_common(d, family)
        if d.get("use_sliding_window"):
            raise ConfigError(f"{family} config has use_sliding_window=True: sliding-window attention is not "
                              "supported (the released Qwen2/Qwen3 rerankers and embedders do not use it)")
        kinds = set(d.get("layer_types") or ["full_attention"])
        if kinds != {"full_attention"}:
            raise ConfigError(f"{family} config has layer_types {sorted(kinds)}: only 'full_attention' is supported")
        bias = bool(d.get("attention_bias", False)) if qwen3 else True
        # Qwen2 always has q/k/v biases and head_dim = hidden / heads (a head_dim key is not read by Qwen2)
        v.update(attn_head_dim=head_dim(d, v) if qwen3 else int(v["hidden_size"]) // int(v["num_heads"]),
                 qk_norm=qwen3, qkv_bias=bias, out_bias=bias and qwen3)
        return v, set(COMMON_KEYS) | set(_OTHER)
    return read


# Keys of Qwen{2,3}Config that never change a forward pass here (checked in HF's modeling code)
_HARMLESS = frozenset({
    "max_window_layers",     # only read to build layer_types when use_sliding_window is on
    "use_mrope",             # 4.x Qwen2 leftover, unused by Qwen2Model
})
QWEN3 = Family(QwenConfig, _reader(True), decoder_table(),
               "Qwen3", harmless=_HARMLESS, tokenizer="Qwen2Tokenizer", head_kinds=("score", "lm"),
               tiny=presets.TINY, base=presets.BASE)
QWEN2 = Family(QwenConfig, _reader(False), decoder_table(),
               "Qwen2", harmless=_HARMLESS, tokenizer="Qwen2Tokenizer", head_kinds=("score", "lm"),
               tiny=presets.QWEN2_TINY)
