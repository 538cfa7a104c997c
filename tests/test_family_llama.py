"""Llama and Mistral decoders (model_type llama, mistral) on the shared decoder: parity with PyTorch
transformers per layer and at the scored last token (fp32, padded rows), packed rows equal to each
segment alone, sentence-transformers CrossEncoder (LogitScore with two tokens and with only a true
token, a 3-label ...ForSequenceClassification) and SentenceTransformer (e5-mistral-style lasttoken
with <bos>/<eos> and an instruction prompt, Llama mean pooling), save -> PyTorch, strict loading,
and dp / fsdp / tp on 8 forced CPU devices; linear rope (both config spellings, and which one HF
reads when both are there) and why dynamic NTK stays rejected.

Models: tiny seeded random ones built with transformers from the family's presets
(models/families/llama/presets.py): Llama with 6 query heads over 3 kv heads, head_dim 8 != 36 / 6,
biases on attention and MLP, Llama 3 rope scaling in all three of its bands; Mistral with GQA and a
sliding window of 7 tokens, shorter than every test row, and a tied LM head. The tokenizer is
tests/tiny_llm.py's byte-level BPE (with its Qwen3-Reranker-style chat template for rerankers).
Bounds: MODULE_TOL 1e-5 per layer and END_TOL 1e-4 end to end are the project's parity bounds
(measured ~1e-6: fp32 rounding of short sums over two layers).
"""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE_TOL = 1e-5
END_TOL = 1e-4
LENGTHS = (23, 9, 17, 1)   # every row but the last is longer than Mistral's window of 7
WINDOW = 7
CASES = {   # name -> (model_type, tiny_llm head, num_labels)
    "llama-causal": ("llama", "causal", 1),
    "llama-seqcls-3": ("llama", "seqcls", 3),
    "mistral-causal": ("mistral", "causal", 1),
    "mistral-seqcls-1": ("mistral", "seqcls", 1),
}
WORDS = "the cat a dog sees likes the red ball river friend city book near sea yes no today"


def make_model(model_type: str, path: Path, head: str = "causal", *, bos_eos: bool = False,
               padding_side: str = "right", **kwargs):
    """tiny_llm's model of the family's TINY preset (make_tiny_llm kwargs: seed, num_labels, template,
    config overrides). bos_eos: its tokenizer puts "<|im_start|> text <|im_end|>" around every text,
    as e5-mistral's adds <s> ... </s> (its lasttoken pooling reads the </s>); padding_side: saved."""
    from tiny_llm import llm_tokenizer, make_tiny_llm
    model = make_tiny_llm(f"{model_type}-{head}", path, **kwargs)
    if bos_eos or padding_side != "right":
        tok = llm_tokenizer(None, template=kwargs.get("template", "reranker"), padding_side=padding_side)
        if bos_eos:
            from tokenizers import processors
            tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
                single="<|im_start|> $A <|im_end|>", pair="<|im_start|> $A <|im_end|> <|im_start|> $B:1 <|im_end|>:1",
                special_tokens=[("<|im_start|>", 1), ("<|im_end|>", 2)])
            tok.bos_token = "<|im_start|>"
        tok.save_pretrained(str(path))
    return model


def _batch(lengths, vocab, seed=0):
    from tiny_hf import right_padded_ids
    return right_padded_ids(lengths, vocab, seed)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    pytest.importorskip("torch")
    out = {}
    for name, (model_type, head, labels) in CASES.items():
        path = tmp_path_factory.mktemp(name)
        out[name] = (path, make_model(model_type, path, head, num_labels=labels, seed=len(out)))
    return out


