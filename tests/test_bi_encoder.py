"""BiEncoder: embeddings equal to sentence-transformers (real all-MiniLM-L6-v2 and tiny models
with every pooling mode), packing invariance, save round trip, compile bounds, bad inputs, and
the published STS-B number."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from tiny_hf import make_tiny_minilm
from xenc_jax.batching import BucketConfig
from xenc_jax.bi_encoder import BiEncoder
from xenc_jax.train.evaluation import spearman

TOL = 1e-5  # fp32, fixed


@pytest.fixture(scope="module")
def sentences(data_dir):
    root = data_dir / "msmarco-dl19-subset"
    queries = [json.loads(line)["text"] for line in open(root / "queries.jsonl")][:10]
    passages = [json.loads(line)["text"] for line in open(root / "corpus.jsonl")][:200]
    passages.sort(key=len)
    long = [passages[-1] + " " + passages[-2] + " " + passages[-3], " ".join(passages[-10:])]  # > 256 tokens
    return queries + passages[:6] + passages[100:104] + passages[-4:] + long + ["", "a", "Hello, World!"]


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return BiEncoder(minilm_dir)


@pytest.fixture(scope="module")
def st_minilm(minilm_dir):
    from sentence_transformers import SentenceTransformer
    return SentenceTransformer(str(minilm_dir), device="cpu")


def test_minilm_equals_sentence_transformers(minilm, st_minilm, sentences):
    tok = minilm.tokenizer
    lengths = [len(tok(s)["input_ids"]) for s in sentences]
    assert max(lengths) > 256, "the long sentences must be truncated at 256"
    assert minilm.max_seq_length == st_minilm.max_seq_length == 256
    assert minilm.pooling_modes == ("mean",) and minilm.similarity_fn_name == "cosine"
    want = st_minilm.encode(sentences, batch_size=8)
    got = minilm.encode(sentences)
    assert got.shape == want.shape == (len(sentences), 384) and got.dtype == np.float32
    assert np.abs(got - want).max() <= TOL
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)  # Normalize module
    # a single str gives [D], as ST
    one = minilm.encode(sentences[0])
    assert one.shape == (384,) and np.abs(one - want[0]).max() <= TOL
    # similarity with the model's function (cosine)
    sim = minilm.similarity(got[:3], got[3:5])
    assert np.abs(sim - st_minilm.similarity(want[:3], want[3:5]).numpy()).max() <= TOL
    pw = minilm.similarity_pairwise(got[:3], got[3:6])
    assert np.abs(pw - st_minilm.similarity_pairwise(want[:3], want[3:6]).numpy()).max() <= TOL


def test_minilm_packed_and_prompt(minilm, st_minilm, sentences):
    packed = BiEncoder(minilm.model_dir, buckets=BucketConfig(pack=True, lengths=(64, 128, 256)))
    want = st_minilm.encode(sentences, batch_size=8)
    assert np.abs(packed.encode(sentences) - want).max() <= TOL
    # prompts are prepended text, as ST; normalize_embeddings on an already-normalized model is a no-op
    got = minilm.encode(sentences[:5], prompt="query: ", normalize_embeddings=True)
    ref = st_minilm.encode(sentences[:5], prompt="query: ", normalize_embeddings=True)
    assert np.abs(got - ref).max() <= TOL


def test_compile_count_bounded_and_no_recompiles(minilm_dir, sentences):
    model = BiEncoder(minilm_dir, buckets=BucketConfig(lengths=(32, 128), tokens_per_batch=2048))
    n_shapes = len(model.buckets.resolve(model.max_seq_length))
    assert n_shapes == 3
    model.encode(sentences)
    first = model.compile_count
    assert 1 <= first <= n_shapes
    model.encode(list(reversed(sentences)) + ["another short one"])
    model.encode(sentences[:3])
    assert model.compile_count == first <= n_shapes


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory, minilm_dir):
    """Tiny random BERT and RoBERTa encoders with the real WordPiece tokenizer."""
    out = {}
    for family in ("bert", "roberta"):
        path = tmp_path_factory.mktemp(f"tiny_{family}")
        make_tiny_minilm(family, path, minilm_dir, head=False, seed=5, type_vocab_size=2,
                         max_position_embeddings=66 if family == "roberta" else 64)
        out[family] = path
    return out


def _st_model(tiny_dir, out_dir, pooling_mode, dense=None, normalize=False, max_seq_length=48, lower=False):
    """An ST model built and saved in PyTorch: Transformer + Pooling (+ Dense) (+ Normalize)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models
    torch.manual_seed(3)
    mods = [models.Transformer(str(tiny_dir), max_seq_length=max_seq_length, do_lower_case=lower)]
    mods.append(models.Pooling(mods[0].get_embedding_dimension(), pooling_mode=pooling_mode))
    if dense:
        for act in dense:
            in_dim = mods[-1].get_embedding_dimension() if not isinstance(mods[-1], models.Dense) else mods[-1].out_features
            layer = models.Dense(in_dim, 24, activation_function=act)
            with torch.no_grad():
                layer.linear.bias.normal_(0, 0.5)
            mods.append(layer)
    if normalize:
        mods.append(models.Normalize())
    st = SentenceTransformer(modules=mods, device="cpu")
    st.save(str(out_dir))
    return SentenceTransformer(str(out_dir), device="cpu")


