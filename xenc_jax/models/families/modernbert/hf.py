"""HF record of ModernBERT (ModernBertModel, ModernBertForSequenceClassification;
model.py).

config.json comes in two spellings: transformers 5 writes `layer_types` and `rope_parameters`
(and keeps `global_attn_every_n_layers`), the 4.x-saved checkpoints on the hub have
`global_attn_every_n_layers`, `global_rope_theta` and `local_rope_theta`. Both are read; the 5.x
keys win when present, as in ModernBertConfig.__post_init__ / convert_rope_params_to_dict, except
that a `rope_scaling` dict is merged over both layer types' rope settings (as HF does: _ropes).
"""
from __future__ import annotations

import re

from . import presets
from .model import GLOBAL, LOCAL, ModernBertConfig
from ...blocks.mlp import ACTIVATIONS
from ....hf.decoder import rope
from ....hf.family import LAYER, ConfigError, Family, FamilyTable, Fused, Rule, require

_KEYS = {
    "vocab_size": "vocab_size", "hidden_size": "hidden_size", "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads", "intermediate_size": "intermediate_size",
    "max_position_embeddings": "max_position_embeddings",
}
# ours -> (HF key, HF default): ModernBertConfig's defaults, for configs that leave them out
_OPTIONAL = {
    "hidden_act": ("hidden_activation", "gelu"), "layer_norm_eps": ("norm_eps", 1e-5),
    "pad_token_id": ("pad_token_id", 50283), "attention_dropout": ("attention_dropout", 0.0),
    "hidden_dropout": ("mlp_dropout", 0.0), "embedding_dropout": ("embedding_dropout", 0.0),
    "classifier_dropout": ("classifier_dropout", 0.0), "head_activation": ("classifier_activation", "gelu"),
    "local_attention": ("local_attention", 128), "norm_bias": ("norm_bias", False),
    "attention_bias": ("attention_bias", False), "mlp_bias": ("mlp_bias", False),
    "classifier_bias": ("classifier_bias", False), "classifier_pooling": ("classifier_pooling", "cls"),
}
_ROPE_KEYS = ("layer_types", "global_attn_every_n_layers", "rope_parameters", "global_rope_theta",
              "local_rope_theta", "rope_scaling", "head_dim", "partial_rotary_factor")


def _layer_types(d: dict, n: int) -> tuple[str, ...]:
    if d.get("layer_types") is not None:
        kinds = tuple(d["layer_types"])
        if len(kinds) != n or set(kinds) - {GLOBAL, LOCAL}:
            raise ConfigError(f"modernbert config has layer_types={list(kinds)!r}: expected {n} entries, "
                              f"each {GLOBAL!r} or {LOCAL!r}")
        return kinds
    every = int(d.get("global_attn_every_n_layers", 3))
    if every < 1:
        raise ConfigError(f"modernbert config has global_attn_every_n_layers={every}: must be >= 1")
    return tuple(LOCAL if i % every else GLOBAL for i in range(n))


