"""HF records of Gemma and Gemma 2 (Gemma{,2}Model, ...ForCausalLM, ...ForSequenceClassification;
model.py). Keys, rotary settings, head kind and the weight table are the shared decoder's
(hf/decoder.py); here what Gemma sets on it.

Gemma: the MLP activation is `hidden_act` (HF's GemmaConfig maps a legacy "gelu" to the tanh
approximation, "gelu_pytorch_tanh": so do we); optional attention_bias (q/k/v/o).
Gemma 2: the activation is `hidden_activation` (a `hidden_act` key is not read by Gemma2Model:
harmless); `layer_types` (default: even layers sliding, as Gemma2Config), `sliding_window`,
`query_pre_attn_scalar`, `attn_logit_softcapping`, `final_logit_softcapping` (on the causal LM's
logits only: ForSequenceClassification's `score` is not capped, as HF).
Both: tied embeddings unless the config says otherwise (HF's default True is often not written),
every rope type hf/decoder.py implements; `use_bidirectional_attention` is rejected (Gemma 1/2 build a causal
mask whatever it says under eager attention: it is only a kernel hint there).
"""
from __future__ import annotations

import dataclasses

from . import presets
from .model import GemmaConfig
from ....hf.decoder import COMMON_KEYS, decoder_table, head_dim, read_common, rope
from ....hf.family import ConfigError, Family, Rule, require

_GELU = ("gelu_pytorch_tanh", "gelu_new", "gelu_fast")   # the same tanh GELU in HF's ACT2FN


def _gemma_common(d: dict, family: str, act_key: str) -> dict:
    if act_key == "hidden_act" and d.get("hidden_act") == "gelu":   # GemmaConfig.__post_init__
        d = {**d, "hidden_act": "gelu_pytorch_tanh"}
    v = read_common(d, family, act=(act_key, "gelu_pytorch_tanh", _GELU))
    bias = bool(d.get("attention_bias", False))
    v.update(attn_head_dim=head_dim(d, v), qkv_bias=bias, out_bias=bias, norm_kind="rms_one_plus",
             embed_scale=True, tie_word_embeddings=bool(d.get("tie_word_embeddings", True)))
    return v


def _read_gemma(d: dict, family: str) -> tuple[dict, set]:
    return _gemma_common(d, family, "hidden_act"), set(COMMON_KEYS)


def _cap(d: dict, key: str, family: str) -> float | None:
    cap = d.get(key)
    if cap is not None and not float(cap) > 0:
        raise ConfigError(f"{family} config has {key}={cap!r}: a soft-cap must be positive (or null for none)")
    return None if cap is None else float(cap)


def _read_gemma2(d: dict, family: str) -> tuple[dict, set]:
    v = _gemma_common(d, family, "hidden_activation")
    n = int(v["num_layers"])
    kinds = tuple(d.get("layer_types") or ["sliding_attention" if (i + 1) % 2 else "full_attention"
                                           for i in range(n)])
    window = d.get("sliding_window")
    if len(kinds) != n or set(kinds) - {"sliding_attention", "full_attention"}:
        raise ConfigError(f"{family} config has layer_types={list(kinds)!r}: expected {n} entries of "
                          "'sliding_attention' / 'full_attention'")
    if "sliding_attention" in kinds and (not isinstance(window, int) or window < 1):
        raise ConfigError(f"{family} config has sliding_window={window!r} with sliding layers: expected a positive "
                          "number of tokens")
    v.update(layer_kinds=kinds, sliding_window=window or 0, post_norms=True,
             attn_scale=float(d.get("query_pre_attn_scalar", 256)) ** -0.5,
             attn_softcap=_cap(d, "attn_logit_softcapping", family),
             final_softcap=_cap(d, "final_logit_softcapping", family))
    return v, set(COMMON_KEYS) | {"hidden_activation", "layer_types", "sliding_window", "query_pre_attn_scalar",
                                  "attn_logit_softcapping", "final_logit_softcapping"}


