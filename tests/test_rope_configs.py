"""Every rope-reading family reads config.json's rope keys as transformers 5.25 does.

For each spelling a config.json can hold (5.x `rope_parameters`, flat or one dict per layer type;
4.x `rope_theta` / `rope_scaling` / `rope_local_base_freq` / `global_rope_theta` /
`local_rope_theta`; several at once, where precedence decides) our inverse frequencies per layer
type equal the ones HF's own rotary embedding builds from `XConfig.from_dict` (what
from_pretrained builds), within 1 ulp: torch's float32 pow is within 1 ulp of the correctly
rounded value, ours is the correctly rounded value; linear factors here are powers of two, so the
division adds no rounding. Our theta and linear factor equal HF's config values exactly too.
Precedence in 5.25 (convert_rope_params_to_dict):
- Llama-shaped (Gemma, Gemma 2, Qwen2, Qwen3): a non-empty rope_scaling replaces rope_parameters;
  the dict's rope_theta, else the top-level rope_theta, else 1e4.
- Gemma 3 text: rope_scaling is merged OVER rope_parameters["full_attention"] (its keys win); a
  layer type's dict without rope_theta takes rope_theta (global) / rope_local_base_freq (local),
  else 1e6 / 1e4.
- ModernBERT: the same per layer type, rope_scaling merged over BOTH; global_rope_theta /
  local_rope_theta, else 160000 / 10000.
Configs we refuse are listed with the reason: a scaled rope type we do not implement (HF would
scale), a rope dict HF itself reads as something else than it says, a null or zero theta (HF fails
or gets inf / nan). No model is built, only configs and HF's rotary modules (~1 s in all).
"""
from __future__ import annotations

import copy

import numpy as np
import pytest

from xenc_jax.hf.configs import ConfigError, config_from_dict
from xenc_jax.models.blocks import GLOBAL, LOCAL, LinearRopeScaling, RotaryPositions
from xenc_jax.models.families.gemma import presets as gemma
from xenc_jax.models.families.modernbert import presets as modernbert
from xenc_jax.models.families.qwen import presets as qwen

_NO_ROPE = ("rope_parameters",)
BASES = {   # the tiny presets without their rope keys; head_dim 16/8 gives 8/4 frequencies
    "gemma": gemma.TINY, "gemma2": gemma.GEMMA2_TINY, "gemma3_text": gemma.GEMMA3_TINY,
    "qwen2": qwen.QWEN2_TINY, "qwen3": qwen.TINY, "modernbert": modernbert.TINY}
LINEAR4 = {"rope_type": "linear", "factor": 4.0}

# Llama-shaped families: (config keys, what HF makes of them)
FLAT = [
    {"rope_parameters": {"rope_type": "default", "rope_theta": 5e4}},          # 5.x
    {"rope_theta": 2e4},                                                       # 4.x
    {},                                                                        # neither: 1e4
    {"rope_parameters": {"rope_type": "default", "rope_theta": 5e4}, "rope_theta": 2e4},   # the dict's wins
    {"rope_parameters": {"rope_type": "default"}, "rope_theta": 2e4},          # top-level fills in
    {"rope_parameters": {"type": "default", "rope_theta": 5e4}},               # 4.x key inside 5.x dict
    # a non-empty rope_scaling replaces rope_parameters (whose theta is then unread: 2e4)
    {"rope_parameters": {"rope_type": "default", "rope_theta": 5e4}, "rope_theta": 2e4,
     "rope_scaling": {"rope_type": "default"}},
    {"rope_parameters": {"rope_type": "default", "rope_theta": 5e4}, "rope_scaling": {}},   # empty: unread
    {"rope_scaling": {"type": "default", "rope_theta": 3e4}, "rope_theta": 2e4},
]
GEMMA3 = [
    {"rope_parameters": gemma.GEMMA3_TINY["rope_parameters"]},                 # 5.x, per layer type
    {"rope_theta": 5e5, "rope_local_base_freq": 2e4},                          # 4.x
    {"rope_theta": 5e5, "rope_local_base_freq": 2e4, "rope_scaling": {"rope_type": "linear", "factor": 8.0}},
    {},                                                                        # defaults 1e6 / 1e4
    {"rope_parameters": {"full_attention": {**LINEAR4, "rope_theta": 2e5}}},   # sliding: its default 1e4
    {"rope_parameters": {"full_attention": {"type": "linear", "factor": 2.0}}, "rope_theta": 3e5,
     "rope_local_base_freq": 5e3},                                             # 4.x type key, top-level thetas
    # rope_scaling merged over rope_parameters' full_attention dict: its rope_type / factor / theta win
    {"rope_parameters": gemma.GEMMA3_TINY["rope_parameters"], "rope_scaling": LINEAR4},
    {"rope_parameters": {"full_attention": {**LINEAR4, "rope_theta": 5e5}},
     "rope_scaling": {"rope_type": "linear", "factor": 8.0, "rope_theta": 2e5}},
    {"rope_parameters": {"full_attention": {**LINEAR4, "rope_theta": 5e5}}, "rope_scaling": {},
     "rope_theta": 7e5},                                                       # empty: unread; dict theta wins
    {"rope_parameters": {"sliding_attention": {"rope_type": "default", "rope_theta": 3e3},
                         "full_attention": {"rope_type": "default"}},
     "rope_local_base_freq": 2e4, "rope_scaling": {"rope_theta": 4e5}},        # only full_attention merged
]
MODERNBERT = [
    {"global_rope_theta": 2e4, "local_rope_theta": 3e3},                       # 4.x
    {"rope_parameters": {GLOBAL: {"rope_type": "default", "rope_theta": 2e4},
                         LOCAL: {"rope_type": "default", "rope_theta": 3e3}}},  # 5.x
    {},                                                                        # defaults 160000 / 10000
    {"rope_parameters": {GLOBAL: {"rope_type": "default", "rope_theta": 2e4}},
     "global_rope_theta": 9e4, "local_rope_theta": 3e3},                       # the dict's wins, local fills in
    {"rope_parameters": {GLOBAL: {"type": "default"}}, "global_rope_theta": 9e4},
    # rope_scaling merged over both layer types: its rope_theta wins over everything
    {"rope_parameters": {GLOBAL: {"rope_type": "default", "rope_theta": 2e4}, LOCAL: {"type": "default"}},
     "local_rope_theta": 3e3, "rope_scaling": {"rope_theta": 5e4}},
    {"global_rope_theta": 2e4, "rope_scaling": {}},
    {"global_rope_theta": 2e4, "local_rope_theta": 3e3, "rope_scaling": {"rope_type": "default"}},
]
EQUAL = ([(f, c) for f in ("gemma", "gemma2", "qwen2", "qwen3") for c in FLAT]
         + [("gemma3_text", c) for c in GEMMA3] + [("modernbert", c) for c in MODERNBERT])