@pytest.mark.parametrize("mode", ["cls", "mean", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"])
def test_pooling_modes_equal_sentence_transformers(tiny_hf, tmp_path, sentences, mode):
    ref = _st_model(tiny_hf["bert"], tmp_path / "st", mode)
    want = ref.encode(sentences, batch_size=7)
    got = BiEncoder(tmp_path / "st").encode(sentences)
    assert got.shape == want.shape == (len(sentences), 32)
    assert np.abs(got - want).max() <= TOL
    # packed rows pool per segment and give the same vectors
    packed = BiEncoder(tmp_path / "st", buckets=BucketConfig(lengths=(16, 48), pack=True, max_segments=4))
    assert np.abs(packed.encode(sentences) - want).max() <= TOL


def test_dense_normalize_multi_mode_roberta(tiny_hf, tmp_path, sentences):
    """RoBERTa (position offset), two concatenated pooling modes, two Dense layers, Normalize, lowercasing."""
    ref = _st_model(tiny_hf["roberta"], tmp_path / "st", ("cls", "mean"),
                    dense=[torch.nn.Tanh(), torch.nn.Identity()], normalize=True, lower=True)
    want = ref.encode(sentences, batch_size=5)
    ours = BiEncoder(tmp_path / "st")
    assert ours.get_sentence_embedding_dimension() == 24  # (ST 6.2 bakes lowercasing into tokenizer.json)
    got = ours.encode(sentences)
    assert got.shape == want.shape == (len(sentences), 24)
    assert np.abs(got - want).max() <= TOL
    packed = BiEncoder(tmp_path / "st", buckets=BucketConfig(pack=True))
    assert np.abs(packed.encode(sentences) - want).max() <= TOL


def test_save_round_trip_loads_in_sentence_transformers(tiny_hf, tmp_path, sentences):
    from sentence_transformers import SentenceTransformer
    _st_model(tiny_hf["bert"], tmp_path / "st", "weightedmean", dense=[torch.nn.Tanh()], normalize=True)
    ours = BiEncoder(tmp_path / "st")
    ours.save(tmp_path / "saved")
    reloaded = SentenceTransformer(str(tmp_path / "saved"), device="cpu")
    assert reloaded.max_seq_length == 48 and reloaded.similarity_fn_name == "cosine"
    want = ours.encode(sentences)
    assert np.abs(reloaded.encode(sentences, batch_size=8) - want).max() <= TOL
    assert np.abs(BiEncoder(tmp_path / "saved").encode(sentences) - want).max() <= TOL


def test_plain_hf_folder_with_chosen_pooling(tiny_hf, tmp_path, sentences):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models
    t = models.Transformer(str(tiny_hf["bert"]))
    ref = SentenceTransformer(modules=[t, models.Pooling(32, pooling_mode="max")], device="cpu")
    ours = BiEncoder(tiny_hf["bert"], pooling="max")
    assert ours.max_seq_length == ref.max_seq_length == 64
    assert np.abs(ours.encode(sentences) - ref.encode(sentences)).max() <= TOL
    # saved as an ST folder, it loads in ST
    ours.save(tmp_path / "saved")
    assert np.abs(SentenceTransformer(str(tmp_path / "saved"), device="cpu").encode(sentences)
                  - ref.encode(sentences)).max() <= TOL


def test_bad_inputs(tiny_hf, tmp_path):
    model = BiEncoder(tiny_hf["bert"])
    empty = model.encode([])
    assert empty.shape == (0, 32) and empty.dtype == np.float32
    with pytest.raises(TypeError, match="None"):
        model.encode(None)
    with pytest.raises(TypeError, match=r"sentences\[1\] is int"):
        model.encode(["ok", 3])
    with pytest.raises(TypeError, match=r"sentences\[0\] is NoneType"):
        model.encode([None])
    with pytest.raises(ValueError, match="batch_size"):
        model.encode(["x"], batch_size=0)
    with pytest.raises(ValueError, match="prompt_name"):
        model.encode(["x"], prompt_name="nope")
    with pytest.raises(ValueError, match="pooling mode"):
        BiEncoder(tiny_hf["bert"], pooling="median")
    # an ST folder with a module we cannot run exactly
    folder = tmp_path / "weird"
    shutil.copytree(tiny_hf["bert"], folder)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_LSTM", "type": "sentence_transformers.models.LSTM"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32}))
    with pytest.raises(ValueError, match="unsupported module type 'sentence_transformers.models.LSTM'"):
        BiEncoder(folder)
    (folder / "modules.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        BiEncoder(folder)


def test_stsb_test_spearman_matches_published(minilm, data_dir):
    """all-MiniLM-L6-v2 cosine Spearman on STS-B test: published 0.8203."""
    s1, s2, gold = [], [], []
    with open(data_dir / "stsbenchmark" / "sts-test.csv", encoding="utf-8") as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")[:7]
            gold.append(float(cols[4]))
            s1.append(cols[5])
            s2.append(cols[6])
    assert len(gold) == 1379
    emb = minilm.encode(s1 + s2)
    cos = minilm.similarity_pairwise(emb[:len(s1)], emb[len(s1):])
    rho = spearman(cos, np.asarray(gold))
    assert abs(rho - 0.8203) <= 0.001, rho
