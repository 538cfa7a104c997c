"""Qwen3 / Qwen2 decoders (model_type qwen3, qwen2): parity with PyTorch transformers per layer and
at the scored last position (fp32, padded rows, grouped-query attention) for the variants the
conformance suite does not build (its rows: Qwen2's causal LM, Qwen3's 3-label classifier with
head_dim 16; it also checks packed = unpacked, save -> PyTorch, strict loading of tensors and bf16:
tests/test_family_conformance.py), Qwen2's sliding windows (use_sliding_window, max_window_layers)
as transformers 5 reads them, sentence-transformers 6.x CrossEncoder on causal-LM rerankers (chat template, prompts, truncation with the suffix put
back, LogitScore tokens; packed and unpacked), save -> ST, and the bad inputs the issue lists.

The reference is tests/tiny_llm.py: tiny seeded random models (every weight random, q/k norms and
Qwen2's biases included), eager attention, a BPE tokenizer built in-process with a Qwen3-Reranker
style template. Bounds: MODULE_TOL 1e-5 per layer and END_TOL 1e-4 end to end are the project's
parity bounds; the measured differences are ~3e-6 (fp32 rounding of ~10-wide sums over 2 layers).
ST left-pads causal rows and gives them positions shifted by the padding; rotary attention only
sees position differences, so that changes rounding, not the math.
"""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")

from tiny_llm import PAIRS, make_st_reranker, make_tiny_llm  # noqa: E402

from xenc_jax import CrossEncoder  # noqa: E402
from xenc_jax.batching import BucketConfig  # noqa: E402
from xenc_jax.hf.configs import ConfigError, config_from_dict  # noqa: E402

MODULE_TOL = 1e-5
END_TOL = 1e-4
LENGTHS = (23, 9, 17, 1)
CASES = {   # kind, overrides: GQA everywhere (4 query heads, 2 kv heads)
    "qwen3-causal-untied-hd16": ("qwen3-causal", dict(head_dim=16, tie_word_embeddings=False)),
    "qwen3-causal-tied-bias": ("qwen3-causal", dict(attention_bias=True)),
    # a window of 5 (rows are up to 23 tokens) on layer 1 only; conformance has Qwen2 without one
    "qwen2-causal-window": ("qwen2-causal", dict(use_sliding_window=True, sliding_window=5, max_window_layers=1)),
    "qwen3-seqcls-3": ("qwen3-seqcls", dict(num_labels=3, head_dim=16)),
}
# pairs whose documents run past max_length=96 (cut, suffix restored) next to short ones
PAIRS_ALL = PAIRS + [(q, d + " and the cat likes the red ball today.") for q, d in PAIRS]


def _batch(lengths, vocab, seed=0):
    from tiny_hf import right_padded_ids
    return right_padded_ids(lengths, vocab, seed)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = {}
    for name, (kind, kw) in CASES.items():
        kw = dict(kw)
        labels = kw.pop("num_labels", 1)
        path = tmp_path_factory.mktemp(name)
        out[name] = (path, make_tiny_llm(kind, path, num_labels=labels, **kw))
    return out


@pytest.mark.parametrize("name", ["qwen3-causal-untied-hd16", "qwen3-causal-tied-bias"])   # others: conformance
def test_layers_and_scored_position_match_hf(models, name):
    """Each layer's output on real tokens (padding rows differ by construction: HF's padded
    queries see nothing) and the score read at each row's last real token."""
    import jax.numpy as jnp

    from xenc_jax.hf.pretrained import build_module, load_pretrained

    path, ref = models[name]
    pt = load_pretrained(path, head=True)
    cfg = pt.config
    ids, mask = _batch(LENGTHS, cfg.vocab_size)
    with torch.no_grad():
        out = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), output_hidden_states=True)
    enc = build_module(cfg, head=False)
    _, state = enc.apply({"params": {"encoder": pt.params["encoder"]}}, jnp.asarray(ids), jnp.asarray(mask),
                         capture_intermediates=lambda m, _: type(m).__name__ == "DecoderLayer",
                         mutable=["intermediates"])
    layers = state["intermediates"]["encoder"]
    real = mask.astype(bool)
    for i in range(cfg.num_layers):
        ours = np.asarray(layers[f"layer_{i}"]["__call__"][0])
        if i == cfg.num_layers - 1:   # HF's last hidden state is after the final norm: checked below
            continue
        hf = out.hidden_states[i + 1].numpy()
        assert np.abs(ours - hf)[real].max() <= MODULE_TOL, (name, i)
    logits = np.asarray(build_module(cfg, head=True).apply({"params": pt.params}, jnp.asarray(ids), jnp.asarray(mask)))
    last = np.asarray(LENGTHS) - 1
    ref_logits = out.logits.numpy()
    if cfg.head_kind == "lm":
        t, f = cfg.score_token_ids
        rows = ref_logits[np.arange(len(LENGTHS)), last]
        ref_logits = (rows[:, t] - rows[:, f])[:, None]
    assert logits.shape == ref_logits.shape
    assert np.abs(logits - ref_logits).max() <= END_TOL, name
    # the final norm at the scored rows (the last layer computes only them)
    final = out.hidden_states[-1].numpy()[np.arange(len(LENGTHS)), last]
    h = np.asarray(enc.apply({"params": {"encoder": pt.params["encoder"]}}, jnp.asarray(ids), jnp.asarray(mask)))
    assert np.abs(h[np.arange(len(LENGTHS)), last] - final).max() <= MODULE_TOL