def _gemma3_rope(d: dict, family: str) -> tuple[float, object, float, object]:
    """(global theta, global scaling, local theta, local scaling) as
    Gemma3TextConfig.convert_rope_params_to_dict (transformers 5.25) builds them: each layer type's
    `rope_parameters` dict ({"rope_type": "default"} when absent), a 4.x `rope_scaling` merged over
    the full_attention one (its keys win, rope_type and factor included: Gemma 3 4B+ write
    {"rope_type": "linear", "factor": 8}), then rope_theta / rope_local_base_freq only where the
    dict has no rope_theta; defaults 1e6 / 1e4. Each layer type takes any rope type hf/decoder.rope
    implements (HF's rotary embedding builds each type's frequencies with the same functions)."""
    params = d.get("rope_parameters")
    if params is not None and (not isinstance(params, dict) or set(params) - {"full_attention", "sliding_attention"}):
        raise ConfigError(f"{family} config has rope_parameters={params!r}: expected one dict per layer type "
                          "('full_attention', 'sliding_attention')")
    scaling = d.get("rope_scaling")
    if scaling is not None and not isinstance(scaling, dict):
        raise ConfigError(f"{family} config has rope_scaling={scaling!r}: expected a dict (rope_type, factor)")
    if scaling is not None and params is not None and not isinstance(params.get("full_attention"), dict):
        raise ConfigError(f"{family} config has rope_scaling and a rope_parameters without a 'full_attention' dict: "
                          "transformers merges rope_scaling into that dict and fails without it; put the "
                          "rope settings in rope_parameters['full_attention'] and drop rope_scaling")
    got, head_dim = [], d.get("head_dim") or d["hidden_size"] // d["num_attention_heads"]
    for kind, extra, theta_key, default in (("full_attention", scaling, "rope_theta", 1_000_000.0),
                                            ("sliding_attention", None, "rope_local_base_freq", 10_000.0)):
        p = (params or {}).get(kind)
        p = {"rope_type": "default"} if p is None else dict(p)   # HF's default dict only for a missing one
        p.update(extra or {})
        p.setdefault("rope_theta", d.get(theta_key, default))
        # rope() names the key: rope_scaling when one was merged in (the error is about it, then)
        key = "rope_scaling" if extra else "rope_parameters"
        got.append(rope({key: p, "max_position_embeddings": d.get("max_position_embeddings"),
                         "partial_rotary_factor": d.get("partial_rotary_factor")},
                        f"{family} ({kind} layers)", head_dim=head_dim, nested=True))
    (theta, scaling), (local, local_scaling) = got
    return theta, scaling, local, local_scaling


# read by _gemma3_rope per layer type (not by the shared flat reader)
_GEMMA3_ROPE_KEYS = ("rope_parameters", "rope_scaling", "partial_rotary_factor")


