"""The HF half every Llama-shaped decoder family shares (models/decoder.py): config.json keys
common to LlamaConfig, MistralConfig, Qwen2Config and Qwen3Config, the rotary settings, the head
kind, and one weight table (HF's `model.layers.{i}.self_attn.q_proj` ... names are the same in all
four). Each family's hf.py reads its own switches and builds its record from these.

Rotary positions: HF's "default" rope type, and "llama3" / "linear" where the family allows them
(Llama 3.1's bands; linear: Llama / Mistral, Gemma 3 4B+'s global layers); every other scaled type
(dynamic, yarn, longrope, ...) is rejected by name. Both config spellings are read: transformers
5's `rope_parameters` and 4.x's `rope_theta` / `rope_scaling`; when a config.json has both, a
non-empty `rope_scaling` replaces `rope_parameters`, as transformers 5.25's
convert_rope_params_to_dict does (`rope_scaling or rope_parameters`).
"""
from __future__ import annotations

from ..models.blocks import LinearRopeScaling, Llama3RopeScaling
from ..models.decoder import DecoderConfig
from .family import LAYER, ConfigError, FamilyTable, Rule, require

_KEYS = {
    "vocab_size": "vocab_size", "hidden_size": "hidden_size", "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads", "intermediate_size": "intermediate_size",
    "max_position_embeddings": "max_position_embeddings",
}
_OPTIONAL = {   # ours -> (HF key, HF default)
    "layer_norm_eps": ("rms_norm_eps", 1e-6),
    "attention_dropout": ("attention_dropout", 0.0), "tie_word_embeddings": ("tie_word_embeddings", False),
}
# read by read_common (num_key_value_heads, rope, pad) or by every family's reader (head_dim, biases)
COMMON_KEYS = frozenset(set(_KEYS.values()) | {k for k, _ in _OPTIONAL.values()} | {
    "hidden_act", "num_key_value_heads", "head_dim", "attention_bias", "rope_parameters", "rope_theta", "rope_scaling",
    "pad_token_id"})
_LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


def _llama3(params: dict, d: dict, family: str) -> Llama3RopeScaling:
    values = {k: params.get(k) for k in _LLAMA3_KEYS}
    if values["original_max_position_embeddings"] is None:   # HF's fallback (standardize_rope_params)
        values["original_max_position_embeddings"] = d.get("max_position_embeddings")
    missing = [k for k, x in values.items() if x is None]
    if missing:
        raise ConfigError(f"{family} config has a llama3 rope without {missing}: HF needs them to scale the frequencies")
    if float(values["high_freq_factor"]) == float(values["low_freq_factor"]):
        raise ConfigError(f"{family} config has a llama3 rope with high_freq_factor == low_freq_factor "
                          f"({values['low_freq_factor']}): HF divides by their difference")
    return Llama3RopeScaling(float(values["factor"]), float(values["low_freq_factor"]),
                             float(values["high_freq_factor"]), int(values["original_max_position_embeddings"]))


def _linear(params: dict, family: str) -> LinearRopeScaling:
    factor = params.get("factor")
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor >= 1:
        raise ConfigError(f"{family} config has a linear rope with factor={factor!r}: HF needs a number >= 1")
    return LinearRopeScaling(float(factor))


def rope(d: dict, family: str, types: tuple[str, ...] = ("default",)
         ) -> tuple[float, Llama3RopeScaling | LinearRopeScaling | None]:
    """(rope_theta, scaling) from either spelling; a rope type outside `types` is an error naming
    the key ("llama3" and "linear" are the scaled types implemented)."""
    # HF 5.25 (convert_rope_params_to_dict): `rope_scaling or rope_parameters`, the other one unread;
    # the dict's own rope_theta, else the top-level one, else 1e4 (setdefault: a key present wins)
    key = "rope_scaling" if d.get("rope_scaling") else "rope_parameters"
    params = d.get(key)
    if params is None:
        return _theta(d.get("rope_theta", 10_000.0), "rope_theta", family), None
    kind = params.get("rope_type", params.get("type")) if isinstance(params, dict) else None
    kind = kind or "default"
    if kind == "dynamic" and kind not in types:
        raise ConfigError(_dynamic_message(key, params, d, family))
    own = {"llama3": set(_LLAMA3_KEYS), "linear": {"factor"}}.get(kind, set())   # the scaled types' keys
    known = {"rope_type", "type", "rope_theta"} | own
    if not isinstance(params, dict) or kind not in types or set(params) - known:
        raise ConfigError(f"{family} config has {key}={params!r}: only rope_type {' or '.join(map(repr, types))} "
                          f"is supported (with rope_theta{', and llama3 factors' if 'llama3' in types else ''}"
                          f"{', and a linear factor' if 'linear' in types else ''}); "
                          "other RoPE scaling (dynamic, yarn, longrope, ...) would give other scores")
    theta = _theta(params.get("rope_theta", d.get("rope_theta", 10_000.0)),
                   f"{key}['rope_theta']" if "rope_theta" in params else "rope_theta", family)
    scaling = _llama3(params, d, family) if kind == "llama3" else _linear(params, family) if kind == "linear" \
        else None
    return theta, scaling