@pytest.fixture(scope="module")
def reranker(tmp_path_factory):
    """(folder, ST CrossEncoder) saved by ST itself, built on first use: the default yes/no
    path, mxbai-v2-style "1"/"0", and the true token alone."""
    cache = {}

    def get(tokens):
        if tokens not in cache:
            path = tmp_path_factory.mktemp("rr")
            cache[tokens] = (path, make_st_reranker(path, tokens=tokens,
                                                    prompts={"web": "Find the web passage that answers"}))
        return cache[tokens]
    return get


@pytest.mark.parametrize("tokens", ["yes/no", "1/0", "yes"])
def test_cross_encoder_matches_sentence_transformers(reranker, tokens):
    """Ids equal ST's (chat template, prompt as system message, truncated rows end in the
    template suffix) and raw scores within END_TOL, packed and unpacked, with and without a
    prompt; rank gives ST's order; the default activation is ST's sigmoid."""
    path, st = reranker(tokens)
    folders = ["hf", "st"] if tokens == "yes/no" else ["st"]
    for folder in folders:
        packed = CrossEncoder(path / folder, max_length=96)
        unpacked = CrossEncoder(path / folder, max_length=96, buckets=BucketConfig(pack=False, batch_size=4))
        assert packed.buckets.pack and packed.activation_name == "sigmoid"
        for prompt in (None, "Judge the passage for the question"):
            feats = st.preprocess(PAIRS_ALL, prompt=prompt)
            st_ids = [feats["input_ids"][r][feats["attention_mask"][r].bool()].tolist() for r in range(len(PAIRS_ALL))]
            assert [e.input_ids.tolist() for e in packed.encode_pairs(PAIRS_ALL, prompt)] == st_ids
            assert max(len(x) for x in st_ids) == 96   # some rows were cut
            ref = st.predict(PAIRS_ALL, prompt=prompt, activation_fn=torch.nn.Identity())
            for ce in (packed, unpacked):
                got = ce.predict(PAIRS_ALL, prompt=prompt, activation_fn="identity")
                assert np.abs(got - ref).max() <= END_TOL, (tokens, folder, prompt)
        if folder == "st":   # a prompt by name, as stored in config_sentence_transformers.json
            ref = st.predict(PAIRS_ALL, prompt_name="web")
            assert np.abs(packed.predict(PAIRS_ALL, prompt_name="web") - ref).max() <= END_TOL
        q, docs = PAIRS_ALL[0][0], [d for _, d in PAIRS_ALL]
        ours = packed.rank(q, docs)
        theirs = st.rank(q, docs)
        assert [r["corpus_id"] for r in ours] == [r["corpus_id"] for r in theirs]
        assert np.abs(np.array([r["score"] for r in ours]) - [r["score"] for r in theirs]).max() <= END_TOL


def test_save_loads_in_sentence_transformers(reranker, tmp_path):
    """Our save of a "1"/"0" LogitScore reranker: ST loads it with the same tokens, template
    and scores; we load it back alike."""
    from sentence_transformers import CrossEncoder as STCrossEncoder
    path, st = reranker("1/0")
    ours = CrossEncoder(path / "st", max_length=96)
    out = ours.save(tmp_path / "saved")
    again = STCrossEncoder(str(out), model_kwargs={"attn_implementation": "eager"})
    assert (again[1].true_token_id, again[1].false_token_id) == (st[1].true_token_id, st[1].false_token_id)
    ref = again.predict(PAIRS_ALL, activation_fn=torch.nn.Identity())
    assert np.abs(ours.predict(PAIRS_ALL, activation_fn="identity") - ref).max() <= END_TOL
    assert np.abs(CrossEncoder(out).predict(PAIRS_ALL) - again.predict(PAIRS_ALL)).max() <= END_TOL


