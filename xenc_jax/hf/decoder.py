"""The HF half every Llama-shaped decoder family shares (models/decoder.py): config.json keys
common to LlamaConfig, MistralConfig, Qwen2Config and Qwen3Config, the rotary settings, the head
kind, and one weight table (HF's `model.layers.{i}.self_attn.q_proj` ... names are the same in all
four). Each family's hf.py reads its own switches and builds its record from these.

Rotary positions (`rope`, also used by Gemma 3's and ModernBERT's per-layer-type readers): every rope
type transformers 5.25 computes as fixed frequencies, in every family (HF builds them all with the
same modeling_rope_utils functions): "default", "linear", "llama3", "yarn" (with its attention
factor on cos/sin) and "proportional" (the one type that rotates part of the head:
partial_rotary_factor below 1 with any other type is refused, HF ignores it or fails). "dynamic"
and "longrope" are refused with why: HF picks their frequencies from the batch's longest row.
Both config spellings are read: transformers
5's `rope_parameters` and 4.x's `rope_theta` / `rope_scaling`; when a config.json has both, a
non-empty `rope_scaling` replaces `rope_parameters`, as transformers 5.25's
convert_rope_params_to_dict does (`rope_scaling or rope_parameters`).
"""
from __future__ import annotations

import math

from ..models.blocks import LinearRopeScaling, Llama3RopeScaling, ProportionalRopeScaling, RopeScaling, YarnRopeScaling
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
    "partial_rotary_factor", "pad_token_id"})
_LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
_YARN_KEYS = ("factor", "original_max_position_embeddings", "attention_factor", "beta_fast", "beta_slow", "mscale",
              "mscale_all_dim", "truncate")
# every rope type implemented, and the keys each reads besides rope_type / rope_theta / partial_rotary_factor
ROPE_TYPES = ("default", "linear", "llama3", "yarn", "proportional")
_OWN_KEYS = {"default": (), "linear": ("factor",), "llama3": _LLAMA3_KEYS, "yarn": _YARN_KEYS,
             "proportional": ("factor",)}


def _number(params: dict, key: str, family: str, kind: str, low: float, default=None) -> float:
    """params[key] (or the default) as a float >= low, else a ConfigError naming it."""
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= low:
        raise ConfigError(f"{family} config has a {kind} rope with {key}={value!r}: HF needs a number >= {low:g}")
    return float(value)


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
    return LinearRopeScaling(_number(params, "factor", family, "linear", 1))


