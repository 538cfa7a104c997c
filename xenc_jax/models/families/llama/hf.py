"""HF records of Llama and Mistral (LlamaModel / MistralModel, ...ForCausalLM,
...ForSequenceClassification; model.py). The keys, rotary settings, head kind and weight table
every Llama-shaped decoder shares are hf/decoder.py's; here only what the two differ in.

Llama: attention_bias (biases on q/k/v/o), mlp_bias (on gate/up/down), an explicit head_dim,
every rope type hf/decoder.rope implements: "default", "llama3" (Llama 3.1's frequency
rescaling), "linear" (every inverse frequency divided by `factor`: position interpolation, as in
LongChat / Vicuna-16k-style fine-tunes), "yarn", "proportional"; "dynamic" / "longrope" are
rejected with why. Both families take the same rope types: HF's LlamaRotaryEmbedding and
MistralRotaryEmbedding build their frequencies with the same modeling_rope_utils functions
(transformers 5.25).
Mistral: the same attention without bias switches (MistralAttention has no
biases and never reads attention_bias / mlp_bias), plus `sliding_window` (None: full causal
attention). Mistral's AutoModel ignores a `layer_types` key (HF points to Ministral for that), so
it is an error here rather than a guess.
"""
from __future__ import annotations

from . import presets
from .model import LlamaConfig
from ....hf.decoder import COMMON_KEYS, decoder_table, head_dim, read_common
from ....hf.family import ConfigError, Family

def _read_llama(d: dict, family: str) -> tuple[dict, set]:
    v = read_common(d, family)
    bias = bool(d.get("attention_bias", False))
    v.update(attn_head_dim=head_dim(d, v), qkv_bias=bias, out_bias=bias, mlp_bias=bool(d.get("mlp_bias", False)))
    return v, set(COMMON_KEYS) | {"mlp_bias"}


def _read_mistral(d: dict, family: str) -> tuple[dict, set]:
    v = read_common(d, family)
    window = d.get("sliding_window")
    if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window < 1):
        raise ConfigError(f"{family} config has sliding_window={window!r}: expected a positive number of tokens "
                          "or null (full causal attention)")
    v.update(attn_head_dim=head_dim(d, v), sliding_window=window or 0)
    return v, set(COMMON_KEYS) | {"sliding_window"}


# Keys of LlamaConfig / MistralConfig that never change a forward pass (checked in HF's modeling code)
_HARMLESS = frozenset({
    "pretraining_tp",   # 4.x split Llama's matmuls into slices when > 1 (same sums); 5.x ignores it
})

LLAMA = Family(LlamaConfig, _read_llama, decoder_table(), "Llama", harmless=_HARMLESS, tokenizer="",
               head_kinds=("score", "lm"), tiny=presets.TINY, base=presets.BASE)
MISTRAL = Family(LlamaConfig, _read_mistral, decoder_table(), "Mistral", harmless=_HARMLESS, tokenizer="",
                 head_kinds=("score", "lm"), tiny=presets.MISTRAL_TINY, base=presets.MISTRAL_BASE)
