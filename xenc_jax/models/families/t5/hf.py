"""HF record of the T5 encoder (T5EncoderModel / MT5EncoderModel; model.py), for model_type
"t5" and "mt5" (same math, same weight names).

config.json as HF's T5Config reads it: feed_forward_proj "ACT" or "gated-ACT" (HF's own format
check), "gated-gelu" meaning the tanh GELU (gelu_new); a stored dense_act_fn / is_gated_act wins
over it, as in T5Config (they are set after it). The weights: encoder.* and the token table, read
from encoder.embed_tokens.weight or, when a checkpoint has only that, shared.weight (HF ties
them; with both present and different, HF's encoder reads embed_tokens: so do we). A full
T5ForConditionalGeneration checkpoint loads as its encoder (decoder.* and lm_head dropped by
name, as HF's T5EncoderModel does).
"""
from __future__ import annotations

from . import presets
from .model import T5Config
from ....hf.family import LAYER, ConfigError, Family, FamilyTable, Rule, require
from ....models.blocks import ACTIVATIONS

_KEYS = {"vocab_size": "vocab_size", "hidden_size": "d_model", "num_layers": "num_layers", "num_heads": "num_heads",
         "intermediate_size": "d_ff", "attn_head_dim": "d_kv"}
# T5Config's defaults, used by HF when a key is absent (old hub configs lack relative_attention_max_distance)
_DEFAULTS = {"layer_norm_epsilon": 1e-6, "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
             "dropout_rate": 0.1, "feed_forward_proj": "relu", "pad_token_id": 0}


def _activation(d: dict, family: str) -> tuple[str, bool]:
    """(activation name, gated) of the feed-forward, as T5Config derives (and lets stored keys override)."""
    proj = d.get("feed_forward_proj", _DEFAULTS["feed_forward_proj"])
    parts = str(proj).split("-")
    if (len(parts) > 1 and parts[0] != "gated") or len(parts) > 2:
        raise ConfigError(f"{family} config has feed_forward_proj={proj!r}: expected 'ACT' or 'gated-ACT' "
                          "(e.g. 'relu', 'gated-gelu'), as transformers' T5Config requires")
    act = "gelu_new" if proj == "gated-gelu" else parts[-1]
    act, key = (d["dense_act_fn"], "dense_act_fn") if "dense_act_fn" in d else (act, "feed_forward_proj")
    gated = bool(d.get("is_gated_act", parts[0] == "gated"))
    if act not in ACTIVATIONS:
        raise ConfigError(f"{family} config has {key}={d.get(key, proj)!r}: its activation {act!r} is not "
                          f"supported (supported: {sorted(ACTIVATIONS)})")
    return act, gated


def _read(d: dict, family: str) -> tuple[dict, set]:
    v = {ours: require(d, theirs, family) for ours, theirs in _KEYS.items()}
    get = lambda k: d[k] if d.get(k) is not None else _DEFAULTS[k]
    act, gated = _activation(d, family)
    buckets, distance = int(get("relative_attention_num_buckets")), int(get("relative_attention_max_distance"))
    if buckets < 4 or distance <= buckets // 4:
        # bidirectional buckets: half per direction, half of those exact (max_exact = buckets // 4); HF
        # divides by log(max_distance / max_exact), so anything smaller gives garbage buckets in PyTorch too
        raise ConfigError(f"{family} config has relative_attention_num_buckets={buckets}, "
                          f"relative_attention_max_distance={distance}: T5's bucketing needs at least 4 "
                          "buckets and a max distance above num_buckets // 4")
    v.update(hidden_act=act, gated_mlp=gated, layer_norm_eps=get("layer_norm_epsilon"),
             relative_attention_num_buckets=buckets, relative_attention_max_distance=distance,
             hidden_dropout=float(get("dropout_rate")), attention_dropout=float(get("dropout_rate")),
             pad_token_id=int(get("pad_token_id")),
             # relative positions only: no position table bounds the length (ST: the tokenizer's limit)
             max_position_embeddings=1 << 30)
    return v, set(_KEYS.values()) | set(_DEFAULTS) | {"dense_act_fn", "is_gated_act"}


_ATT = "encoder.block.{i}.layer.0.SelfAttention"
_FF = "encoder.block.{i}.layer.1.DenseReluDense"
_ENCODER = (
    Rule("encoder.embed_tokens.weight", "encoder/word/embedding"),
    Rule("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", "encoder/relative_bias/embedding"),
    Rule(f"{_ATT}.q.weight", f"{LAYER}/attention/query/kernel", "split_heads"),
    Rule(f"{_ATT}.k.weight", f"{LAYER}/attention/key/kernel", "split_heads"),
    Rule(f"{_ATT}.v.weight", f"{LAYER}/attention/value/kernel", "split_heads"),
    Rule(f"{_ATT}.o.weight", f"{LAYER}/attention/out/kernel", "merge_heads"),
    Rule("encoder.block.{i}.layer.0.layer_norm.weight", f"{LAYER}/attn_norm/scale"),
    Rule("encoder.block.{i}.layer.1.layer_norm.weight", f"{LAYER}/mlp_norm/scale"),
    Rule(f"{_FF}.wi.weight", f"{LAYER}/mlp_in/kernel", "linear"),          # v1.0
    Rule(f"{_FF}.wo.weight", f"{LAYER}/mlp_out/kernel", "linear"),
    Rule(f"{_FF}.wi_0.weight", f"{LAYER}/mlp/input/kernel", "linear"),     # gated (v1.1 / mT5)
    Rule(f"{_FF}.wi_1.weight", f"{LAYER}/mlp/gate/kernel", "linear"),
    Rule(f"{_FF}.wo.weight", f"{LAYER}/mlp/out/kernel", "linear"),
    Rule("encoder.final_layer_norm.weight", "encoder/final_norm/scale"),
)


def _needs(path: str, cfg: T5Config) -> bool:
    """The plain feed-forward's params or the gated one's, by the config's switch."""
    if "/mlp_in/" in path or "/mlp_out/" in path:
        return not cfg.gated_mlp
    if "/mlp/" in path:
        return cfg.gated_mlp
    return True


_TABLE = FamilyTable("transformer", _ENCODER, (),
                     (r"shared\.weight", r"decoder\..*", r"lm_head\.weight"), needs=_needs,
                     tied={"encoder.embed_tokens.weight": "shared.weight"})
# keys of T5Config that never reach the encoder's math (decoder size, init, the LM head's scaling)
_HARMLESS = frozenset({"n_positions", "num_decoder_layers", "classifier_dropout", "scale_decoder_outputs",
                       "initializer_factor"})

# encoder only: the architecture stem makes a save's config name T5EncoderModel (as ST's GTR folders)
T5 = Family(T5Config, _read, _TABLE, "T5Encoder", harmless=_HARMLESS, tokenizer="T5Tokenizer",
            head_kinds=("embeddings",), tiny=presets.TINY, base=presets.BASE)
