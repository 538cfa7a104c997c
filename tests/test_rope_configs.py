"""Every rope-reading family reads config.json's rope keys as transformers 5.25 does.

For each spelling a config.json can hold (5.x `rope_parameters`, flat or one dict per layer type;
4.x `rope_theta` / `rope_scaling` / `rope_local_base_freq` / `global_rope_theta` /
`local_rope_theta`; several at once, where precedence decides) our inverse frequencies per layer
type equal the ones HF's own rotary embedding builds from `XConfig.from_dict` (what
from_pretrained builds), within 1 ulp: torch's float32 pow is within 1 ulp of the correctly
rounded value, ours is the correctly rounded value; linear factors here are powers of two, so the
division adds no rounding; yarn's blend is torch's float32 expression in the same order, from a
pow that may differ by that 1 ulp (2 ulp allowed there: the blend of two values each within 1 ulp).
Our theta, rope type and factor equal HF's config values exactly, and our cos/sin factor equals
HF's attention_scaling exactly (yarn's; 1 for every other type).
Every rope type transformers computes as fixed frequencies is read in every family: default,
linear, llama3, yarn, proportional (the only one that rotates part of the head; a
partial_rotary_factor below 1 with another type is refused: HF ignores it or fails, both shown).
Precedence in 5.25 (convert_rope_params_to_dict):
- Llama-shaped (Gemma, Gemma 2, Qwen2, Qwen3): a non-empty rope_scaling replaces rope_parameters;
  the dict's rope_theta, else the top-level rope_theta, else 1e4.
- Gemma 3 text: rope_scaling is merged OVER rope_parameters["full_attention"] (its keys win); a
  layer type's dict without rope_theta takes rope_theta (global) / rope_local_base_freq (local),
  else 1e6 / 1e4.
- ModernBERT: the same per layer type, rope_scaling merged over BOTH; global_rope_theta /
  local_rope_theta, else 160000 / 10000.
Configs we refuse are listed with the reason: a batch-dependent rope type (longrope; dynamic is
tests/test_family_llama's), a rope dict HF itself reads as something else than it says, a null or
zero theta (HF fails or gets inf / nan). These build no model, only configs and HF's rotary modules.
Then one end-to-end scores check per newly read rope type on tiny random models (yarn on Qwen3
with its attention factor; proportional and linear per layer type on Gemma 3), each shown to
move HF's own scores when its scaling is undone, so a reader that dropped it could not pass.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest

from xenc_jax.hf.configs import ConfigError, config_from_dict
from xenc_jax.models.blocks import GLOBAL, LOCAL, LinearRopeScaling, Llama3RopeScaling, ProportionalRopeScaling, \
    RotaryPositions, YarnRopeScaling
from xenc_jax.models.families.gemma import presets as gemma
from xenc_jax.models.families.modernbert import presets as modernbert
from xenc_jax.models.families.qwen import presets as qwen

_NO_ROPE = ("rope_parameters",)
BASES = {   # the tiny presets without their rope keys; head_dim 16/8 gives 8/4 frequencies
    "gemma": gemma.TINY, "gemma2": gemma.GEMMA2_TINY, "gemma3_text": gemma.GEMMA3_TINY,
    "qwen2": qwen.QWEN2_TINY, "qwen3": qwen.TINY, "modernbert": modernbert.TINY}
LINEAR4 = {"rope_type": "linear", "factor": 4.0}
# Qwen's documented long-context dict (Qwen2.5 / Qwen3 model cards), its tiny-model twin whose ramp
# reaches the fast dims, and one with every optional key HF reads
YARN_QWEN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
YARN16 = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}
YARN_ALL = {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 32, "beta_fast": 16,
            "beta_slow": 2.0, "mscale": 0.707, "mscale_all_dim": 1.0, "truncate": False}
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 16}
HALF = {"rope_type": "proportional", "partial_rotary_factor": 0.5, "factor": 2.0}

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
    # the scaled types (4.x and 5.x spellings), partial_rotary_factor at the top or in the dict
    {"rope_scaling": {"type": "linear", "factor": 2.0}, "rope_theta": 2e4},
    {"rope_parameters": {**YARN_QWEN, "rope_theta": 1e6}},
    {"rope_scaling": YARN16},
    {"rope_parameters": {**YARN_ALL, "attention_factor": 1.25, "rope_theta": 5e5}},
    {"rope_parameters": {**YARN_ALL, "rope_theta": 5e5}},
    {"rope_parameters": LLAMA3},
    {"rope_parameters": {**HALF, "rope_theta": 5e4}},
    {"rope_parameters": {"rope_type": "proportional"}, "partial_rotary_factor": 0.25},
    {"rope_parameters": {"rope_type": "linear", "factor": 2.0, "partial_rotary_factor": 1.0}},
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
    # scaled types per layer type (sliding ones included), yarn's attention factor per type
    {"rope_parameters": {"sliding_attention": LINEAR4, "full_attention": YARN16}},
    {"rope_parameters": {"sliding_attention": YARN_QWEN, "full_attention": HALF}},
    {"rope_parameters": {"sliding_attention": LLAMA3, "full_attention": {"rope_type": "default"}},
     "rope_scaling": {**YARN_ALL, "truncate": True}},
    {"rope_parameters": {"full_attention": {"rope_type": "proportional"},
                         "sliding_attention": {"rope_type": "proportional", "factor": 2.0}},
     "partial_rotary_factor": 0.5},
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
    {"global_rope_theta": 2e4, "local_rope_theta": 3e3, "rope_scaling": LINEAR4},   # merged over both
    {"rope_parameters": {GLOBAL: {**YARN16, "rope_theta": 2e4}, LOCAL: {**HALF, "rope_theta": 3e3}}},
    {"rope_parameters": {GLOBAL: {"rope_type": "proportional"}, LOCAL: {**HALF, "partial_rotary_factor": 0.25}},
     "partial_rotary_factor": 0.5},                                            # the dict's wins
    {"rope_parameters": {GLOBAL: LLAMA3, LOCAL: {"rope_type": "default"}}},
]
EQUAL = ([(f, c) for f in ("gemma", "gemma2", "qwen2", "qwen3") for c in FLAT]
         + [("gemma3_text", c) for c in GEMMA3] + [("modernbert", c) for c in MODERNBERT])

# (family, config keys, our error's words, whether HF 5.25 fails to build its rotary embedding too)
REFUSED = [
    # longrope: short or long factors for the whole batch by its longest row (batch-dependent)
    ("qwen3", {"rope_parameters": {"rope_type": "longrope", "short_factor": [1.0] * 4, "long_factor": [2.0] * 4,
                                   "original_max_position_embeddings": 64}}, "longrope.*batched with", False),
    # partial_rotary_factor below 1: HF ignores it with the default type (shown in
    # test_partial_rotary_factor_is_ignored_or_fails_in_transformers) or fails with a scaled one
    ("qwen3", {"partial_rotary_factor": 0.5}, "4 of 8 head dims.*ignores it", False),
    ("gemma3_text", {"rope_parameters": {"sliding_attention": {**LINEAR4, "partial_rotary_factor": 0.5}}},
     r"sliding_attention layers.*'linear'.*fails", False),
    ("modernbert", {"rope_scaling": {**YARN16, "partial_rotary_factor": 0.5}}, "yarn.*fails", False),
    ("gemma", {"rope_parameters": {**HALF, "partial_rotary_factor": 1.5}}, "partial_rotary_factor=1.5.*at most 1",
     False),
    # a key the rope type does not read: HF warns and ignores it, the config does not say what runs
    ("qwen2", {"rope_parameters": {**YARN16, "low_freq_factor": 1.0}}, r"'yarn' does not read \['low_freq_factor'\]",
     False),
    # a nested yarn dict's truncate: HF reads it from the top of rope_parameters, so truncates anyway
    ("gemma3_text", {"rope_parameters": {"full_attention": {**YARN16, "truncate": False}}}, "truncates anyway", False),
    ("qwen3", {"rope_parameters": {**YARN16, "original_max_position_embeddings": 0}}, "original_max_position", False),
    ("qwen2", {"rope_parameters": {"rope_type": "yarn"}}, "yarn rope without factor", True),   # HF: KeyError
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
    """(HF's config, {layer type: HF's inverse frequencies}, {layer type: HF's cos/sin factor}):
    per layer type for Gemma 3 and ModernBERT (one rotary buffer per type), one table for every
    layer otherwise."""
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
        return cfg, {GLOBAL: rotary.inv_freq.numpy(), LOCAL: rotary.inv_freq.numpy()}, \
            {GLOBAL: rotary.attention_scaling, LOCAL: rotary.attention_scaling}
    return cfg, {kind: getattr(rotary, f"{kind}_inv_freq").numpy() for kind in (GLOBAL, LOCAL)}, \
        {kind: getattr(rotary, f"{kind}_attention_scaling") for kind in (GLOBAL, LOCAL)}


_TYPES = {"default": type(None), "linear": LinearRopeScaling, "llama3": Llama3RopeScaling, "yarn": YarnRopeScaling,
          "proportional": ProportionalRopeScaling}


def _ours(d: dict):
    """(our config, {layer type: (LayerType, our inverse frequencies)}) over the layers it has."""
    cfg = config_from_dict(d)
    kinds = [cfg.layer_type(k) for k in cfg.layer_types] if isinstance(cfg.layer_types, tuple) else cfg.layer_types()
    return cfg, {k.name: (k, RotaryPositions(cfg.head_dim, k.rope_theta, k.rope_scaling).inv_freq()) for k in kinds}


@pytest.mark.parametrize("family,keys", EQUAL, ids=[f"{f}-{i}" for i, (f, _) in enumerate(EQUAL)])
def test_rope_reads_as_transformers(family, keys):
    d = _config(family, keys)
    hf_cfg, want, hf_factor = _hf(family, d)
    cfg, got = _ours(d)
    params = hf_cfg.rope_parameters
    for name, (kind, freqs) in got.items():
        p = params[name] if name in params else params   # per layer type, or one flat dict
        assert kind.rope_theta == p["rope_theta"], (name, kind, p)
        assert type(kind.rope_scaling) is _TYPES[p["rope_type"]], (name, kind, p)
        assert getattr(kind.rope_scaling, "factor", None) == p.get("factor", 1.0 if p["rope_type"] == "proportional"
                                                                   else None), (name, kind, p)
        ours_factor = 1.0 if kind.rope_scaling is None else kind.rope_scaling.attention_factor
        assert ours_factor == hf_factor[name], (name, kind, p)
        assert freqs.dtype == want[name].dtype == np.float32
        ulps = 2 if p["rope_type"] == "yarn" else 1   # module docstring
        assert np.all(np.abs(freqs - want[name]) <= ulps * np.spacing(want[name])), (name, freqs, want[name])


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


def test_partial_rotary_factor_is_ignored_or_fails_in_transformers():
    """Why the partial_rotary_factor refusals above hold, on HF's own Qwen3 rotary embedding and
    apply_rotary_pos_emb (head_dim 8, factor 0.5): with rope_type default HF builds the whole head's
    4 frequencies, exactly as without the factor (ignored); with linear it builds 2, whose 4-dim
    cos/sin cannot multiply the 8-dim head (HF's forward fails); with proportional it rotates the
    first 2 frequency pairs and leaves the rest (inverse frequency 0), which we read alike."""
    import torch
    from transformers.models.qwen3.modeling_qwen3 import apply_rotary_pos_emb
    base = _hf("qwen3", _config("qwen3", {}))[1][GLOBAL]
    ignored = _hf("qwen3", _config("qwen3", {"partial_rotary_factor": 0.5}))[1][GLOBAL]
    np.testing.assert_array_equal(ignored, base)
    hf_cfg = _hf("qwen3", _config("qwen3", {"rope_parameters": {**LINEAR4, "partial_rotary_factor": 0.5}}))[0]
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding
    q = torch.ones(1, 4, 3, 8)
    cos, sin = Qwen3RotaryEmbedding(hf_cfg)(q, torch.arange(3)[None])
    assert cos.shape[-1] == 4
    with pytest.raises(RuntimeError, match="must match the size"):
        apply_rotary_pos_emb(q, q, cos, sin)
    d = _config("qwen3", {"rope_parameters": {**HALF, "rope_theta": 1e4}})
    want = _hf("qwen3", d)[1][GLOBAL]
    assert np.all(want[2:] == 0) and np.all(want[:2] > 0)
    np.testing.assert_array_equal(_ours(d)[1][GLOBAL][1], want)


# ---- end to end: one tiny model per newly read rope type ----

END_TOL = 1e-4   # test_family_llama's bound on a score (fp32 rounding through 2-3 tiny layers)
LENGTHS = (23, 9, 17, 1)
E2E = {   # name -> (tiny_llm kind, config overrides, how to undo the scaling in HF's rotary module)
    # yarn: the frequencies past the ramp's first dim divided by 4, cos/sin times 1 + 0.1 ln 4
    "qwen3-yarn": ("qwen3-seqcls", {"rope_parameters": {**YARN16, "rope_theta": 1e4}}),
    # Gemma 3's global layers rotate half the head (proportional), its sliding ones are linear
    "gemma3-proportional-linear": ("gemma3_text-seqcls", {"rope_parameters": {
        "full_attention": {**HALF, "rope_theta": 1e6}, "sliding_attention": {**LINEAR4, "rope_theta": 1e4}}}),
}


def _undone(ref, name: str):
    """Copies of HF's model with one part of the rope scaling undone each (the default rope's
    frequencies, or yarn's cos/sin factor set to 1): each must move HF's scores."""
    import copy

    import torch
    rotary = ref.model.rotary_emb
    out = []
    if name == "qwen3-yarn":
        for part in ("frequencies", "attention factor"):
            m = copy.deepcopy(ref)
            if part == "frequencies":
                m.model.rotary_emb.inv_freq.copy_(torch.from_numpy(RotaryPositions(8, 1e4).inv_freq()))
            else:
                m.model.rotary_emb.attention_scaling = 1.0
            out.append((part, m))
        assert rotary.attention_scaling > 1.1   # 1 + 0.1 ln 4
        return out
    for kind, theta in ((GLOBAL, 1e6), (LOCAL, 1e4)):
        m = copy.deepcopy(ref)
        getattr(m.model.rotary_emb, f"{kind}_inv_freq").copy_(torch.from_numpy(RotaryPositions(16, theta).inv_freq()))
        out.append((kind, m))
    return out


@pytest.mark.parametrize("name", list(E2E))
def test_scaled_rope_scores_match_transformers(name, tmp_path):
    """A tiny random seq-cls model with the rope type(s), saved by HF and loaded here: our scores
    at each row's last token equal HF's within END_TOL, and HF's own scores with each part of the
    scaling undone move by over 100 x END_TOL, so a reader that dropped it could not pass. Rows
    reach position 22, where the default rope's fastest frequency turns 22 rad. One compile each."""
    import jax
    import jax.numpy as jnp
    import torch

    from tiny_hf import randomize_, right_padded_ids
    from tiny_llm import _model_class, llm_tokenizer, tiny_llm_config
    from xenc_jax.hf.pretrained import build_module, load_pretrained
    kind, overrides = E2E[name]
    llm_tokenizer(tmp_path, template=None)   # the folder needs one to load; scores read ids directly
    torch.manual_seed(0)
    ref = _model_class(kind)._from_config(tiny_llm_config(kind, pad_token_id=0, **copy.deepcopy(overrides)),
                                          attn_implementation="eager")
    randomize_(ref, 3)
    ref.eval()
    ref.save_pretrained(str(tmp_path), safe_serialization=True)
    pt = load_pretrained(tmp_path, head=True)
    ids, mask = right_padded_ids(LENGTHS, pt.config.vocab_size)
    got = np.asarray(jax.jit(build_module(pt.config, head=True).apply)({"params": pt.params}, jnp.asarray(ids),
                                                                        jnp.asarray(mask)))
    with torch.no_grad():
        want = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
        moved = {part: np.abs(m(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
                              - want).max() for part, m in _undone(ref, name)}
    assert got.shape == want.shape == (len(LENGTHS), 1)
    assert np.abs(got - want).max() <= END_TOL, np.abs(got - want).max()
    assert all(x > 100 * END_TOL for x in moved.values()), moved