def test_llama3_rope_frequencies_equal_hf(models):
    """Our Llama 3 inverse frequencies equal HF's buffer (float32, same operation order; <= 1 ulp
    from torch's own float32 pow), and the preset puts one frequency in each band."""
    from xenc_jax.hf.pretrained import load_pretrained
    from xenc_jax.models.blocks import RotaryPositions
    path, ref = models["llama-causal"]
    cfg = load_pretrained(path, head=True, with_tokenizer=False).config
    ours = RotaryPositions(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling).inv_freq()
    theirs = ref.model.rotary_emb.inv_freq.numpy()
    np.testing.assert_allclose(ours, theirs, rtol=2.5e-7, atol=0)
    plain = RotaryPositions(cfg.head_dim, cfg.rope_theta).inv_freq()
    ratio = plain / ours
    assert np.isclose(ratio, 1).any() and np.isclose(ratio, 8).any() and ((ratio > 1.01) & (ratio < 7.9)).any()


def assert_matches_hf(path: Path, ref, num_labels: int, lengths=LENGTHS, relative: bool = False):
    """Each layer's output on real tokens (<= MODULE_TOL), the final norm at the scored rows and
    the score read at each row's last real token (<= END_TOL; causal LM: logit[true] -
    logit[false] or logit[true]; seq-cls: HF's pooled logits) of a saved tiny decoder vs its
    torch model `ref`, on right-padded random rows. Returns HF's raw logits.
    relative: the layer bound is MODULE_TOL times the layer's largest |value| (when above 1):
    the 1e-5 bound is fp32 rounding of unit-scale states, and Gemma's states are ~10x that
    (embeddings times sqrt(hidden), (1 + w) norms with random w ~ 1), rounding with them."""
    import jax
    import jax.numpy as jnp
    import torch

    from xenc_jax.hf.pretrained import build_module, load_pretrained
    pt = load_pretrained(path, head=True)
    cfg = pt.config
    ids, mask = _batch(lengths, cfg.vocab_size)
    with torch.no_grad():
        out = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), output_hidden_states=True)
    enc = build_module(cfg, head=False)
    enc_params = {"params": {"encoder": pt.params["encoder"]}}
    capture = functools.partial(enc.apply, mutable=["intermediates"],
                                capture_intermediates=lambda m, _: type(m).__name__ == "DecoderLayer")
    _, state = jax.jit(capture)(enc_params, jnp.asarray(ids), jnp.asarray(mask))
    real = mask.astype(bool)
    for i in range(cfg.num_layers - 1):   # HF's last hidden state is after the final norm: below
        ours, theirs = np.asarray(state["intermediates"]["encoder"][f"layer_{i}"]["__call__"][0]), \
            out.hidden_states[i + 1].numpy()
        tol = MODULE_TOL * (max(1.0, float(np.abs(theirs[real]).max())) if relative else 1.0)
        assert np.abs(ours - theirs)[real].max() <= tol, (path, i)
    rows, last = np.arange(len(lengths)), np.asarray(lengths) - 1
    h = np.asarray(jax.jit(enc.apply)(enc_params, jnp.asarray(ids), jnp.asarray(mask)))
    final = out.hidden_states[-1].numpy()[rows, last]
    tol = MODULE_TOL * (max(1.0, float(np.abs(final).max())) if relative else 1.0)
    assert np.abs(h[rows, last] - final).max() <= tol, (path, np.abs(h[rows, last] - final).max(), np.abs(final).max())
    logits = np.asarray(jax.jit(build_module(cfg, head=True).apply)({"params": pt.params}, jnp.asarray(ids),
                                                                  jnp.asarray(mask)))
    want = raw = out.logits.numpy()
    if cfg.head_kind == "lm":
        cols = want[rows, last][:, list(cfg.score_token_ids)]
        want = cols[:, :1] - cols[:, 1:] if cols.shape[1] == 2 else cols
    assert logits.shape == want.shape == (len(lengths), num_labels)
    assert np.abs(logits - want).max() <= END_TOL, path
    return raw


@pytest.mark.parametrize("name", list(CASES))
def test_layers_and_scored_position_match_hf(models, name):
    path, ref = models[name]
    assert_matches_hf(path, ref, CASES[name][2])