def _read_gemma3(d: dict, family: str) -> tuple[dict, set]:
    """Gemma 3 text (EmbeddingGemma when use_bidirectional_attention): Gemma 2's layer plus q/k
    norms, a rope theta per layer type; layer_types default to 5 sliding then 1 full
    (sliding_window_pattern). A bidirectional config.json holds the window HF halves on load
    (Gemma3TextConfig: sliding_window // 2 + 1, |q - k| < that)."""
    bidirectional = bool(d.get("use_bidirectional_attention"))
    n = int(require(d, "num_hidden_layers", family))
    pattern = int(d.get("sliding_window_pattern", d.get("_sliding_window_pattern", 6)))   # 5.x writes the latter
    window = d.get("sliding_window", 4096)
    d = {**d, "layer_types": d.get("layer_types") or ["sliding_attention" if (i + 1) % pattern else "full_attention"
                                                      for i in range(n)],
         "sliding_window": window // 2 + 1 if bidirectional and isinstance(window, int) else window}
    v, used = _read_gemma2({k: x for k, x in d.items() if k not in _GEMMA3_ROPE_KEYS}, family)
    theta, scaling, local, local_scaling = _gemma3_rope(d, family)
    v.update(qk_norm=True, rope_theta=theta, rope_scaling=scaling, local_rope_theta=local,
             local_rope_scaling=local_scaling, bidirectional=bidirectional)
    return v, used | {"sliding_window_pattern", "_sliding_window_pattern", "rope_local_base_freq", "use_bidirectional_attention",
                      "rope_parameters", "rope_scaling"}


# Gemma3Config's own keys (model_type gemma3); what each means to text-only scoring: _read_gemma3_multimodal
_MULTIMODAL_KEYS = frozenset({"text_config", "vision_config", "mm_tokens_per_image", "boi_token_index", "eoi_token_index",
                              "image_token_index", "image_token_id", "boi_token_id", "eoi_token_id",
                              "tie_word_embeddings"})


def _read_gemma3_multimodal(d: dict, family: str, *, read_nested) -> tuple[dict, set]:
    """Gemma 3 4B/12B/27B (Gemma3Config: a text_config and a SigLIP vision_config; HF's
    Gemma3ForConditionalGeneration, Gemma3ForSequenceClassification) scoring text. transformers 5.25
    runs the text tower alone when no pixel_values are given: no image features are merged, and
    token_type_ids, absent or all zero for text, leave the text tower's causal / sliding masks. So the
    text_config is read as a gemma3_text config.json, with all of that family's checks and
    Gemma3TextConfig's defaults for the keys it leaves out (released configs write only the sizes),
    and of the top level only what HF reads for text: the labels, and tie_word_embeddings for the
    causal LM (Gemma3ForConditionalGeneration's lm_head, tied by the top-level flag, never soft-capped:
    its forward has no final_logit_softcapping, unlike Gemma3ForCausalLM's). The vision settings change
    nothing without images; image_token_index only maps that id to the pad row when it is past the
    vocabulary, an id the tokenizer check (no id past vocab_size) keeps out. pad_token_id: the text
    config's (HF's get_text_config(); a top-level one is not read)."""
    text = d.get("text_config")
    text = {} if text is None else text   # HF: Gemma3TextConfig() when absent
    if not isinstance(text, dict) or text.get("model_type", "gemma3_text") != "gemma3_text":
        raise ConfigError(f"{family} config has text_config={text!r}: expected an object of Gemma 3 text "
                          "settings (model_type 'gemma3_text')")
    if text.get("use_bidirectional_attention"):
        raise ConfigError(f"{family} config has text_config.use_bidirectional_attention=true: transformers' "
                          "Gemma3Model builds the causal masks whatever it says (with the window the flag halves), "
                          "so no bidirectional model is run; a bidirectional text model (EmbeddingGemma) is "
                          "model_type 'gemma3_text'")
    try:   # read_nested: hf/configs.config_from_dict (Family.reads_nested)
        inner = read_nested({**presets.GEMMA3_TEXT_DEFAULTS, **text, "model_type": "gemma3_text"},
                            source=f"the text_config of a {family} config.json")
    except ConfigError as e:
        if "ignore_config_keys" not in str(e):
            raise
        raise ConfigError(f"{e}; but ignore_config_keys reaches only config.json's top-level keys: after "
                          "checking, remove these from its text_config instead") from None
    v = {f.name: getattr(inner, f.name) for f in dataclasses.fields(inner)
         if f.init and f.name not in ("family", "num_labels", "raw_json")}
    archs = d.get("architectures") or []
    causal = any(str(a).endswith(("ForConditionalGeneration", "ForCausalLM")) for a in archs)
    v.update(head_kind="lm" if causal else "score", tie_word_embeddings=bool(d.get("tie_word_embeddings", True)),
             final_softcap=None)
    return v, set(_MULTIMODAL_KEYS)


def _multimodal_table():
    """Gemma 3's text tower inside Gemma3Config models: the gemma3_text table under the prefix
    transformers 5.25 writes (language_model.model.*, the 4.5x layout it converts back to on save;
    the lm_head as language_model.lm_head), reading the layouts it renames on load too (its
    in-memory model.language_model.*, lm_head, model.vision_tower.*; Gemma3Model's
    language_model.*). The vision tower and projector are dropped by name, never read (safetensors
    are read per tensor)."""
    table = decoder_table(post_norms=True)
    head = (Rule("language_model.lm_head.weight", "head/lm/kernel", "linear"),
            Rule("score.weight", "head/score/kernel", "linear"))
    renames = ((r"^model\.language_model\.", "language_model.model."), (r"^lm_head\.", "language_model.lm_head."),
               (r"^language_model\.(?!model\.|lm_head\.)", "language_model.model."),
               (r"^model\.(vision_tower|multi_modal_projector)\.", r"\1."))
    ignored = (r"language_model\.lm_head\.weight", r"(.*\.)?rotary_emb\.inv_freq", r"vision_tower\..*",
               r"multi_modal_projector\..*")
    return dataclasses.replace(table, prefix="language_model.model", head=head, ignored=ignored, renames=renames,
                               bare_prefixed=True)


_MUST_EQUAL = {"use_bidirectional_attention": (False,)}
_HARMLESS = frozenset({
    "hidden_activation",      # Gemma: 5.x GemmaMLP reads hidden_act only
    "cache_implementation",   # Gemma 2: generation cache ("hybrid")
})
_HARMLESS2 = frozenset({"hidden_act", "cache_implementation"})   # Gemma2MLP reads hidden_activation

GEMMA = Family(GemmaConfig, _read_gemma, decoder_table(), "Gemma", must_equal=_MUST_EQUAL, harmless=_HARMLESS,
               tokenizer="GemmaTokenizer", head_kinds=("score", "lm"), tiny=presets.TINY, base=presets.BASE)
GEMMA2 = Family(GemmaConfig, _read_gemma2, decoder_table(post_norms=True), "Gemma2", must_equal=_MUST_EQUAL,
                harmless=_HARMLESS2, tokenizer="GemmaTokenizer", head_kinds=("score", "lm"),
                tiny=presets.GEMMA2_TINY, base=presets.GEMMA2_BASE)
# Gemma 3 text: HF names the causal LM Gemma3ForCausalLM (Gemma 3 1B's `architectures`, and
# transformers' Auto mapping for gemma3_text) but the others Gemma3Text* (EmbeddingGemma: Gemma3TextModel)
GEMMA3_TEXT = Family(GemmaConfig, _read_gemma3, decoder_table(post_norms=True), "Gemma3Text",
                     harmless=_HARMLESS2, tokenizer="GemmaTokenizer", head_kinds=("score", "lm"),
                     tiny=presets.GEMMA3_TINY, base=presets.GEMMA3_BASE,
                     class_names={"ForCausalLM": "Gemma3ForCausalLM"})
# Gemma 3 4B/12B/27B (model_type gemma3): the text tower of the multimodal model (_read_gemma3_multimodal);
# its causal LM is Gemma3ForConditionalGeneration. No `tiny`: presets.GEMMA3_MM_TINY (see there)
GEMMA3 = Family(GemmaConfig, _read_gemma3_multimodal, _multimodal_table(), "Gemma3",
                harmless=frozenset({"pad_token_id"}), tokenizer="GemmaTokenizer", head_kinds=("score", "lm"),
                class_names={"ForCausalLM": "Gemma3ForConditionalGeneration"}, reads_nested=True)
