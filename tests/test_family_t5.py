"""T5 encoder (model_type t5 / mt5, T5EncoderModel as sentence-transformers loads GTR / sentence-T5):
parity with PyTorch transformers per layer and end to end for v1.0 (ReLU) and v1.1 (gated-GELU),
packed rows equal to each segment alone, a GTR-shaped SentenceTransformer folder (T5 encoder ->
mean Pooling -> Dense without bias, identity -> Normalize) on real MS MARCO text, save -> ST /
PyTorch, strict loading (tied / separate token tables, a missing tensor, rejected switches), and
dp / fsdp / tp on 8 forced CPU devices.

Models: tiny seeded random T5EncoderModels from the family's TINY preset
(models/families/t5/presets.py): 3 heads of d_kv 8 (heads * d_kv = 24 != d_model 32), 8 relative
buckets with max distance 16 while rows are up to 23 tokens (log-spaced and clipped buckets occur).
The tokenizer: a SentencePiece-style Unigram model trained here on 400 real MS MARCO passages
(tokenizers library; Metaspace, `</s>` appended by the post-processor as T5's, pad 0, eos 1, unk 2)
saved as a T5TokenizerFast folder (transformers adds T5's 100 <extra_id_*> tokens, as in real T5).
Bounds: MODULE_TOL 1e-5 per layer and END_TOL 1e-4 end to end are the project's parity bounds
(measured <= 9e-6 per layer: fp32 rounding; T5's scores are unscaled, so hidden values are large).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE_TOL = 1e-5
END_TOL = 1e-4
LENGTHS = (23, 9, 17, 1)   # longer than max_distance 16: every kind of bucket
VERSIONS = {"v1.0": "relu", "v1.1": "gated-gelu"}
WORDS = "the cat a dog sees likes the red ball river friend city book near sea yes no today"


def make_t5(path: Path, seed: int, **overrides):
    """A seeded random T5EncoderModel of the TINY preset (eager attention), saved to `path`."""
    import torch
    import transformers as tf
    from tiny_hf import randomize_, tiny_config
    torch.manual_seed(seed)
    cfg = tiny_config(overrides.pop("model_type", "t5"), **overrides)
    cls = tf.MT5EncoderModel if cfg.model_type == "mt5" else tf.T5EncoderModel
    model = cls._from_config(cfg, attn_implementation="eager")
    randomize_(model, seed)
    model.eval()
    model.save_pretrained(str(path))
    return model


def _batch(lengths, vocab, seed=0):
    from tiny_hf import right_padded_ids
    return right_padded_ids(lengths, vocab, seed)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    pytest.importorskip("torch")
    out = {}
    for seed, (name, proj) in enumerate(VERSIONS.items()):
        path = tmp_path_factory.mktemp(name)
        out[name] = (path, make_t5(path, seed, feed_forward_proj=proj))
    return out


def test_bucket_table_equals_torch():
    """Our host bucket table equals HF T5Attention._relative_position_bucket (bidirectional) for the
    TINY setting and T5's default (32 buckets, max distance 128), past max_distance."""
    import torch
    from transformers.models.t5.modeling_t5 import T5Attention

    from xenc_jax.models.blocks import relative_position_buckets
    for buckets, distance, d in ((8, 16, 300), (32, 128, 4100)):
        want = T5Attention._relative_position_bucket(torch.arange(-d, d + 1), True, buckets, distance).numpy()
        np.testing.assert_array_equal(relative_position_buckets(d, buckets, distance), want)