def _ropes(d: dict, head_dim: int) -> dict[str, tuple]:
    """{layer type: (rope theta, scaling)} as ModernBertConfig.convert_rope_params_to_dict
    (transformers 5.25) builds them: each layer type's `rope_parameters` dict ({"rope_type":
    "default"} when absent), a `rope_scaling` dict merged over both (its keys win, rope_theta
    included), then global_rope_theta / local_rope_theta only where the dict has no rope_theta;
    defaults 160000 / 10000. Each layer type takes any rope type hf/decoder.rope implements."""
    params = d.get("rope_parameters")
    if params is not None and (not isinstance(params, dict) or set(params) - {GLOBAL, LOCAL}):
        raise ConfigError(f"modernbert config has rope_parameters={params!r}: expected a dict per layer "
                          f"type ({GLOBAL!r}, {LOCAL!r})")
    scaling = d.get("rope_scaling")
    if scaling is not None and not isinstance(scaling, dict):
        raise ConfigError(f"modernbert config has rope_scaling={scaling!r}: expected a dict (rope_type, rope_theta)")
    if scaling is not None and params is not None and not all(isinstance(params.get(k), dict) for k in (GLOBAL, LOCAL)):
        raise ConfigError(f"modernbert config has rope_scaling and a rope_parameters without both {GLOBAL!r} and "
                          f"{LOCAL!r} dicts: transformers merges rope_scaling into both and fails without them; "
                          "put the rope settings in rope_parameters and drop rope_scaling")
    fallback = {GLOBAL: d.get("global_rope_theta", 160_000.0), LOCAL: d.get("local_rope_theta", 10_000.0)}
    if fallback[LOCAL] is None:
        # 4.x ModernBertAttention: a null local_rope_theta meant the global theta (5.25 fails on it)
        fallback[LOCAL] = fallback[GLOBAL]
    got = {}
    for kind in (GLOBAL, LOCAL):
        p = (params or {}).get(kind)
        p = {"rope_type": "default"} if p is None else dict(p)   # HF's default dict only for a missing one
        p.update(scaling or {})
        p.setdefault("rope_theta", fallback[kind])
        key = "rope_scaling" if scaling else "rope_parameters"   # the error names rope_scaling when it was merged in
        got[kind] = rope({key: p, "max_position_embeddings": d.get("max_position_embeddings"),
                          "partial_rotary_factor": d.get("partial_rotary_factor")},
                         f"modernbert ({kind} layers)", head_dim=head_dim, nested=True)
    return got


def _read(d: dict, family: str) -> tuple[dict, set]:
    v = {ours: require(d, theirs, family) for ours, theirs in _KEYS.items()}
    v.update({ours: d.get(theirs, default) for ours, (theirs, default) in _OPTIONAL.items()})
    heads = v["hidden_size"] // v["num_heads"]
    if d.get("head_dim") not in (None, heads):
        # the rotary tables would use head_dim while the attention uses hidden_size // heads
        raise ConfigError(f"modernbert config has head_dim={d['head_dim']!r}; HF ModernBERT's attention uses "
                          f"hidden_size // num_attention_heads = {heads} (supported: that value)")
    if v["classifier_pooling"] not in ("cls", "mean"):
        raise ConfigError(f"modernbert config has classifier_pooling={v['classifier_pooling']!r} "
                          "(supported: 'cls', 'mean')")
    if v["head_activation"] not in ACTIVATIONS:
        raise ConfigError(f"modernbert config has classifier_activation={v['head_activation']!r} "
                          f"(supported: {tuple(ACTIVATIONS)})")
    if v["pad_token_id"] is None:
        v["pad_token_id"] = 0   # only HF's embedding padding_idx (gradients, init): no effect on the math
    if int(v["local_attention"]) < 0:
        raise ConfigError(f"modernbert config has local_attention={v['local_attention']}: must be >= 0")
    ropes = _ropes(d, heads)
    (glob, glob_scaling), (loc, loc_scaling) = ropes[GLOBAL], ropes[LOCAL]
    v.update(layer_types=_layer_types(d, int(v["num_layers"])), global_rope_theta=glob, local_rope_theta=loc,
             global_rope_scaling=glob_scaling, local_rope_scaling=loc_scaling,
             type_vocab_size=0, embedding_size=v["hidden_size"], local_attention=int(v["local_attention"]),
             embedding_dropout=float(v["embedding_dropout"]), classifier_dropout=float(v["classifier_dropout"]))
    for k in ("norm_bias", "attention_bias", "mlp_bias", "classifier_bias"):
        v[k] = bool(v[k])
    return v, set(_KEYS.values()) | {theirs for theirs, _ in _OPTIONAL.values()} | set(_ROPE_KEYS)


