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
from ....hf.family import LAYER, ConfigError, Family, FamilyTable, Rule, require

_KEYS = {
    "vocab_size": "vocab_size", "hidden_size": "hidden_size", "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads", "intermediate_size": "intermediate_size",
    "max_position_embeddings": "max_position_embeddings",
}
_OPTIONAL = {   # ours -> (HF key, HF default)
    "hidden_act": ("hidden_act", "silu"), "layer_norm_eps": ("rms_norm_eps", 1e-6),
    "attention_dropout": ("attention_dropout", 0.0), "tie_word_embeddings": ("tie_word_embeddings", False),
}
_OTHER = ("num_key_value_heads", "head_dim", "attention_bias", "rope_parameters", "rope_theta", "rope_scaling",
          "use_sliding_window", "sliding_window", "layer_types", "pad_token_id")


def _rope_theta(d: dict, family: str) -> float:
    scaling = d.get("rope_scaling")
    if scaling is not None and (scaling.get("rope_type", scaling.get("type")) or "default") != "default":
        raise ConfigError(f"{family} config has rope_scaling={scaling!r}: only unscaled rotary positions "
                          "(rope_type 'default') are supported; scaled RoPE would give other scores")
    params = d.get("rope_parameters")
    if params is None:
        return float(d.get("rope_theta", 10_000.0))
    if not isinstance(params, dict) or params.get("rope_type", "default") != "default" \
            or set(params) - {"rope_type", "rope_theta"}:
        raise ConfigError(f"{family} config has rope_parameters={params!r}: only rope_type 'default' with "
                          "rope_theta is supported (linear, dynamic, yarn, llama3, ... scaling is not)")
    return float(params.get("rope_theta", d.get("rope_theta", 10_000.0)))


def _head_kind(d: dict) -> str:
    archs = d.get("architectures") or []
    return "lm" if any(str(a).endswith("ForCausalLM") for a in archs) else "score"


def _reader(qwen3: bool):
    def read(d: dict, family: str) -> tuple[dict, set]:
        v = {ours: require(d, theirs, family) for ours, theirs in _KEYS.items()}
        v.update({ours: d.get(theirs, default) for ours, (theirs, default) in _OPTIONAL.items()})
        heads = int(v["num_heads"])
        kv = int(d.get("num_key_value_heads") or heads)
        if kv < 1 or heads % kv:
            raise ConfigError(f"{family} config has num_key_value_heads={kv}: must divide "
                              f"num_attention_heads={heads}")
        head_dim = d.get("head_dim") if qwen3 else None
        head_dim = int(head_dim) if head_dim else int(v["hidden_size"]) // heads
        if d.get("use_sliding_window"):
            raise ConfigError(f"{family} config has use_sliding_window=True: sliding-window attention is not "
                              "supported (the released Qwen2/Qwen3 rerankers and embedders do not use it)")
        kinds = set(d.get("layer_types") or ["full_attention"])
        if kinds != {"full_attention"}:
            raise ConfigError(f"{family} config has layer_types {sorted(kinds)}: only 'full_attention' is supported")
        bias = bool(d.get("attention_bias", False)) if qwen3 else True
        if v["hidden_act"] not in ("silu", "swish"):
            raise ConfigError(f"{family} config has hidden_act={v['hidden_act']!r} (supported: 'silu')")
        pad = d.get("pad_token_id")
        v.update(num_kv_heads=kv, attn_head_dim=head_dim, rope_theta=_rope_theta(d, family), qk_norm=qwen3,
                 qkv_bias=bias, out_bias=bias and qwen3, tie_word_embeddings=bool(v["tie_word_embeddings"]),
                 head_kind=_head_kind(d), type_vocab_size=0, embedding_size=v["hidden_size"],
                 pad_token_id=0 if pad is None else pad, hidden_dropout=0.0, classifier_dropout=0.0,
                 head_activation="identity")
        return v, set(_KEYS.values()) | {theirs for theirs, _ in _OPTIONAL.values()} | set(_OTHER)
    return read