# (family, config keys, our error's words, whether HF 5.25 fails to build its rotary embedding too)
REFUSED = [
    # a scaled type we do not implement there: HF would scale, so no silent default
    ("gemma", {"rope_scaling": LINEAR4}, "rope_scaling.*only rope_type 'default'", False),
    ("qwen3", {"rope_parameters": {**LINEAR4, "rope_theta": 1e4}}, "rope_parameters.*'default'", False),
    ("gemma3_text", {"rope_parameters": {"sliding_attention": LINEAR4}}, "sliding_attention layers", False),
    ("modernbert", {"rope_scaling": LINEAR4}, r"modernbert \(full_attention layers\).*rope_scaling", False),
    ("modernbert", {"rope_parameters": {GLOBAL: {**LINEAR4, "rope_theta": 1e4}}}, "rope_parameters", False),
    # HF merges this over {"rope_type": "default"} (rope_type is set, so "type" is unread) and drops
    # the factor with a warning: the config says linear, HF runs default; we refuse to guess
    ("gemma3_text", {"rope_scaling": {"type": "linear", "factor": 8.0}}, "rope_scaling.*'factor'", False),
    # Gemma 2 / Qwen have layer_types, but their rotary embedding is one flat dict: HF fails
    ("gemma2", {"rope_parameters": {GLOBAL: {"rope_type": "default"}, LOCAL: {"rope_type": "default"}}},
     "rope_parameters", True),
    # rope_scaling merges into rope_parameters' layer-type dicts: HF fails when one is missing
    ("gemma3_text", {"rope_parameters": {"sliding_attention": {"rope_type": "default"}}, "rope_scaling": LINEAR4},
     "without a 'full_attention' dict", True),
    ("modernbert", {"rope_parameters": {GLOBAL: {"rope_type": "default"}}, "rope_scaling": {"rope_theta": 5e4}},
     "without both", True),
    # null / zero bases: HF fails on None ** exponents, or turns 0 into inf frequencies
    ("qwen2", {"rope_theta": None}, "rope_theta=None", True),
    ("gemma", {"rope_parameters": {"rope_type": "default", "rope_theta": 0}}, r"rope_theta'\]=0", None),
    ("gemma3_text", {"rope_local_base_freq": None}, "sliding_attention layers.*None", True),
    ("modernbert", {"global_rope_theta": None}, "full_attention layers.*None", True),
]


def _config(family: str, keys: dict) -> dict:
    base = {k: v for k, v in BASES[family].items() if k not in _NO_ROPE}
    return {**base, **copy.deepcopy(keys), "model_type": family}