def assert_packed_equals_alone(path: Path, lengths=LENGTHS[:3]):
    """Segments of `lengths` tokens in one row (positions restarting, block-causal mask, windows
    measured inside each segment) score as the rows alone. Same sums in another layout: 1e-5."""
    import jax
    import jax.numpy as jnp

    from xenc_jax.hf.pretrained import build_module, load_pretrained
    pt = load_pretrained(path, head=True, with_tokenizer=False)
    ids, mask = _batch(lengths, pt.config.vocab_size, seed=1)
    apply = jax.jit(build_module(pt.config, head=True).apply)
    alone = np.asarray(apply({"params": pt.params}, jnp.asarray(ids), jnp.asarray(mask)))
    row = np.concatenate([ids[i, :n] for i, n in enumerate(lengths)])[None]
    segments = np.concatenate([np.full(n, i + 1) for i, n in enumerate(lengths)])[None]
    positions = np.concatenate([np.arange(n) for n in lengths])[None]
    starts = np.cumsum((0,) + tuple(lengths[:-1]))[None]
    packed = np.asarray(apply({"params": pt.params}, jnp.asarray(row), jnp.asarray(segments), None,
                              jnp.asarray(positions), jnp.asarray(starts)))
    assert packed.shape == (1, len(lengths), alone.shape[-1])
    assert np.abs(packed[0] - alone).max() <= MODULE_TOL


@pytest.mark.parametrize("name", ["llama-seqcls-3", "mistral-causal"])
def test_packed_row_equals_each_segment_alone(models, name):
    """Three segments of 23, 9 and 17 tokens (Mistral's window: 7) in one row."""
    assert_packed_equals_alone(models[name][0])


# ---- sentence-transformers ----

PAIRS = [
    ("is the cat here?", "yes, the cat sees the red ball."),
    ("does a dog know the way?", "no, a dog does not."),
    ("can my friend see it?", " ".join(["my friend reads a long book near the sea."] * 8)),  # cut at 96
    ("was the teacher right?", "the teacher keeps a warm coat after school."),
]


@pytest.fixture(scope="module")
def rerankers(tmp_path_factory):
    """model_type -> (ST folder, ST CrossEncoder): Llama with LogitScore(yes, no), Mistral with
    LogitScore(yes) alone (bge-reranker-v2-gemma style: the true token's logit is the score).
    Mistral's window here is 24 tokens: rows are 70-96 tokens, so it binds, while two layers
    still reach past the template's fixed suffix into the pair (with 7, every pair's last token
    would see only the suffix and all scores would be equal)."""
    pytest.importorskip("sentence_transformers")
    from tiny_llm import make_st_reranker
    out = {}
    for model_type, tokens in (("llama", "yes/no"), ("mistral", "yes")):
        root = tmp_path_factory.mktemp(f"{model_type}_rr")
        ce = make_st_reranker(root, tokens=tokens, kind=f"{model_type}-causal", seed=5,
                              prompts={"web": "Find the web passage that answers"},
                              **({"sliding_window": 24} if model_type == "mistral" else {}))
        out[model_type] = (root / "st", ce)
    return out


@pytest.mark.parametrize("model_type", ["llama", "mistral"])
def test_cross_encoder_matches_sentence_transformers(rerankers, model_type):
    """Ids equal ST's (chat template, prompt, truncation keeping the suffix) and raw scores within
    END_TOL, packed and unpacked, with a prompt by name; rank gives ST's order."""
    import torch

    from xenc_jax import CrossEncoder
    from xenc_jax.batching import BucketConfig
    path, st = rerankers[model_type]
    packed = CrossEncoder(path, max_length=96)
    unpacked = CrossEncoder(path, max_length=96, buckets=BucketConfig(pack=False, batch_size=4))
    assert packed.buckets.pack and len(packed.config.score_token_ids) == (2 if model_type == "llama" else 1)
    feats = st.preprocess(PAIRS)
    want_ids = [feats["input_ids"][r][feats["attention_mask"][r].bool()].tolist() for r in range(len(PAIRS))]
    assert [e.input_ids.tolist() for e in packed.encode_pairs(PAIRS)] == want_ids
    assert max(len(x) for x in want_ids) == 96 and min(len(x) for x in want_ids) > 24   # past the window
    want = st.predict(PAIRS, activation_fn=torch.nn.Identity())
    assert np.ptp(want) > 0.05, want   # the pairs really score differently
    for ce in (packed, unpacked):
        assert np.abs(ce.predict(PAIRS, activation_fn="identity") - want).max() <= END_TOL
    want = st.predict(PAIRS, prompt_name="web")
    assert np.abs(packed.predict(PAIRS, prompt_name="web") - want).max() <= END_TOL
    docs = [d for _, d in PAIRS]
    assert [r["corpus_id"] for r in packed.rank(PAIRS[0][0], docs)] == \
        [r["corpus_id"] for r in st.rank(PAIRS[0][0], docs)]