@pytest.mark.parametrize("name", list(VERSIONS))
def test_layers_and_last_hidden_state_match_hf(models, name):
    """HF's hidden_states are (embeddings, block 0 .. block n-2 outputs, final-normed last state):
    each against ours per layer (1e-5), and the whole last hidden state, padding rows included
    (a padding query attends every real key in both), end to end (1e-4)."""
    import jax
    import jax.numpy as jnp
    import torch

    from xenc_jax.hf.pretrained import load_pretrained
    path, ref = models[name]
    pt = load_pretrained(path, head=False, with_tokenizer=False)
    cfg = pt.config
    assert (cfg.head_dim, cfg.num_heads, cfg.hidden_size) == (8, 3, 32)
    assert cfg.gated_mlp == (name == "v1.1") and cfg.hidden_act == ("gelu_new" if name == "v1.1" else "relu")
    ids, mask = _batch(LENGTHS, cfg.vocab_size)
    with torch.no_grad():
        out = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), output_hidden_states=True)
    assert len(out.hidden_states) == cfg.num_layers + 1
    capture = lambda m, _: type(m).__name__ in ("PreNormLayer", "Embed")
    h, state = jax.jit(lambda p, i, m: pt.module().apply(p, i, m, capture_intermediates=capture,
                                                         mutable=["intermediates"]))(
        {"params": pt.params}, jnp.asarray(ids), jnp.asarray(mask))
    inter = state["intermediates"]["encoder"]
    emb = np.asarray(inter["word"]["__call__"][0])
    assert np.abs(emb - out.hidden_states[0].numpy()).max() == 0.0   # a table lookup
    for i in range(cfg.num_layers - 1):
        got = np.asarray(inter[f"layer_{i}"]["__call__"][0])
        assert np.abs(got - out.hidden_states[i + 1].numpy()).max() <= MODULE_TOL, (name, i)
    assert np.abs(np.asarray(h) - out.last_hidden_state.numpy()).max() <= END_TOL


@pytest.mark.parametrize("name", list(VERSIONS))
def test_training_dropouts_sit_where_hf_puts_them(models, name):
    """Training mode (dropout_rate 0.1): each layer drops the same tensors as HF's T5Block, by
    their widths: the feed-forward's inner activation [.., d_ff] once (T5DenseActDense /
    T5DenseGatedActDense: between the activation and wo; v1.0's was missing) and the attention's
    and feed-forward's outputs [.., d_model] (T5LayerFF's was missing in both versions; HF's
    functional dropout on attention probabilities is not a module: left out on both sides).
    Forward hooks on HF's nn.Dropout modules (rows of 23 tokens: no other width) vs flax's
    captured nn.Dropout outputs; inference (deterministic) is unchanged, checked above."""
    import dataclasses

    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import torch

    from xenc_jax.hf.pretrained import build_module, load_pretrained
    path, ref = models[name]
    pt = load_pretrained(path, head=False, with_tokenizer=False)
    cfg = dataclasses.replace(pt.config, hidden_dropout=0.1, attention_dropout=0.1)
    ids, mask = _batch(LENGTHS[:2], cfg.vocab_size)
    d_ff, d_model = ref.config.d_ff, ref.config.d_model
    widths = (d_ff, d_model)
    hf_seen = []
    block = ref.encoder.block[0]
    hooks = [m.register_forward_hook(lambda _m, _i, out: hf_seen.append(out.shape[-1]))
             for m in block.modules() if isinstance(m, torch.nn.Dropout)]
    try:
        block.train()
        with torch.no_grad():
            ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    finally:
        for h in hooks:
            h.remove()
        block.eval()
    module = build_module(cfg, head=False)   # traced for shapes only (eval_shape): nothing is compiled
    _, state = jax.eval_shape(lambda p: module.apply(
        {"params": p}, jnp.asarray(ids), jnp.asarray(mask), deterministic=False,
        rngs={"dropout": jax.random.key(0)}, capture_intermediates=lambda m, _: isinstance(m, nn.Dropout),
        mutable=["intermediates"]), pt.params)
    ours = [leaf.shape[-1] for leaf in jax.tree.leaves(state["intermediates"]["encoder"]["layer_0"])]
    assert sorted(w for w in ours if w in widths) == sorted(w for w in hf_seen if w in widths) == \
        sorted([d_ff, d_model, d_model]), (ours, hf_seen)