def _yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """HF yarn_get_mscale: 0.1 * mscale * ln(factor) + 1 (1 for factor <= 1), in Python floats."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def _yarn(params: dict, d: dict, family: str, nested: bool) -> YarnRopeScaling:
    """HF _compute_yarn_parameters' settings: original_max_position_embeddings defaults to
    max_position_embeddings (standardize_rope_params), a null factor is max_position_embeddings over
    it; the attention factor is the config's, else mscale / mscale_all_dim's ratio when both are
    set, else from factor."""
    omp = params.get("original_max_position_embeddings", d.get("max_position_embeddings"))
    if isinstance(omp, bool) or not isinstance(omp, int) or omp < 1:
        raise ConfigError(f"{family} config has a yarn rope with original_max_position_embeddings={omp!r}: "
                          "HF needs a positive number of tokens")
    if "factor" not in params:   # HF indexes rope_parameters["factor"]: a KeyError
        raise ConfigError(f"{family} config has a yarn rope without factor: HF needs it (null: the ratio of "
                          "max_position_embeddings to original_max_position_embeddings)")
    if params["factor"] is None and isinstance(d.get("max_position_embeddings"), int):
        params = {**params, "factor": d["max_position_embeddings"] / omp}
    factor = _number(params, "factor", family, "yarn", 1)
    # HF: `if mscale and mscale_all_dim` (a null or 0 is unset)
    mscale, mscale_all_dim = (_number({k: params.get(k) or 0}, k, family, "yarn", 0)
                              for k in ("mscale", "mscale_all_dim"))
    attention = params.get("attention_factor")
    if attention is None:
        attention = _yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all_dim) \
            if mscale and mscale_all_dim else _yarn_mscale(factor)
    attention = _number({"attention_factor": attention}, "attention_factor", family, "yarn", 0)
    truncate = params.get("truncate", True)
    if not isinstance(truncate, bool) or (nested and not truncate):
        raise ConfigError(f"{family} config has a yarn rope with truncate={truncate!r}: " + (
            "transformers 5.25 reads truncate from the top of rope_parameters, not from a layer type's dict, so it "
            "truncates anyway; drop the key" if nested and isinstance(truncate, bool) else "expected true or false"))
    # HF: `beta_fast or 32`, `beta_slow or 1` (a null or 0 takes the default)
    fast, slow = (_number({k: params.get(k) or v}, k, family, "yarn", 0)
                  for k, v in (("beta_fast", 32), ("beta_slow", 1)))
    return YarnRopeScaling(factor, omp, attention, fast, slow, truncate)


def _proportional(params: dict, family: str) -> ProportionalRopeScaling:
    share = _number(params, "partial_rotary_factor", family, "proportional", 0, 1.0)
    if share > 1:
        raise ConfigError(f"{family} config has a proportional rope with partial_rotary_factor={share!r}: at most 1 "
                          "(transformers fails past the head)")
    return ProportionalRopeScaling(_number(params, "factor", family, "proportional", 1, 1.0), share)


def _partial(key: str, params: dict, kind: str, head_dim, family: str) -> None:
    """partial_rotary_factor (in the rope dict or, merged in as HF does, at the top of config.json)
    below 1 rotates only part of the head in transformers with rope_type "proportional" only: the
    default type ignores it (whole-head frequencies), every other type builds int(head_dim * factor)
    dims of cos/sin that apply_rotary_pos_emb cannot multiply with the whole head (a shape error)."""
    share, head_dim = params["partial_rotary_factor"], int(head_dim)
    if kind == "proportional":
        return
    if isinstance(share, bool) or not isinstance(share, (int, float)):
        raise ConfigError(f"{family} config has partial_rotary_factor={share!r}: expected a number")
    dims = int(head_dim * share)
    if dims == head_dim:   # HF's int(head_dim * factor) is the whole head: the factor changes nothing
        return
    why = (f"transformers ignores it with rope_type 'default' and rotates all {head_dim} dims, so its scores are "
           "not what the config says; drop the key to get them" if kind == "default" else
           f"with rope_type {kind!r} transformers builds cos/sin for {dims} dims and fails applying them to the "
           f"{head_dim}-dim head, so it has no scores to match")
    raise ConfigError(f"{family} config has {key}={params!r} with partial_rotary_factor={share!r} ({dims} of "
                      f"{head_dim} head dims rotated): {why}; only rope_type 'proportional' rotates part of the head")


def rope(d: dict, family: str, types: tuple[str, ...] = ROPE_TYPES, head_dim: int | None = None,
         nested: bool = False) -> tuple[float, RopeScaling | None]:
    """(rope_theta, scaling) from either spelling; a rope type outside `types` is an error naming
    the key. head_dim: the rotary embedding's (HF: head_dim, else hidden / heads); nested: the
    dict is one layer type's of a per-layer-type rope_parameters (Gemma 3, ModernBERT)."""
    # HF 5.25 (convert_rope_params_to_dict): `rope_scaling or rope_parameters`, the other one unread;
    # the dict's own rope_theta, else the top-level one, else 1e4 (setdefault: a key present wins);
    # a top-level partial_rotary_factor is set into the dict the same way
    key = "rope_scaling" if d.get("rope_scaling") else "rope_parameters"
    raw = d.get(key)
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{family} config has {key}={raw!r}: expected a dict with rope_type and rope_theta")
    params = dict(raw or {})
    if d.get("partial_rotary_factor") is not None:
        params.setdefault("partial_rotary_factor", d["partial_rotary_factor"])
    kind = params.get("rope_type", params.get("type")) or "default"
    if kind in ("dynamic", "longrope") and kind not in types:
        raise ConfigError(_batch_dependent_message(kind, key, params, d, family))
    if kind not in types:
        raise ConfigError(f"{family} config has {key}={params!r}: rope_type {kind!r} is not supported (supported: "
                          f"{', '.join(map(repr, types))}); other RoPE scaling would give other scores")
    extra = set(params) - {"rope_type", "type", "rope_theta", "partial_rotary_factor", *_OWN_KEYS[kind]}
    if extra:
        raise ConfigError(f"{family} config has {key}={params!r}: rope_type {kind!r} does not read {sorted(extra)} "
                          f"(transformers ignores them, so the config does not say what it runs); it reads "
                          f"{['rope_theta', *_OWN_KEYS[kind]]}")
    if params.get("partial_rotary_factor") is not None:
        _partial(key, params, kind, head_dim or d.get("head_dim") or d["hidden_size"] // d["num_attention_heads"],
                 family)
    theta = _theta(params.get("rope_theta", d.get("rope_theta", 10_000.0)),
                   f"{key}['rope_theta']" if "rope_theta" in params else "rope_theta", family)
    scaling = {"llama3": lambda: _llama3(params, d, family), "linear": lambda: _linear(params, family),
               "yarn": lambda: _yarn(params, d, family, nested), "proportional": lambda: _proportional(params, family),
               "default": lambda: None}[kind]()
    return theta, scaling


def _theta(value, key: str, family: str) -> float:
    """A rope base must be a positive number: HF 5.25 fails on a null one (None ** exponents) and
    turns 0 or a negative one into inf / nan frequencies, so neither has scores to match."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{family} config has {key}={value!r}: the rotary base must be a positive number "
                          "(e.g. 10000.0)")
    return float(value)


def _batch_dependent_message(kind: str, key: str, params, d: dict, family: str) -> str:
    """Why "dynamic" (NTK) and "longrope" stay rejected: HF runs fixed frequencies while a batch's
    positions fit a length, other ones past it, chosen from the batch's longest row
    (modeling_rope_utils.dynamic_rope_update). dynamic: the default rope up to
    max_position_embeddings, past that rope_theta rescaled from the longest row, kept for a later
    batch that is shorter but still past the limit; longrope: short_factor's frequencies up to
    original_max_position_embeddings, long_factor's for the whole batch once one row is past it.
    Exact only below a length, then batch- (and for dynamic history-) dependent: no one fixed set
    of frequencies matches it."""
    if kind == "longrope":
        n = params.get("original_max_position_embeddings") or d.get("max_position_embeddings")
        limit = f"original_max_position_embeddings={n} tokens" if n else "original_max_position_embeddings tokens"
        return (f"{family} config has {key}={params!r}: rope_type 'longrope' is not supported: transformers scales "
                f"every row of a batch by short_factor while the batch's longest row fits {limit} and by "
                "long_factor once one row is longer, so a row's scores would depend on what it is batched with")
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


def read_common(d: dict, family: str, rope_types: tuple[str, ...] = ROPE_TYPES,
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