def test_seqcls_with_three_labels_matches_sentence_transformers(models):
    """A LlamaForSequenceClassification folder (3 labels): ST renders pairs through the template
    and reads `score` at the last token; ours too, packed."""
    import torch
    from sentence_transformers import CrossEncoder as STCrossEncoder

    from xenc_jax import CrossEncoder
    path, _ = models["llama-seqcls-3"]
    st = STCrossEncoder(str(path), max_length=96, model_kwargs={"attn_implementation": "eager"})
    want = st.predict(PAIRS, activation_fn=torch.nn.Identity())
    assert want.shape == (len(PAIRS), 3)
    assert np.abs(CrossEncoder(path, max_length=96).predict(PAIRS, activation_fn="identity") - want).max() <= END_TOL


def test_save_loads_in_pytorch_and_sentence_transformers(models, rerankers, tmp_path):
    """Our save of the 3-label seq-cls model: AutoModelForSequenceClassification loads tensors
    bit-identical to the original's and gives the same logits. Our save of the true-token-only
    Mistral reranker: ST loads the same LogitScore and scores within END_TOL."""
    import torch
    import transformers as tf
    from sentence_transformers import CrossEncoder as STCrossEncoder

    from xenc_jax import CrossEncoder
    path, ref = models["llama-seqcls-3"]
    out = CrossEncoder(path, max_length=96).save(tmp_path / "seqcls")
    again = tf.AutoModelForSequenceClassification.from_pretrained(str(out), attn_implementation="eager").eval()
    want = ref.state_dict()
    got = again.state_dict()
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    path, st = rerankers["mistral"]
    ours = CrossEncoder(path, max_length=96)
    out = ours.save(tmp_path / "rr")
    loaded = STCrossEncoder(str(out), model_kwargs={"attn_implementation": "eager"})
    assert (loaded[1].true_token_id, loaded[1].false_token_id) == (st[1].true_token_id, None)
    want = loaded.predict(PAIRS, activation_fn=torch.nn.Identity())
    assert np.abs(ours.predict(PAIRS, activation_fn="identity") - want).max() <= END_TOL


def assert_bf16_scores_close(path: Path):
    """bf16 params and bf16 compute through CrossEncoder (fp32 accumulation, fp32 scores): each
    weight and activation rounded to 8 significant bits (2^-9 relative) through two layers and the
    head moves a score by a few of those relative to the scores' scale; 2e-2 of the largest is the
    project's bf16 bound (test_family_qwen, the conformance suite), far below wrong math (a dropped
    norm: O(1)). The Llama / Mistral and Gemma 2 rerankers' check."""
    import jax

    from xenc_jax import CrossEncoder
    want = CrossEncoder(path, max_length=96).predict(PAIRS, activation_fn="identity")
    b16 = CrossEncoder(path, max_length=96, param_dtype="bfloat16", dtype="bfloat16")
    assert {x.dtype.name for x in jax.tree.leaves(b16.params)} == {"bfloat16"}
    got = b16.predict(PAIRS, activation_fn="identity")
    assert got.dtype == np.float32 and not np.array_equal(got, want)
    assert np.abs(got - want).max() <= 2e-2 * np.abs(want).max(), (path, got, want)