def test_packed_row_equals_each_segment_alone(models):
    """Three segments of 23, 9 and 17 tokens in one row (segment mask, positions restarting, so the
    relative bias is measured inside each segment) equal the three rows alone; also when only the
    segments' first rows are asked for (the last layer computes those rows only)."""
    import jax
    import jax.numpy as jnp

    from xenc_jax.hf.pretrained import load_pretrained
    path, _ = models["v1.1"]
    pt = load_pretrained(path, head=False, with_tokenizer=False)
    lengths = LENGTHS[:3]
    ids, mask = _batch(lengths, pt.config.vocab_size, seed=1)
    apply = jax.jit(pt.module().apply)
    alone = np.asarray(apply({"params": pt.params}, jnp.asarray(ids), jnp.asarray(mask)))
    row = np.concatenate([ids[i, :n] for i, n in enumerate(lengths)])[None]
    segments = np.concatenate([np.full(n, i + 1) for i, n in enumerate(lengths)])[None]
    positions = np.concatenate([np.arange(n) for n in lengths])[None]
    packed = np.asarray(apply({"params": pt.params}, jnp.asarray(row), jnp.asarray(segments), None,
                              jnp.asarray(positions)))
    starts = np.cumsum((0,) + lengths[:-1])
    for i, n in enumerate(lengths):
        assert np.abs(packed[0, starts[i]:starts[i] + n] - alone[i, :n]).max() <= MODULE_TOL, i
    from xenc_jax.models.families.t5 import T5Encoder
    rows = jax.jit(T5Encoder(pt.config).apply, static_argnums=5)(
        {"params": pt.params["encoder"]}, jnp.asarray(row), jnp.asarray(segments), None, jnp.asarray(positions), True,
        jnp.asarray(starts[None]))
    assert rows.shape == (1, 3, 32)
    assert np.abs(np.asarray(rows)[0] - alone[:, 0]).max() <= MODULE_TOL


# ---- sentence-transformers: a GTR-shaped folder on real text ----

def t5_tokenizer(data_dir: Path, out: Path):
    """A T5-style SentencePiece Unigram tokenizer trained on 400 real MS MARCO passages, saved as a
    T5TokenizerFast folder; returns it as AutoTokenizer loads it."""
    import transformers as tf
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    with open(data_dir / "msmarco-dl19-subset" / "corpus.jsonl", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for _, line in zip(range(400), f)]
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(" {2,}", " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.train_from_iterator(texts, trainers.UnigramTrainer(vocab_size=600, special_tokens=["<pad>", "</s>", "<unk>"],
                                                           unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    assert [tok.token_to_id(t) for t in ("<pad>", "</s>", "<unk>")] == [0, 1, 2]
    fast = tf.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                      model_max_length=512)
    fast.save_pretrained(str(out))
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    (out / "tokenizer_config.json").write_text(json.dumps({**cfg, "tokenizer_class": "T5TokenizerFast"}))
    (out / "config.json").write_text(json.dumps({"model_type": "t5"}))   # replaced by the model's
    loaded = tf.AutoTokenizer.from_pretrained(str(out))
    assert type(loaded).__name__ == "T5Tokenizer"
    loaded.save_pretrained(str(out))   # as T5Tokenizer writes it (its <extra_id_*> tokens included)
    return loaded


@pytest.fixture(scope="module")
def gtr(tmp_path_factory, data_dir):
    """(ST folder, texts): T5 v1.1 encoder -> mean Pooling -> Dense(32 -> 24, no bias, Identity) ->
    Normalize, max_seq_length 48, 4 heads of d_kv 6 (tp can split them; still heads * d_kv != d_model)."""
    pytest.importorskip("sentence_transformers")
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
    root = tmp_path_factory.mktemp("gtr")
    tok = t5_tokenizer(data_dir, root / "hf")
    make_t5(root / "hf", 3, feed_forward_proj="gated-gelu", vocab_size=len(tok) + 28, num_heads=4, d_kv=6, d_ff=40)
    transformer = Transformer(str(root / "hf"), max_seq_length=48, model_kwargs={"attn_implementation": "eager"})
    torch.manual_seed(4)
    dense = Dense(32, 24, bias=False, activation_function=torch.nn.Identity())
    st = SentenceTransformer(modules=[transformer, Pooling(32, pooling_mode="mean"), dense, Normalize()],
                             similarity_fn_name="cosine")
    st.save(str(root / "st"))
    with open(data_dir / "msmarco-dl19-subset" / "queries.jsonl", encoding="utf-8") as f:
        queries = [json.loads(line)["text"] for _, line in zip(range(6), f)]
    with open(data_dir / "msmarco-dl19-subset" / "corpus.jsonl", encoding="utf-8") as f:
        passages = [json.loads(line)["text"] for line in list(f)[4000:4006]]   # not in the tokenizer's text
    return root / "st", queries + passages + ["", "x"]