def _theta(value, key: str, family: str) -> float:
    """A rope base must be a positive number: HF 5.25 fails on a null one (None ** exponents) and
    turns 0 or a negative one into inf / nan frequencies, so neither has scores to match."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{family} config has {key}={value!r}: the rotary base must be a positive number "
                          "(e.g. 10000.0)")
    return float(value)


def _dynamic_message(key: str, params, d: dict, family: str) -> str:
    """Why "dynamic" (NTK) stays rejected: HF runs the default rope while a batch's positions fit
    max_position_embeddings (its init frequencies are the default ones) but past that rescales
    rope_theta from the batch's longest row, and keeps those frequencies for a later batch that is
    shorter but still past the limit (modeling_rope_utils.dynamic_rope_update): exact only below a
    length, then batch- and history-dependent, so no one fixed set of frequencies matches it."""
    n = d.get("max_position_embeddings")
    limit = f"max_position_embeddings={n} tokens" if n else "max_position_embeddings tokens"
    return (f"{family} config has {key}={params!r}: rope_type 'dynamic' (dynamic NTK) is not supported: "
            f"transformers uses the default rope for inputs of up to {limit}, but past that it rescales "
            "rope_theta from the longest row of the batch (or of an earlier, longer batch), so scores would "
            "depend on what is batched together; for inputs that never exceed that length, rope_type "
            "'default' gives transformers' scores")


def head_kind(d: dict) -> str:
    """*ForCausalLM: a causal-LM scorer (hf/causal_score.py); anything else ForSequenceClassification's
    `score` (fresh when the checkpoint has none, as HF)."""
    archs = d.get("architectures") or []
    return "lm" if any(str(a).endswith("ForCausalLM") for a in archs) else "score"


def read_common(d: dict, family: str, rope_types: tuple[str, ...] = ("default",),
                act: tuple[str, str, tuple[str, ...]] = ("hidden_act", "silu", ("silu", "swish"))) -> dict:
    """The DecoderConfig fields every decoder family reads alike; the family adds head_dim,
    biases, norms and windows. act: (the config key of the MLP's activation, HF's default, the
    values allowed: SwiGLU's silu; Gemma's GeGLU reads hidden_activation, tanh GELU)."""
    v = {ours: require(d, theirs, family) for ours, theirs in _KEYS.items()}
    v.update({ours: d.get(theirs, default) for ours, (theirs, default) in _OPTIONAL.items()})
    key, default, allowed = act
    v["hidden_act"] = d.get(key) or default
    heads = int(v["num_heads"])
    kv = int(d.get("num_key_value_heads") or heads)
    if kv < 1 or heads % kv:
        raise ConfigError(f"{family} config has num_key_value_heads={kv}: must divide num_attention_heads={heads}")
    if v["hidden_act"] not in allowed:
        raise ConfigError(f"{family} config has {key}={v['hidden_act']!r} (supported: {', '.join(map(repr, allowed))})")
    theta, scaling = rope(d, family, rope_types)
    pad = d.get("pad_token_id")
    v.update(num_kv_heads=kv, rope_theta=theta, rope_scaling=scaling, head_kind=head_kind(d),
             tie_word_embeddings=bool(v["tie_word_embeddings"]), pad_token_id=0 if pad is None else pad)
    return v


def head_dim(d: dict, v: dict) -> int:
    """An explicit head_dim (Llama, Mistral, Qwen3), else hidden / heads."""
    return int(d.get("head_dim") or int(v["hidden_size"]) // int(v["num_heads"]))


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
    Rule("layers.{i}.mlp.gate_proj.bias", f"{LAYER}/mlp/input/bias"),
    Rule("layers.{i}.mlp.up_proj.weight", f"{LAYER}/mlp/gate/kernel", "linear"),
    Rule("layers.{i}.mlp.up_proj.bias", f"{LAYER}/mlp/gate/bias"),
    Rule("layers.{i}.mlp.down_proj.weight", f"{LAYER}/mlp/out/kernel", "linear"),
    Rule("layers.{i}.mlp.down_proj.bias", f"{LAYER}/mlp/out/bias"),
    Rule("norm.weight", "encoder/final_norm/scale"),
)
_HEAD = (
    Rule("lm_head.weight", "head/lm/kernel", "linear"),
    Rule("score.weight", "head/score/kernel", "linear"),
)


def _needs(path: str, cfg: DecoderConfig) -> bool:
    if path.startswith("head/lm/"):
        return cfg.head_kind == "lm" and not cfg.tie_word_embeddings
    if path.startswith("head/score/"):
        return cfg.head_kind == "score"
    if "/q_norm/" in path or "/k_norm/" in path:
        return cfg.qk_norm
    if path.endswith("/bias") and "/mlp/" in path:
        return cfg.mlp_bias
    if path.endswith("/out/bias"):
        return cfg.out_bias
    if path.endswith("/bias"):
        return cfg.qkv_bias
    return True


# A tied causal LM saved by 4.x may carry lm_head.weight (a copy of embed_tokens); the rotary
# inv_freq buffer is recomputed from the rope settings.
_IGNORED = (r"lm_head\.weight", r"(.*\.)?rotary_emb\.inv_freq")


# Gemma 2/3: four norms per layer; post_attention_layernorm is the attention output's own norm there
_POST_NORMS = (
    Rule("layers.{i}.post_attention_layernorm.weight", f"{LAYER}/post_attn_norm/scale"),
    Rule("layers.{i}.pre_feedforward_layernorm.weight", f"{LAYER}/mlp_norm/scale"),
    Rule("layers.{i}.post_feedforward_layernorm.weight", f"{LAYER}/post_mlp_norm/scale"),
)


def decoder_table(post_norms: bool = False) -> FamilyTable:
    """The weight table of every Llama-shaped decoder (params a config switch removes: `needs`);
    post_norms: Gemma 2/3's four norms per layer."""
    rules = _ENCODER if not post_norms else tuple(
        r for r in _ENCODER if "post_attention_layernorm" not in r.hf) + _POST_NORMS
    return FamilyTable("model", rules, _HEAD, _IGNORED, needs=_needs)
