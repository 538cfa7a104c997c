"""The multimodal Gemma 3 (model_type gemma3: Gemma3Config with a text_config and a SigLIP
vision_config; gemma-3-4b/12b/27b and rerankers / classifiers fine-tuned from them) scores text
with its text tower alone, as transformers 5.25 does without pixel_values.

Models: tiny random ones (models/families/gemma/presets.py:GEMMA3_MM_TINY: Gemma 3 text with
sliding and full layers, a window of 5 tokens, q/k norms, a rope theta per layer type, and a
1-layer SigLIP vision tower with its projector), built with transformers and tests/tiny_llm.py's
BPE tokenizer, saved by transformers 5.25 (which writes the 4.5x layout, language_model.model.*).
- Gemma3ForSequenceClassification, 3 labels: through CrossEncoder on text pairs vs HF (fp32 END_TOL);
- Gemma3ForConditionalGeneration, per layer (relative bounds, test_family_gemma says why) and end
  to end, with an untied lm_head (top-level tie_word_embeddings false,
  the text_config's true: HF ties by the top-level flag) and the text config's final-logit
  soft-cap, which Gemma3ForConditionalGeneration does not apply: the yes - no logit vs HF;
- the other layouts transformers loads (its in-memory model.language_model.*) give the same
  params; vision tensors are never read; our saves load in transformers with the same scores;
- refused configs, HF's text defaults for a released config that leaves keys out.
sentence-transformers 6.3 loads a gemma3 folder through AutoProcessor (Gemma3Processor), which
needs pillow (not a test dependency) and the folder's processor files, and takes no text pairs, so
there is no ST check here (docs/model_families.md: its embeddings were checked by hand).
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest

from test_family_llama import END_TOL, PAIRS, assert_matches_hf
from xenc_jax.models.families.gemma.presets import GEMMA3_MM_TINY, GEMMA3_TEXT_DEFAULTS

REPO = Path(__file__).resolve().parents[1]


def _make(path: Path, cls_name: str, tok, *, seed: int, num_labels: int = 1, **top):
    """A tiny Gemma3Config model of class `cls_name`, randomized (tiny_hf.randomize_) and saved
    with `tok` (tiny_llm's, template None: pairs are text pairs; "yes" / "no" single tokens)."""
    import torch
    import transformers as tf
    from tiny_hf import randomize_
    tok.save_pretrained(str(path))
    cfg = tf.Gemma3Config(**copy.deepcopy({**GEMMA3_MM_TINY, **top}))
    cfg.text_config.pad_token_id = tok.pad_token_id
    cfg.num_labels = num_labels
    torch.manual_seed(seed)
    model = getattr(tf, cls_name)._from_config(cfg, attn_implementation="eager")
    randomize_(model, seed)
    model.eval()
    model.save_pretrained(str(path), safe_serialization=True)
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    pytest.importorskip("torch")
    from tiny_llm import llm_tokenizer
    tok = llm_tokenizer(None, template=None)   # trained once (BPE on its corpus), saved into both folders
    seqcls = tmp_path_factory.mktemp("gemma3_seqcls")
    causal = tmp_path_factory.mktemp("gemma3_causal")
    return {"seqcls": (seqcls, _make(seqcls, "Gemma3ForSequenceClassification", tok, seed=3, num_labels=3)),
            "causal": (causal, _make(causal, "Gemma3ForConditionalGeneration", tok, seed=4,
                                     tie_word_embeddings=False))}


def _keys(path: Path) -> list[str]:
    from safetensors import safe_open
    with safe_open(str(path / "model.safetensors"), "np") as f:
        return list(f.keys())


def test_cross_encoder_on_text_pairs_matches_hf(models):
    """Gemma3ForSequenceClassification, 3 labels, through CrossEncoder on text pairs (the folder has no chat template: tokenizer pairs, truncated to
    96) equals HF's logits on the same tokenized, right-padded pairs; rows are longer than the
    window of 5, so the sliding layers bind."""
    import torch

    from xenc_jax import CrossEncoder
    path, ref = models["seqcls"]
    ce = CrossEncoder(path, max_length=96)
    feats = ce.tokenizer([q for q, _ in PAIRS], [d for _, d in PAIRS], padding=True, truncation=True,
                         max_length=96, return_tensors="pt")
    assert int(feats["attention_mask"].sum(1).min()) > 5
    with torch.no_grad():
        want = ref(input_ids=feats["input_ids"], attention_mask=feats["attention_mask"]).logits.numpy()
    got = ce.predict(PAIRS, activation_fn="identity")
    assert got.shape == want.shape == (len(PAIRS), 3) and np.ptp(want) > 0.05
    assert np.abs(got - want).max() <= END_TOL, np.abs(got - want).max()


def test_conditional_generation_lm_head_matches_hf(models):
    """Gemma3ForConditionalGeneration read as a causal-LM reranker (logit yes - logit no), per
    layer, at the final norm and end to end (the text tower's checks; the seq-cls model shares
    them but for its head, checked end to end above): its own
    lm_head (top-level tie_word_embeddings false wins over the text_config's true) and no
    final-logit soft-cap (the text config's 3.0 is Gemma3ForCausalLM's only): HF's logits pass
    the cap, so a capped head would fail."""
    from xenc_jax.hf.configs import load_config
    path, ref = models["causal"]
    cfg = load_config(path)
    assert (cfg.head_kind, cfg.tie_word_embeddings, cfg.final_softcap) == ("lm", False, None)
    assert "language_model.lm_head.weight" in _keys(path)
    raw = assert_matches_hf(path, ref, 1, relative=True)
    assert np.abs(raw).max() > 3.0, np.abs(raw).max()


class _Recording(dict):
    """A tensor mapping that records which tensors are read."""

    def __init__(self, *a):
        super().__init__(*a)
        self.read = []

    def __getitem__(self, key):
        self.read.append(key)
        return super().__getitem__(key)


def _renamed_folder(src: Path, dst: Path, rename) -> Path:
    from safetensors.numpy import load_file, save_file
    dst.mkdir()
    for f in src.iterdir():
        if f.name != "model.safetensors":
            (dst / f.name).write_bytes(f.read_bytes())
    save_file({rename(k): v for k, v in load_file(str(src / "model.safetensors")).items()},
              str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def test_layouts_and_vision_tensors(models, tmp_path):
    """transformers' in-memory layout (model.language_model.*, model.vision_tower.*, lm_head),
    which 4.52+ checkpoints may hold, loads the same params as the 5.25 save (and in HF the same
    weights); the vision tower and projector are dropped by name without being read; a checkpoint
    holding both layouts of a tensor is refused."""
    import torch
    import transformers as tf
    from safetensors.numpy import load_file

    from xenc_jax.hf.configs import load_config
    from xenc_jax.hf.pretrained import load_pretrained
    from xenc_jax.hf.weights import WeightsError, flat_paths, params_from_hf
    path, ref = models["seqcls"]
    keys = _keys(path)   # transformers 5.25's save: the 4.5x layout
    assert any(k.startswith("language_model.model.layers.") for k in keys) and "score.weight" in keys
    assert any(k.startswith("vision_tower.") for k in keys) and any(k.startswith("multi_modal_projector.") for k in keys)
    new = _renamed_folder(path, tmp_path / "new", lambda k: re.sub(
        r"^(language_model)\.model\.|^(vision_tower|multi_modal_projector)\.", lambda m: f"model.{m[1] or m[2]}.", k))
    assert any(k.startswith("model.language_model.layers.") for k in _keys(new))
    hf = tf.Gemma3ForSequenceClassification.from_pretrained(str(new)).state_dict()
    assert all(torch.equal(hf[k], v) for k, v in ref.state_dict().items())
    a, b = (flat_paths(load_pretrained(p, with_tokenizer=False).params) for p in (path, new))
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    cfg = load_config(path)
    tensors = _Recording(load_file(str(path / "model.safetensors")))
    conv = params_from_hf(tensors, cfg, head=True)
    vision = [k for k in tensors if k.startswith(("vision_tower.", "multi_modal_projector."))]
    assert vision and set(vision) <= set(conv.ignored) and not set(vision) & set(tensors.read)
    both = {**tensors, "model.language_model.norm.weight": tensors["language_model.model.norm.weight"]}
    with pytest.raises(WeightsError, match="two layouts"):
        params_from_hf(both, cfg, head=True)


def test_saves_load_in_transformers(models, tmp_path):
    """Our saves (config.json as read, the text tower under language_model.model.*, no vision
    tensors): Gemma3ForSequenceClassification loads the text tower and head bit-identical to the
    original's (the vision tower is initialised fresh, unused for text) and gives the same
    logits; the bare model's save loads in Gemma3Model with the same text tower."""
    import torch
    import transformers as tf

    from xenc_jax.hf.pretrained import load_pretrained, save_pretrained
    path, ref = models["seqcls"]
    pt = load_pretrained(path, with_tokenizer=False)
    out = save_pretrained(tmp_path / "seqcls", pt.config, pt.params, head=True)
    assert json.loads((out / "config.json").read_text())["architectures"] == ["Gemma3ForSequenceClassification"]
    assert not any(k.startswith(("vision_tower.", "multi_modal_projector.")) for k in _keys(out))
    again = tf.Gemma3ForSequenceClassification.from_pretrained(str(out), attn_implementation="eager").eval()
    got, want = again.state_dict(), ref.state_dict()
    text = [k for k in want if not k.startswith(("model.vision_tower.", "model.multi_modal_projector."))]
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in text)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 0, 0], list(range(12, 21))])
    with torch.no_grad():
        assert torch.equal(again(input_ids=ids, attention_mask=(ids != 0).long()).logits,
                           ref(input_ids=ids, attention_mask=(ids != 0).long()).logits)
    bare = load_pretrained(path, head=False, with_tokenizer=False)
    out = save_pretrained(tmp_path / "bare", bare.config, bare.params, head=False)
    model = tf.AutoModel.from_pretrained(str(out))
    assert type(model).__name__ == "Gemma3Model"
    got, want = model.language_model.state_dict(), ref.model.language_model.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)