def test_bi_encoder_matches_sentence_transformers(gtr):
    """Ids equal ST's (</s> appended, passages cut at 48 with </s> kept) and embeddings within
    END_TOL, packed and unpacked."""
    import dataclasses

    from sentence_transformers import SentenceTransformer

    from xenc_jax.bi_encoder import BiEncoder
    path, texts = gtr
    st = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    assert type(st[0].auto_model).__name__ == "T5EncoderModel"
    packed = BiEncoder(path)
    feats = st.tokenize(texts)
    want_ids = [feats["input_ids"][r][feats["attention_mask"][r].bool()].tolist() for r in range(len(texts))]
    got_ids = [packed.tokenizer(t, truncation=True, max_length=48)["input_ids"] for t in texts]
    assert got_ids == want_ids and max(map(len, want_ids)) == 48 and all(i[-1] == 1 for i in want_ids)
    unpacked = BiEncoder(path, buckets=dataclasses.replace(packed.buckets, pack=False))
    want = st.encode(texts)
    assert want.shape == (len(texts), 24)
    for model in (packed, unpacked):
        got = model.encode(texts)
        assert got.shape == want.shape and np.abs(got - want).max() <= END_TOL


def test_bi_encoder_bf16_close_to_fp32(gtr):
    """bf16 params and compute (fp32 accumulation, norm statistics and the relative bias in fp32;
    T5's unscaled scores and large hidden values included), the embeddings still fp32 and
    unit-norm: within 2e-2 of the fp32 ones, test_family_qwen_embed's bound on unit vectors (~10x
    what bf16 moves them through a few layers, far below a wrong bias or mask: O(1)). Measured
    1.0e-2; sentence-transformers' own bf16 (the same folder cast) 1.7e-2."""
    import jax

    from xenc_jax.bi_encoder import BiEncoder
    path, texts = gtr
    want = BiEncoder(path).encode(texts)
    b16 = BiEncoder(path, param_dtype="bfloat16", dtype="bfloat16")
    assert {x.dtype.name for x in jax.tree.leaves(b16.params["encoder"])} == {"bfloat16"}
    got = b16.encode(texts)
    assert got.dtype == np.float32 and not np.array_equal(got, want)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert np.abs(got - want).max() <= 2e-2, np.abs(got - want).max()


def test_save_loads_in_sentence_transformers_and_pytorch(gtr, tmp_path):
    """Our save: ST loads the same modules and embeds within END_TOL of ours; T5EncoderModel loads
    the saved weights bit-identical to the original's (the token table saved as encoder.embed_tokens)."""
    import torch
    import transformers as tf
    from sentence_transformers import SentenceTransformer

    from xenc_jax.bi_encoder import BiEncoder
    path, texts = gtr
    ours = BiEncoder(path)
    out = ours.save(tmp_path / "saved")
    st = SentenceTransformer(str(out), device="cpu", local_files_only=True)
    assert np.abs(st.encode(texts) - ours.encode(texts)).max() <= END_TOL
    assert json.loads((out / "config.json").read_text())["architectures"] == ["T5EncoderModel"]
    got = tf.T5EncoderModel.from_pretrained(str(out)).state_dict()
    want = tf.T5EncoderModel.from_pretrained(str(path)).state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)


# ---- strict loading ----