def bf16_rms_errors(path: Path, ref, rows: int = 96) -> tuple[float, float]:
    """(ours, PyTorch's) bf16 error of a saved tiny decoder's scores on `rows` right-padded random
    rows (LENGTHS cycled): the RMS over every score of bf16 - fp32, relative to the largest fp32
    score. Ours: bf16 params and compute (fp32 accumulation); PyTorch's: a copy of `ref` cast to
    bf16. Scores as assert_matches_hf reads them (a causal LM's at each row's last real token)."""
    import copy
    import itertools

    import jax
    import jax.numpy as jnp
    import torch

    from xenc_jax.hf.pretrained import build_module, load_pretrained
    pt = load_pretrained(path, head=True)
    cfg = pt.config
    lengths = tuple(itertools.islice(itertools.cycle(LENGTHS), rows))
    ids, mask = _batch(lengths, cfg.vocab_size)
    params16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), pt.params)
    ours = {dtype: np.asarray(jax.jit(build_module(cfg, head=True, dtype=dtype).apply)(
        {"params": p}, jnp.asarray(ids), jnp.asarray(mask)), np.float64)
        for dtype, p in ((jnp.float32, pt.params), (jnp.bfloat16, params16))}

    def hf(model):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.float().numpy()
        if cfg.head_kind != "lm":
            return logits.astype(np.float64)
        cols = logits[np.arange(rows), np.asarray(lengths) - 1][:, list(cfg.score_token_ids)].astype(np.float64)
        return cols[:, :1] - cols[:, 1:] if cols.shape[1] == 2 else cols

    theirs = hf(ref), hf(copy.deepcopy(ref).to(torch.bfloat16))
    assert np.abs(ours[jnp.float32] - theirs[0]).max() <= END_TOL * max(1.0, np.abs(theirs[0]).max())
    scale = np.abs(ours[jnp.float32]).max()
    rms = lambda d: float(np.sqrt(np.mean(d ** 2)) / scale)
    return rms(ours[jnp.bfloat16] - ours[jnp.float32]), rms(theirs[1] - theirs[0])


@pytest.mark.parametrize("model_type", ["llama", "mistral"])
def test_bf16_scores_close_to_fp32(rerankers, model_type):
    assert_bf16_scores_close(rerankers[model_type][0])


E5_PROMPTS = {"query": "Instruct: Given a query, find the passages that answer the query\nQuery: ", "document": ""}
TEXTS = [q for q, _ in PAIRS] + [d for _, d in PAIRS] + ["yes", ""]


@pytest.fixture(scope="module")
def embedders(tmp_path_factory):
    """mode -> ST folder: an e5-mistral-shaped MistralModel -> Pooling(lasttoken) -> Normalize with
    <bos>/<eos> around each text and an instruction prompt, left padded; a LlamaModel -> mean
    Pooling. Plain tokenizers (no chat template: ST 6.3 would render texts through one)."""
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    out = {}
    for mode, model_type in (("lasttoken", "mistral"), ("mean", "llama")):
        root = tmp_path_factory.mktemp(f"{model_type}_emb")
        make_model(model_type, root / "hf", "model", seed=7, template=None, bos_eos=mode == "lasttoken",
                   padding_side="left" if mode == "lasttoken" else "right")
        transformer = Transformer(str(root / "hf"), max_seq_length=48, model_kwargs={"attn_implementation": "eager"})
        modules = [transformer, Pooling(transformer.get_embedding_dimension(), pooling_mode=mode)]
        modules += [Normalize()] if mode == "lasttoken" else []
        SentenceTransformer(modules=modules, prompts=E5_PROMPTS, similarity_fn_name="cosine").save(str(root / "st"))
        out[mode] = root / "st"
    return out