def test_seqcls_reranker_through_chat_template(models):
    """A Qwen3ForSequenceClassification folder whose tokenizer has the reranker template: ST
    formats its pairs through the template too, and reads the score head at the last token."""
    from sentence_transformers import CrossEncoder as STCrossEncoder
    path, _ = models["qwen3-seqcls-3"]
    st = STCrossEncoder(str(path), max_length=96, model_kwargs={"attn_implementation": "eager"})
    ours = CrossEncoder(path, max_length=96)
    ref = st.predict(PAIRS_ALL, activation_fn=torch.nn.Identity())
    assert ref.shape == (len(PAIRS_ALL), 3)
    assert np.abs(ours.predict(PAIRS_ALL, activation_fn="identity") - ref).max() <= END_TOL


def test_bad_inputs_have_clear_errors(tmp_path, models):
    # a chat template that cannot carry query/document
    make_tiny_llm("qwen3-causal", tmp_path / "chat", template="chat")
    with pytest.raises(ValueError, match="cannot carry a 'query'/'document' pair"):
        CrossEncoder(tmp_path / "chat", max_length=96)
    # a causal LM whose tokenizer has no "yes"/"no" and no LogitScore module
    from tokenizers import Tokenizer, models as tm, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    path, _ = models["qwen2-causal-window"]
    bare = tmp_path / "noyes"
    bare.mkdir()
    for f in ("config.json", "model.safetensors"):
        (bare / f).write_bytes((path / f).read_bytes())
    # 300 words (none of them yes/no): a real vocabulary, not one the empty-tokenizer check refuses
    words = {"<pad>": 0, "<unk>": 1, "maybe": 2, **{f"word{i}": 3 + i for i in range(297)}}
    wl = Tokenizer(tm.WordLevel(words, unk_token="<unk>"))
    wl.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=wl, pad_token="<pad>", unk_token="<unk>").save_pretrained(bare)
    with pytest.raises(ValueError, match="yes/no not in its tokenizer's vocabulary.*LogitScore"):
        CrossEncoder(bare)
    # an empty pair under a tokenizer that adds no special tokens has no tokens at all: ST would
    # score an all-padding row (a pad's logits); here it is an error naming the pair (no compile)
    make_tiny_llm("qwen3-seqcls", tmp_path / "plain", template=None)
    plain = CrossEncoder(tmp_path / "plain")
    with pytest.raises(ValueError, match=r"pairs\[1\] \(\('', ''\)\) tokenizes to no tokens.*drop the pair"):
        plain.predict([("a query", "a passage"), ("", "")])
    # rank / rank_many name it by the caller's own arguments, not by the pairs list they build
    with pytest.raises(ValueError, match=r"^\(query, documents\[2\]\) \(\('', ''\)\) tokenizes to no tokens") as e:
        plain.rank("", ["a passage", "another", ""])
    assert e.value.index == 2
    with pytest.raises(ValueError, match=r"^\(queries\[2\], documents\[2\]\[1\]\) \(\('', ''\)\) tokenizes to no"):
        plain.rank_many(["q", "r", ""], [["a"], [], ["b", ""]])   # pair 2 of the flattened list
    # batch-dependent rope scaling we do not implement, both spellings (the fixed types: test_rope_configs)
    d = json.loads((path / "config.json").read_text())
    for key, value in (("rope_parameters", {"rope_type": "longrope", "rope_theta": 1e4, "short_factor": [1.0] * 4,
                                            "long_factor": [2.0] * 4}),
                       ("rope_scaling", {"rope_type": "dynamic", "factor": 2.0})):
        with pytest.raises(ConfigError, match=key):
            config_from_dict({**d, key: value})
    with pytest.raises(ConfigError, match="use_sliding_window=true with sliding_window=0"):
        config_from_dict({**d, "use_sliding_window": True, "sliding_window": 0})


