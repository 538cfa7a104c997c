"""HF records of Qwen2 and Qwen3 (Qwen{2,3}Model, ...ForCausalLM, ...ForSequenceClassification;
model.py).

What the head is comes from `architectures`: *ForCausalLM is a causal-LM scorer (the LM head's
columns of the scoring tokens, which hf/causal_score.py resolves), anything else gets
ForSequenceClassification's `score` Linear (fresh when the checkpoint has none, as HF).

Rotary positions: every rope type hf/decoder.rope implements ("default", "linear", "llama3",
"yarn" as Qwen's long-context configs write it: {"rope_type": "yarn", "factor": 4.0,
"original_max_position_embeddings": 32768}, "proportional"); "dynamic" / "longrope" are rejected
with why. Both config spellings are read: transformers 5's `rope_parameters` and 4.x's
`rope_theta` / `rope_scaling`; with both, a non-empty `rope_scaling` replaces `rope_parameters`,
as transformers 5.25 (hf/decoder.rope: nothing here reads a rope key past it;
tests/test_rope_configs.py).

Sliding windows, read as Qwen{2,3}Config.__post_init__ and the modeling code do (transformers 5):
the window is `sliding_window` only when `use_sliding_window` is true (else None, whatever
sliding_window says: the released checkpoints write a window with use_sliding_window false, and
no layer slides); `layer_types` when written, else layers i >= max_window_layers slide when there
is a window. Every attention kernel (eager and sdpa too) then masks keys `sliding_window` or more
tokens back on the sliding layers. A sliding layer without a window is an error in HF's mask
(create_sliding_window_causal_mask), so it is one here, by name.
"""
from __future__ import annotations

from . import presets
from .model import QwenConfig
from ...blocks import GLOBAL, LOCAL
from ....hf.decoder import COMMON_KEYS, decoder_table, head_dim, read_common
from ....hf.family import ConfigError, Family

_OTHER = ("use_sliding_window", "sliding_window", "max_window_layers", "layer_types")
_KINDS = {"full_attention": GLOBAL, "sliding_attention": LOCAL}


def _windows(d: dict, n: int, family: str) -> tuple[int, tuple[str, ...]]:
    """(sliding_window or 0, each layer's kind) as HF derives them (module docstring)."""
    window = d.get("sliding_window") if d.get("use_sliding_window") else None
    if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window < 1):
        raise ConfigError(f"{family} config has use_sliding_window=true with sliding_window={window!r}: "
                          "expected a positive number of tokens")
    kinds = d.get("layer_types")
    if kinds is None:
        first = int(d.get("max_window_layers", 28))   # Qwen{2,3}Config's default
        kinds = ["sliding_attention" if window is not None and i >= first else "full_attention" for i in range(n)]
    if not isinstance(kinds, list) or len(kinds) != n or set(kinds) - set(_KINDS):
        raise ConfigError(f"{family} config has layer_types={kinds!r}: expected {n} entries of "
                          "'full_attention' / 'sliding_attention'")
    if "sliding_attention" in kinds and window is None:
        raise ConfigError(f"{family} config has 'sliding_attention' layers in layer_types but no window "
                          f"(use_sliding_window={d.get('use_sliding_window')!r}, sliding_window="
                          f"{d.get('sliding_window')!r}): HF cannot build their mask; set use_sliding_window "
                          "and sliding_window, or make every layer 'full_attention'")
    return window or 0, tuple(_KINDS[k] for k in kinds)


def _reader(qwen3: bool):
    def read(d: dict, family: str) -> tuple[dict, set]:
        v = read_common(d, family)
        window, kinds = _windows(d, int(v["num_layers"]), family)
        bias = bool(d.get("attention_bias", False)) if qwen3 else True
        # Qwen2 always has q/k/v biases and head_dim = hidden / heads (a head_dim key is not read by Qwen2)
        v.update(attn_head_dim=head_dim(d, v) if qwen3 else int(v["hidden_size"]) // int(v["num_heads"]),
                 qk_norm=qwen3, qkv_bias=bias, out_bias=bias and qwen3, sliding_window=window, layer_kinds=kinds)
        return v, set(COMMON_KEYS) | set(_OTHER)
    return read


# Keys of Qwen{2,3}Config that never change a forward pass here (checked in HF's modeling code)
_HARMLESS = frozenset({
    "use_mrope",             # 4.x Qwen2 leftover, unused by Qwen2Model
})
QWEN3 = Family(QwenConfig, _reader(True), decoder_table(),
               "Qwen3", harmless=_HARMLESS, tokenizer="Qwen2Tokenizer", head_kinds=("score", "lm"),
               tiny=presets.TINY, base=presets.BASE)
QWEN2 = Family(QwenConfig, _reader(False), decoder_table(),
               "Qwen2", harmless=_HARMLESS, tokenizer="Qwen2Tokenizer", head_kinds=("score", "lm"),
               tiny=presets.QWEN2_TINY)