def _hf(family: str, d: dict):
    """(HF's config, {layer type: HF's inverse frequencies}): per layer type for Gemma 3 and
    ModernBERT (one rotary buffer per type), one table for every layer otherwise."""
    import transformers as tf
    from transformers.models.gemma.modeling_gemma import GemmaRotaryEmbedding
    from transformers.models.gemma2.modeling_gemma2 import Gemma2RotaryEmbedding
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RotaryEmbedding
    from transformers.models.modernbert.modeling_modernbert import ModernBertRotaryEmbedding
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding
    config_class, rotary_class = {
        "gemma": (tf.GemmaConfig, GemmaRotaryEmbedding), "gemma2": (tf.Gemma2Config, Gemma2RotaryEmbedding),
        "gemma3_text": (tf.Gemma3TextConfig, Gemma3RotaryEmbedding),
        "modernbert": (tf.ModernBertConfig, ModernBertRotaryEmbedding),
        "qwen2": (tf.Qwen2Config, Qwen2RotaryEmbedding), "qwen3": (tf.Qwen3Config, Qwen3RotaryEmbedding)}[family]
    cfg = config_class.from_dict(copy.deepcopy(d))
    rotary = rotary_class(cfg)
    if hasattr(rotary, "inv_freq"):
        return cfg, {GLOBAL: rotary.inv_freq.numpy(), LOCAL: rotary.inv_freq.numpy()}
    return cfg, {kind: getattr(rotary, f"{kind}_inv_freq").numpy() for kind in (GLOBAL, LOCAL)}


def _ours(d: dict):
    """(our config, {layer type: (LayerType, our inverse frequencies)}) over the layers it has."""
    cfg = config_from_dict(d)
    kinds = [cfg.layer_type(k) for k in cfg.layer_types] if isinstance(cfg.layer_types, tuple) else cfg.layer_types()
    return cfg, {k.name: (k, RotaryPositions(cfg.head_dim, k.rope_theta, k.rope_scaling).inv_freq()) for k in kinds}


@pytest.mark.parametrize("family,keys", EQUAL, ids=[f"{f}-{i}" for i, (f, _) in enumerate(EQUAL)])
def test_rope_reads_as_transformers(family, keys):
    d = _config(family, keys)
    hf_cfg, want = _hf(family, d)
    cfg, got = _ours(d)
    params = hf_cfg.rope_parameters
    for name, (kind, freqs) in got.items():
        p = params[name] if name in params else params   # per layer type, or one flat dict
        assert kind.rope_theta == p["rope_theta"], (name, kind, p)
        assert kind.rope_scaling == (LinearRopeScaling(p["factor"]) if p["rope_type"] == "linear" else None), \
            (name, kind, p)
        assert freqs.dtype == want[name].dtype == np.float32
        assert np.all(np.abs(freqs - want[name]) <= np.spacing(want[name])), (name, freqs, want[name])


def test_cases_tell_the_precedences_apart():
    """The precedence cases above would fail if read the other way: HF's frequencies there
    differ from the ones the losing key alone gives (so the equality above is a real check)."""
    pairs = [("gemma", FLAT[6], {"rope_parameters": FLAT[6]["rope_parameters"]}),
             ("gemma3_text", GEMMA3[6], {"rope_parameters": GEMMA3[6]["rope_parameters"]}),
             ("gemma3_text", GEMMA3[7], {"rope_parameters": GEMMA3[7]["rope_parameters"]}),
             ("modernbert", MODERNBERT[5], {k: v for k, v in MODERNBERT[5].items() if k != "rope_scaling"})]
    for family, both, loser in pairs:
        a, b = _hf(family, _config(family, both))[1], _hf(family, _config(family, loser))[1]
        assert not np.allclose(a[GLOBAL], b[GLOBAL], rtol=1e-3), (family, both)


def test_modernbert_null_local_theta_is_the_global_one():
    """4.x ModernBertAttention ran a null local_rope_theta as the global theta; 5.25 cannot build
    the model from it (None ** exponents). We keep 4.x's meaning, the only one with scores."""
    d = _config("modernbert", {"global_rope_theta": 2e4, "local_rope_theta": None})
    cfg = config_from_dict(d)
    assert (cfg.global_rope_theta, cfg.local_rope_theta) == (2e4, 2e4)
    with pytest.raises(TypeError):
        _hf("modernbert", d)


@pytest.mark.parametrize("family,keys,match,hf_fails", REFUSED, ids=[f"{c[0]}-{i}" for i, c in enumerate(REFUSED)])
def test_rope_configs_we_refuse_say_why(family, keys, match, hf_fails):
    d = _config(family, keys)
    with pytest.raises(ConfigError, match=match):
        config_from_dict(d)
    if hf_fails:
        with pytest.raises((TypeError, KeyError, ValueError)):
            _hf(family, d)