# gemma-3-4b-it's config.json as released (transformers 4.50): the text_config names only what
# differs from Gemma3TextConfig's defaults
GEMMA3_4B = {
    "architectures": ["Gemma3ForConditionalGeneration"], "boi_token_index": 255999, "eoi_token_index": 256000,
    "eos_token_id": [1, 106], "image_token_index": 262144, "initializer_range": 0.02, "mm_tokens_per_image": 256,
    "model_type": "gemma3",
    "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
                    "num_hidden_layers": 34, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                    "sliding_window": 1024},
    "torch_dtype": "bfloat16", "transformers_version": "4.50.0.dev0",
    "vision_config": {"hidden_size": 1152, "image_size": 896, "intermediate_size": 4304,
                      "model_type": "siglip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 27,
                      "patch_size": 14, "vision_use_head": False}}


def test_released_config_reads_as_transformers():
    """gemma-3-4b-it's config.json: the text tower transformers builds from it (Gemma3TextConfig's
    defaults for the keys left out; GEMMA3_TEXT_DEFAULTS are those defaults), its causal LM head
    (Gemma3ForConditionalGeneration, tied), layer types, windows and per-type rope (linear 8 on
    the global layers)."""
    import transformers as tf

    from xenc_jax.hf.configs import config_from_dict, config_to_dict
    defaults = tf.Gemma3TextConfig().to_dict()
    assert all(defaults[k] == v for k, v in GEMMA3_TEXT_DEFAULTS.items()), GEMMA3_TEXT_DEFAULTS
    ours, hf = config_from_dict(GEMMA3_4B), tf.Gemma3Config.from_dict(GEMMA3_4B).text_config
    assert (ours.vocab_size, ours.hidden_size, ours.num_layers, ours.num_heads, ours.num_kv_heads, ours.head_dim,
            ours.max_position_embeddings, ours.pad_token_id) == \
        (hf.vocab_size, hf.hidden_size, hf.num_hidden_layers, hf.num_attention_heads, hf.num_key_value_heads,
         hf.head_dim, hf.max_position_embeddings, hf.pad_token_id)
    assert (ours.head_kind, ours.tie_word_embeddings, ours.attn_scale) == ("lm", True, hf.query_pre_attn_scalar ** -0.5)
    kinds = ours.layer_types()
    assert [k.half_window is None for k in kinds] == [t == "full_attention" for t in hf.layer_types]
    assert {k.half_window for k in kinds} == {None, hf.sliding_window - 1}
    for kind in kinds:
        params = hf.rope_parameters["full_attention" if kind.half_window is None else "sliding_attention"]
        assert kind.rope_theta == params["rope_theta"] and kind.causal
        assert getattr(kind.rope_scaling, "factor", None) == (params.get("factor") if params["rope_type"] == "linear"
                                                              else None)
    assert config_to_dict(ours, head=True)["architectures"] == ["Gemma3ForConditionalGeneration"]


def test_refused_configs_are_named():
    from xenc_jax.hf.configs import ConfigError, config_from_dict
    text = GEMMA3_4B["text_config"]
    for change, match in (
            ({"text_config": {**text, "use_bidirectional_attention": True}}, "use_bidirectional_attention"),
            ({"text_config": {**text, "model_type": "gemma2"}}, "text_config"),
            ({"text_config": [text]}, "text_config"),
            ({"text_config": {**text, "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}}, "dynamic"),
            ({"text_config": {**text, "hidden_activation": "silu"}}, "hidden_activation"),
            ({"text_config": {**text, "no_such_switch": 1}}, r"no_such_switch.*remove these from its text_config"),
            ({"no_such_switch": 1}, "no_such_switch")):
        with pytest.raises(ConfigError, match=match):
            config_from_dict({**GEMMA3_4B, **change})