_AT = f"{LAYER}/attention"
_ENCODER = (
    Rule("embeddings.tok_embeddings.weight", "encoder/embeddings/word/embedding"),
    Rule("embeddings.norm.weight", "encoder/embeddings/norm/scale"),
    Rule("embeddings.norm.bias", "encoder/embeddings/norm/bias"),
    Rule("layers.{i}.attn_norm.weight", f"{LAYER}/attn_norm/scale"),
    Rule("layers.{i}.attn_norm.bias", f"{LAYER}/attn_norm/bias"),
    # Wqkv [3 * heads * head_dim, hidden]: HF views its output as (3, heads, head_dim), q first
    Fused("layers.{i}.attn.Wqkv.weight", tuple((f"{_AT}/{n}/kernel", "split_heads") for n in ("query", "key", "value"))),
    Fused("layers.{i}.attn.Wqkv.bias", tuple((f"{_AT}/{n}/bias", "split_heads_bias") for n in ("query", "key", "value"))),
    Rule("layers.{i}.attn.Wo.weight", f"{_AT}/out/kernel", "merge_heads"),
    Rule("layers.{i}.attn.Wo.bias", f"{_AT}/out/bias"),
    Rule("layers.{i}.mlp_norm.weight", f"{LAYER}/mlp_norm/scale"),
    Rule("layers.{i}.mlp_norm.bias", f"{LAYER}/mlp_norm/bias"),
    # Wi [2 * intermediate, hidden]: HF chunks its output into (input, gate)
    Fused("layers.{i}.mlp.Wi.weight", ((f"{LAYER}/mlp/input/kernel", "linear"), (f"{LAYER}/mlp/gate/kernel", "linear"))),
    Fused("layers.{i}.mlp.Wi.bias", ((f"{LAYER}/mlp/input/bias", "identity"), (f"{LAYER}/mlp/gate/bias", "identity"))),
    Rule("layers.{i}.mlp.Wo.weight", f"{LAYER}/mlp/out/kernel", "linear"),
    Rule("layers.{i}.mlp.Wo.bias", f"{LAYER}/mlp/out/bias"),
    Rule("final_norm.weight", "encoder/final_norm/scale"),
    Rule("final_norm.bias", "encoder/final_norm/bias"),
)
_HEAD = (
    Rule("head.dense.weight", "head/dense/kernel", "linear"),
    Rule("head.dense.bias", "head/dense/bias"),
    Rule("head.norm.weight", "head/norm/scale"),
    Rule("head.norm.bias", "head/norm/bias"),
    Rule("classifier.weight", "head/out/kernel", "linear"),
    Rule("classifier.bias", "head/out/bias"),   # nn.Linear default: a bias whatever classifier_bias says
)


def _needs(path: str, cfg: ModernBertConfig) -> bool:
    """Which params this config has: layer 0 has no attn_norm (nn.Identity in HF), and each bias
    exists only when its switch is on."""
    if path.startswith("encoder/layer_0/attn_norm/"):
        return False
    if not path.endswith("/bias"):
        return True
    if re.search(r"(^|/)(norm|attn_norm|mlp_norm|final_norm)/bias$", path):
        return cfg.norm_bias
    if "/attention/" in path:
        return cfg.attention_bias
    if "/mlp/" in path:
        return cfg.mlp_bias
    if path == "head/dense/bias":
        return cfg.classifier_bias
    return True


# Keys of ModernBertConfig (and of 4.x-saved configs) that never change a ModernBertModel /
# ForSequenceClassification forward pass here, checked in HF's modeling code:
_HARMLESS = frozenset({
    "initializer_cutoff_factor",   # init only
    "deterministic_flash_attn",    # flash-attention kernel determinism (not used on eager/sdpa paths)
    "reference_compile",           # 4.x: torch.compile of the layers (same math)
    "repad_logits_with_grad",      # 4.x: MLM unpadding bookkeeping
    "sparse_prediction", "sparse_pred_ignore_index", "decoder_bias",   # ModernBertForMaskedLM only
    "layer_norm_eps",              # not read by ModernBERT (norm_eps is); present in hub configs
    "position_embedding_type",     # not read by ModernBERT (rotary always); "absolute" in hub configs
    "_attn_implementation_autoset",  # 4.4x bookkeeping of which attention kernel was picked
})

MODERNBERT = Family(
    ModernBertConfig, _read,
    # ModernBertForMaskedLM's head/decoder are not the classification head: dropped by name only
    # when loading a bare encoder from an MLM checkpoint (decoder.* never maps to our head).
    FamilyTable("model", _ENCODER, _HEAD, (r"decoder\.(weight|bias)",), needs=_needs),
    "ModernBert", harmless=_HARMLESS, tiny=presets.TINY, base=presets.BASE)