@pytest.mark.parametrize("mode", ["lasttoken", "mean"])
def test_bi_encoder_matches_sentence_transformers(embedders, mode):
    """Embeddings equal ST's within END_TOL, packed and unpacked, with and without the prompt;
    texts past 48 tokens are cut where ST cuts them (the <eos> kept by the tokenizer)."""
    import dataclasses

    from sentence_transformers import SentenceTransformer

    from xenc_jax.bi_encoder import BiEncoder
    st = SentenceTransformer(str(embedders[mode]), device="cpu", local_files_only=True)
    packed = BiEncoder(embedders[mode])
    assert packed.pooling_modes == (mode,) and packed.prompts == st.prompts
    if mode == "lasttoken":
        ids = packed.tokenizer("yes")["input_ids"]
        assert ids[0] == 1 and ids[-1] == 2   # <bos> ... <eos>
    unpacked = BiEncoder(embedders[mode], buckets=dataclasses.replace(packed.buckets, pack=False))
    for prompt_name in (None, "query"):
        want = st.encode(TEXTS, prompt_name=prompt_name)
        for model in (packed, unpacked):
            got = model.encode(TEXTS, prompt_name=prompt_name)
            assert got.shape == want.shape and np.abs(got - want).max() <= END_TOL, (mode, prompt_name)


# ---- strict loading ----

def test_rejected_switches_and_tensors_are_named(models, tmp_path):
    from safetensors.numpy import load_file, save_file

    from xenc_jax import CrossEncoder
    from xenc_jax.hf.configs import ConfigError, config_from_dict
    llama = json.loads((models["llama-causal"][0] / "config.json").read_text())
    mistral = json.loads((models["mistral-causal"][0] / "config.json").read_text())
    longrope = {"rope_type": "longrope", "rope_theta": 1e4, "short_factor": [1.0] * 4, "long_factor": [2.0] * 4}
    for d, key, value, match in (
            (llama, "rope_parameters", longrope, "rope_parameters.*longrope"),
            (llama, "rope_scaling", {"rope_type": "linear", "factor": 0.5}, "linear rope with factor=0.5"),
            (llama, "rope_parameters", {"rope_type": "llama3", "rope_theta": 1e4, "factor": 8.0},
             "llama3 rope without.*low_freq_factor"),
            (llama, "sliding_window", 4, "sliding_window"),            # not a Llama switch: unknown
            (llama, "num_key_value_heads", 4, "num_key_value_heads=4"),
            (llama, "hidden_act", "gelu", "hidden_act"),
            (mistral, "layer_types", ["sliding_attention"] * 2, "layer_types"),
            (mistral, "sliding_window", 0, "sliding_window=0"),
            (mistral, "mlp_bias", True, "mlp_bias")):                   # MistralMLP has no bias switch
        with pytest.raises(ConfigError, match=match):
            config_from_dict({**d, key: value})
    cfg = config_from_dict({**mistral, "sliding_window": None})     # full attention, as HF
    assert cfg.sliding_window == 0 and all(t.half_window is None for t in cfg.layer_types())
    assert [t.half_window for t in config_from_dict(mistral).layer_types()] == [WINDOW - 1] * 2
    # a tensor the config needs (Llama's mlp_bias) missing, and one no switch asks for
    src = models["llama-causal"][0]
    tensors = load_file(str(src / "model.safetensors"))
    for name, change in (("missing", lambda t: t.pop("model.layers.1.mlp.up_proj.bias")),
                         ("unused", lambda t: t.update({"model.layers.0.self_attn.q_norm.weight": np.ones(8, np.float32)}))):
        folder = tmp_path / name
        folder.mkdir()
        for f in src.iterdir():
            if f.name != "model.safetensors":
                (folder / f.name).write_bytes(f.read_bytes())
        t = dict(tensors)
        change(t)
        save_file(t, str(folder / "model.safetensors"), metadata={"format": "pt"})
        match = "up_proj.bias" if name == "missing" else "q_norm"
        with pytest.raises(Exception, match=match):
            CrossEncoder(folder)


# ---- linear rope (position interpolation) and dynamic NTK ----

LINEAR = {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}