def _copy_with(src: Path, dst: Path, change) -> Path:
    from safetensors.numpy import load_file, save_file
    dst.mkdir()
    for f in src.iterdir():
        if f.name != "model.safetensors":
            (dst / f.name).write_bytes(f.read_bytes())
    tensors = load_file(str(src / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def test_token_table_tied_or_separate_as_hf(models, tmp_path):
    """HF saves the table once as shared.weight; a checkpoint may hold encoder.embed_tokens.weight
    alone, or both with different values (HF's encoder then reads embed_tokens): each gives HF's
    last hidden state. mT5 (same math, own class names) loads the same weights."""
    import jax
    import jax.numpy as jnp
    import torch
    import transformers as tf

    from xenc_jax.hf.pretrained import load_pretrained
    src, _ = models["v1.0"]
    ids, mask = _batch(LENGTHS, 120, seed=2)
    cases = {"shared only": src,
             "embed_tokens only": _copy_with(src, tmp_path / "enc", lambda t: t.update(
                 {"encoder.embed_tokens.weight": t.pop("shared.weight")})),
             "both, different": _copy_with(src, tmp_path / "both", lambda t: t.update(
                 {"encoder.embed_tokens.weight": t["shared.weight"] * 2}))}
    for name, folder in cases.items():
        ref = tf.T5EncoderModel.from_pretrained(str(folder)).eval()
        with torch.no_grad():
            want = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
        pt = load_pretrained(folder, head=False, with_tokenizer=False)
        got = np.asarray(jax.jit(pt.module().apply)({"params": pt.params}, jnp.asarray(ids), jnp.asarray(mask)))
        assert np.abs(got - want).max() <= END_TOL, name
    mt5 = tmp_path / "mt5"
    make_t5(mt5, 0, model_type="mt5", feed_forward_proj="relu")
    a, b = (load_pretrained(f, head=False, with_tokenizer=False) for f in (mt5, src))
    assert a.config.family == "mt5" and jax.tree.structure(a.params) == jax.tree.structure(b.params)
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)))


def test_rejected_switches_and_tensors_are_named(models, tmp_path):
    from xenc_jax.hf.configs import ConfigError, config_from_dict
    from xenc_jax.hf.pretrained import load_pretrained
    from xenc_jax.hf.weights import WeightsError
    src, _ = models["v1.1"]
    d = json.loads((src / "config.json").read_text())
    for key, value, match in (
            ("is_decoder", True, "is_decoder"),
            ("feed_forward_proj", "swiglu-gelu", "feed_forward_proj='swiglu-gelu'"),
            ("feed_forward_proj", "gated-gelu-x", "feed_forward_proj"),
            ("dense_act_fn", "quick_gelu", "dense_act_fn='quick_gelu'"),
            ("relative_attention_num_buckets", 2, "relative_attention_num_buckets=2"),
            ("relative_attention_max_distance", 2, "relative_attention_max_distance=2"),
            ("use_rotary", True, "use_rotary")):                    # an unknown key
        with pytest.raises(ConfigError, match=match):
            config_from_dict({**d, key: value})
    del d["dense_act_fn"]
    assert config_from_dict(d).hidden_act == "gelu_new"          # "gated-gelu" means the tanh GELU
    assert config_from_dict({**d, "feed_forward_proj": "gated-silu", "is_gated_act": True}).hidden_act == "silu"
    missing = _copy_with(src, tmp_path / "missing",
                         lambda t: t.pop("encoder.block.1.layer.1.DenseReluDense.wi_1.weight"))
    with pytest.raises(WeightsError, match=r"encoder\.block\.1\.layer\.1\.DenseReluDense\.wi_1\.weight"):
        load_pretrained(missing, head=False, with_tokenizer=False)
    plain = _copy_with(src, tmp_path / "plain", lambda t: t.update(
        {"encoder.block.0.layer.1.DenseReluDense.wi.weight": t["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"]}))
    with pytest.raises(WeightsError, match=r"DenseReluDense\.wi\.weight"):   # a v1.0 tensor in a gated model
        load_pretrained(plain, head=False, with_tokenizer=False)
    with pytest.raises(ValueError, match="encoders only"):                   # no classification head here
        load_pretrained(src, head=True, with_tokenizer=False)


# ---- 8 forced devices ----

def test_dp_fsdp_tp_on_8_devices_equal_one_device(gtr):
    """The GTR-shaped bi-encoder (4 heads split over model=2 under tp) on packed rows: each mesh
    equals one device within 1e-5 (forced_devices.encoders_equal_on_meshes, bi-encoder only)."""
    from forced_devices import run_on_devices
    run_on_devices([__file__, str(gtr[0])], devices=8, timeout=540)


def _child(st_dir: str) -> int:
    from forced_devices import encoders_equal_on_meshes
    return encoders_equal_on_meshes("t5", st_dir, st_dir, words=WORDS, n_pairs=11, lengths=(64,), ce={},
                                    be={True: ("dp", "fsdp", "tp")})


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "tests"))
    sys.exit(_child(sys.argv[1]))