def test_lm_head_runs_only_on_score_columns(models):
    """The causal scorer's compiled program never forms [.., vocab] logits: only the two
    token columns are taken from the LM head (issue: one vocab row per pair, never the whole
    sequence). Checked on the jaxpr: no dot_general output has the vocab as its last axis."""
    import jax
    import jax.numpy as jnp

    from xenc_jax.hf.pretrained import build_module, load_pretrained
    path, _ = models["qwen3-causal-untied-hd16"]
    pt = load_pretrained(path, head=True)
    ids, mask = _batch(LENGTHS, pt.config.vocab_size)
    mod = build_module(pt.config, head=True)
    jaxpr = jax.make_jaxpr(lambda p: mod.apply({"params": p}, jnp.asarray(ids), jnp.asarray(mask)))(pt.params)
    outs = [v.aval.shape for e in jaxpr.eqns if e.primitive.name == "dot_general" for v in e.outvars]
    assert outs and not any(s[-1] == pt.config.vocab_size for s in outs)


def test_bf16_params_score_close_to_fp32(reranker):
    """param_dtype="bfloat16" stores every param in bf16 (8 significant bits: each weight rounded
    by up to 2^-9 relative). Through two layers and the head that moves a logit by a few of those
    relative to the logits' scale; 2e-2 of the largest is ~10x that, the bf16 bound of
    test_family_training, and far below wrong math (a dropped norm or bias moves scores by O(1))."""
    path, _ = reranker("yes/no")
    f32 = CrossEncoder(path / "st", max_length=96)
    b16 = CrossEncoder(path / "st", max_length=96, param_dtype="bfloat16")
    assert {x.dtype for x in jax.tree.leaves(b16.params)} == {jnp.dtype(jnp.bfloat16)}
    want = f32.predict(PAIRS_ALL, activation_fn="identity")
    got = b16.predict(PAIRS_ALL, activation_fn="identity")
    assert got.dtype == np.float32
    assert np.abs(got - want).max() <= 2e-2 * np.abs(want).max(), (got, want)


def test_qwen2_sliding_window_matches_hf(models):
    """use_sliding_window with a window of 5 (shorter than rows of 23 and 17 tokens) from layer
    max_window_layers=1 on: HF's config makes layer 1 'sliding_attention' and masks its keys 5 or
    more tokens back in eager attention too. Per layer and end to end against PyTorch (the
    llama file's bounds; packed rows with windows: Mistral's, the same layer kind), and the
    window binds: without it HF's logits on real tokens move by far more than the bound. Then
    configs as released ones write them: each layer's window as transformers' Qwen2Config
    derives it."""
    import torch
    from test_family_llama import assert_matches_hf

    from xenc_jax.hf.configs import config_from_dict
    tmp_path, ref = models["qwen2-causal-window"]
    assert ref.config.layer_types == ["full_attention", "sliding_attention"]
    cfg = config_from_dict(json.loads((tmp_path / "config.json").read_text()))
    assert [k.half_window for k in cfg.layer_types()] == [None, 4]
    raw = assert_matches_hf(tmp_path, ref, 1)
    ids, mask = _batch(LENGTHS, cfg.vocab_size)
    unwindowed = type(ref).from_pretrained(str(tmp_path), layer_types=["full_attention"] * 2,
                                           attn_implementation="eager").eval()   # the same weights
    with torch.no_grad():
        full = unwindowed(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    assert np.abs(full - raw)[mask.astype(bool)].max() > 100 * END_TOL

    # Qwen2-1.5B writes a window with use_sliding_window false (no layer slides); without
    # layer_types, layers >= max_window_layers slide when it is on
    import transformers
    d = json.loads((tmp_path / "config.json").read_text())
    del d["layer_types"]
    for over, want in (({"use_sliding_window": False, "sliding_window": 32768, "max_window_layers": 21}, [None, None]),
                       ({"use_sliding_window": True, "sliding_window": 7, "max_window_layers": 1}, [None, 6])):
        hf = transformers.Qwen2Config(**{**d, **over})
        hf_windows = [hf.sliding_window - 1 if t == "sliding_attention" else None for t in hf.layer_types]
        assert [k.half_window for k in config_from_dict({**d, **over}).layer_types()] == hf_windows == want
    bad = {**d, "use_sliding_window": False, "layer_types": ["full_attention", "sliding_attention"]}
    with pytest.raises(ConfigError, match="'sliding_attention' layers in layer_types but no window"):
        config_from_dict(bad)
    with pytest.raises(ConfigError, match="layer_types"):
        config_from_dict({**d, "layer_types": ["full_attention"]})