@pytest.fixture(scope="module")
def linear_models(tmp_path_factory):
    """model_type -> (folder, torch model) of a tiny causal LM with rope_type linear, factor 4:
    Llama's config.json as transformers 5 saves it (rope_parameters), Mistral's (window 7) rewritten
    in 4.x's spelling (top-level rope_theta, rope_scaling {"type": "linear"})."""
    pytest.importorskip("torch")
    out = {}
    for model_type in ("llama", "mistral"):
        path = tmp_path_factory.mktemp(f"{model_type}_linear")
        model = make_model(model_type, path, "causal", seed=11, rope_parameters=dict(LINEAR))
        if model_type == "mistral":
            d = json.loads((path / "config.json").read_text())
            assert d.pop("rope_parameters")["rope_type"] == "linear"
            d.update(rope_theta=LINEAR["rope_theta"], rope_scaling={"type": "linear", "factor": LINEAR["factor"]})
            (path / "config.json").write_text(json.dumps(d))
        out[model_type] = (path, model)
    return out


@pytest.mark.parametrize("model_type", ["llama", "mistral"])
def test_linear_rope_matches_hf(linear_models, model_type):
    """rope_type linear: our inverse frequencies are HF's buffer (<= 1 ulp, as the llama3 test),
    HF reads the rewritten 4.x config as the same rope, and the scores at each row's last token
    equal HF's within END_TOL (Mistral's with its window of 7). One compile per model: the layers
    are the preset models' (test_layers_and_scored_position_match_hf), only the rope differs, and
    its frequencies are compared exactly. Rows reach position 22, where the fastest frequency
    turns 22 rad unscaled and 5.5 rad scaled: HF's own model with the factor undone (its buffer
    times 4: the default rope's frequencies) scores over 100 x END_TOL away, so a reader that
    dropped the factor could not pass (measured 0.56 Llama, 1.4 Mistral; our Llama with the
    factor dropped moves its scores by 0.87)."""
    import copy

    import jax
    import jax.numpy as jnp
    import torch
    import transformers as tf

    from xenc_jax.hf.pretrained import build_module, load_pretrained
    from xenc_jax.models.blocks import LinearRopeScaling, RotaryPositions
    path, ref = linear_models[model_type]
    hf_rope = tf.AutoConfig.from_pretrained(str(path)).rope_parameters
    assert (hf_rope["rope_type"], hf_rope["factor"]) == ("linear", LINEAR["factor"])
    pt = load_pretrained(path, head=True)
    cfg = pt.config
    assert cfg.rope_scaling == LinearRopeScaling(LINEAR["factor"]) and cfg.rope_theta == LINEAR["rope_theta"]
    ours = RotaryPositions(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling).inv_freq()
    np.testing.assert_allclose(ours, ref.model.rotary_emb.inv_freq.numpy(), rtol=2.5e-7, atol=0)
    ids, mask = _batch(LENGTHS, cfg.vocab_size)
    rows, last = np.arange(len(LENGTHS)), np.asarray(LENGTHS) - 1
    cols = list(cfg.score_token_ids)
    with torch.no_grad():
        raw = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    got = np.asarray(jax.jit(build_module(cfg, head=True).apply)({"params": pt.params}, jnp.asarray(ids),
                                                                  jnp.asarray(mask)))
    want = raw[rows, last][:, cols]
    want = want[:, :1] - want[:, 1:] if len(cols) == 2 else want
    assert got.shape == want.shape and np.abs(got - want).max() <= END_TOL
    undone = copy.deepcopy(ref)
    undone.model.rotary_emb.inv_freq.mul_(LINEAR["factor"])
    np.testing.assert_allclose(undone.model.rotary_emb.inv_freq.numpy(),
                               RotaryPositions(cfg.head_dim, cfg.rope_theta).inv_freq(), rtol=2.5e-7, atol=0)
    with torch.no_grad():
        plain = undone(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    moved = np.abs(plain[rows, last][:, cols] - raw[rows, last][:, cols]).max()
    assert moved > 100 * END_TOL, moved


def test_rope_spellings_and_dynamic_read_as_transformers(models):
    """Each spelling of the rope in config.json gives the theta and scaling transformers 5.25
    reads (LlamaConfig.from_dict: what from_pretrained builds): 4.x's rope_theta + rope_scaling,
    5.x's rope_parameters, and both at once, where a non-empty rope_scaling replaces
    rope_parameters (an empty one does not). rope_type dynamic stays rejected, and the error's
    reason holds in HF: its frequencies are the default rope's while positions fit
    max_position_embeddings (128), other ones past it, and a later shorter batch still past it
    reuses the longer batch's."""
    import copy

    import torch
    import transformers as tf

    from xenc_jax.hf.configs import ConfigError, config_from_dict
    from xenc_jax.models.blocks import LinearRopeScaling, Llama3RopeScaling
    llama = json.loads((models["llama-causal"][0] / "config.json").read_text())   # rope_parameters: llama3
    base = {k: v for k, v in llama.items() if k != "rope_parameters"}
    linear2 = {"rope_type": "linear", "factor": 2.0}
    cases = [{**base, "rope_theta": 5e5, "rope_scaling": {"type": "linear", "factor": 2.0}},
             {**base, "rope_parameters": {**linear2, "rope_theta": 5e5}},
             {**llama, "rope_scaling": linear2},                  # rope_scaling wins; theta: HF's default
             {**llama, "rope_theta": 3e4, "rope_scaling": linear2},
             {**llama, "rope_scaling": {}},                       # empty: rope_parameters (llama3) stays
             base]                                                # neither: the default rope, theta 1e4
    for d in cases:
        hf = tf.LlamaConfig.from_dict(copy.deepcopy(d)).rope_parameters
        cfg = config_from_dict(d)
        assert cfg.rope_theta == hf["rope_theta"], (d, hf)
        kind = hf["rope_type"]
        want = LinearRopeScaling(hf["factor"]) if kind == "linear" else None
        if kind == "llama3":
            assert isinstance(cfg.rope_scaling, Llama3RopeScaling) and cfg.rope_scaling.factor == hf["factor"], (d, hf)
        else:
            assert kind in ("linear", "default") and cfg.rope_scaling == want, (d, hf)
    dynamic = {**base, "rope_scaling": {"type": "dynamic", "factor": 2.0}}
    with pytest.raises(ConfigError, match=r"'dynamic'.*max_position_embeddings=128 tokens.*batched together"):
        config_from_dict(dynamic)
    rotary = {t: tf.models.llama.modeling_llama.LlamaRotaryEmbedding(tf.LlamaConfig.from_dict(copy.deepcopy(d)))
              for t, d in (("dynamic", dynamic), ("default", base))}
    x = torch.zeros(1, dtype=torch.float32)
    cos = {}
    for n in (128, 200, 150):   # 150 after 200: HF keeps the frequencies the 200-token batch grew
        pos = torch.arange(n)[None]
        cos[n] = {t: r(x, pos)[0] for t, r in rotary.items()}
    assert torch.equal(cos[128]["dynamic"], cos[128]["default"])
    assert not torch.allclose(cos[200]["dynamic"], cos[200]["default"], atol=1e-3)
    assert torch.equal(cos[150]["dynamic"], cos[200]["dynamic"][:, :150])


# ---- 8 forced devices ----

def test_dp_fsdp_tp_on_8_devices_equal_one_device(rerankers, embedders):
    """Llama's 6 query heads split over model=2 while its 3 kv heads stay whole (replicated);
    Mistral's window on packed rows: each mesh equals one device within 1e-5 (forced_devices)."""
    from forced_devices import run_on_devices
    run_on_devices([__file__, str(rerankers["llama"][0]), str(embedders["lasttoken"]),
                    str(rerankers["mistral"][0]), str(embedders["mean"])], devices=8, timeout=540)


def _child(llama_ce: str, mistral_st: str, mistral_ce: str, llama_st: str) -> int:
    from forced_devices import encoders_equal_on_meshes
    both = ("dp", "fsdp", "tp")
    kw = dict(words=WORDS, n_pairs=11, lengths=(128,))
    a = encoders_equal_on_meshes("llama", llama_ce, llama_st, ce={True: both}, be={False: both}, **kw)
    b = encoders_equal_on_meshes("mistral", mistral_ce, mistral_st, ce={False: ("tp",)}, be={True: both}, **kw)
    return a or b


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "tests"))
    sys.exit(_child(*sys.argv[1:5]))