_AT = f"{LAYER}/attention"
_ENCODER = (
    Rule("embed_tokens.weight", "encoder/word/embedding"),
    Rule("layers.{i}.input_layernorm.weight", f"{LAYER}/input_norm/scale"),
    Rule("layers.{i}.self_attn.q_proj.weight", f"{_AT}/query/kernel", "split_heads"),
    Rule("layers.{i}.self_attn.q_proj.bias", f"{_AT}/query/bias", "split_heads_bias"),
    Rule("layers.{i}.self_attn.k_proj.weight", f"{_AT}/key/kernel", "split_kv_heads"),
    Rule("layers.{i}.self_attn.k_proj.bias", f"{_AT}/key/bias", "split_kv_heads_bias"),
    Rule("layers.{i}.self_attn.v_proj.weight", f"{_AT}/value/kernel", "split_kv_heads"),
    Rule("layers.{i}.self_attn.v_proj.bias", f"{_AT}/value/bias", "split_kv_heads_bias"),
    Rule("layers.{i}.self_attn.o_proj.weight", f"{_AT}/out/kernel", "merge_heads"),
    Rule("layers.{i}.self_attn.o_proj.bias", f"{_AT}/out/bias"),
    Rule("layers.{i}.self_attn.q_norm.weight", f"{_AT}/q_norm/scale"),
    Rule("layers.{i}.self_attn.k_norm.weight", f"{_AT}/k_norm/scale"),
    Rule("layers.{i}.post_attention_layernorm.weight", f"{LAYER}/mlp_norm/scale"),
    # SwiGLU down(silu(gate(x)) * up(x)): GatedMLP activates its "input" and multiplies by "gate"
    Rule("layers.{i}.mlp.gate_proj.weight", f"{LAYER}/mlp/input/kernel", "linear"),
    Rule("layers.{i}.mlp.up_proj.weight", f"{LAYER}/mlp/gate/kernel", "linear"),
    Rule("layers.{i}.mlp.down_proj.weight", f"{LAYER}/mlp/out/kernel", "linear"),
    Rule("norm.weight", "encoder/final_norm/scale"),
)
_HEAD = (
    Rule("lm_head.weight", "head/lm/kernel", "linear"),
    Rule("score.weight", "head/score/kernel", "linear"),
)


def _needs(path: str, cfg: QwenConfig) -> bool:
    if path.startswith("head/lm/"):
        return cfg.head_kind == "lm" and not cfg.tie_word_embeddings
    if path.startswith("head/score/"):
        return cfg.head_kind == "score"
    if "/q_norm/" in path or "/k_norm/" in path:
        return cfg.qk_norm
    if path.endswith("/out/bias"):
        return cfg.out_bias
    if path.endswith("/bias"):
        return cfg.qkv_bias
    return True


# Keys of Qwen{2,3}Config that never change a forward pass here (checked in HF's modeling code)
_HARMLESS = frozenset({
    "max_window_layers",     # only read to build layer_types when use_sliding_window is on
    "use_mrope",             # 4.x Qwen2 leftover, unused by Qwen2Model
})
# A tied causal LM saved by 4.x may carry lm_head.weight (a copy of embed_tokens); the rotary
# inv_freq buffer is recomputed from rope_theta.
_IGNORED = (r"lm_head\.weight", r"(.*\.)?rotary_emb\.inv_freq")

QWEN3 = Family(QwenConfig, _reader(True), FamilyTable("model", _ENCODER, _HEAD, _IGNORED, needs=_needs),
               "Qwen3", harmless=_HARMLESS, tokenizer="Qwen2Tokenizer", head_kinds=("score", "lm"),
               tiny=presets.TINY, base=presets.BASE)
QWEN2 = Family(QwenConfig, _reader(False), FamilyTable("model", _ENCODER, _HEAD, _IGNORED, needs=_needs),
               "Qwen2", harmless=_HARMLESS, tokenizer="Qwen2Tokenizer", head_kinds=("score", "lm"),
               tiny=presets.QWEN2_TINY)
