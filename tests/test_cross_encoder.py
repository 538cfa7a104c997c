"""CrossEncoder: parity with sentence-transformers, bucketing/packing invariance, compile bounds,
and input validation."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
import transformers as tf

from tiny_hf import make_tiny_minilm
from xenc_jax.batching import BucketConfig
from xenc_jax.cross_encoder import CrossEncoder


def _real_head_model(minilm_dir, path, num_labels):
    """all-MiniLM-L6-v2's real encoder + a seeded head, saved as BertForSequenceClassification."""
    torch.manual_seed(num_labels)
    tf.BertForSequenceClassification.from_pretrained(str(minilm_dir), num_labels=num_labels).save_pretrained(str(path))
    tf.AutoTokenizer.from_pretrained(str(minilm_dir)).save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def real_pairs(data_dir):
    root = data_dir / "msmarco-dl19-subset"
    queries = [json.loads(line)["text"] for line in open(root / "queries.jsonl")][:6]
    passages = [json.loads(line)["text"] for line in open(root / "corpus.jsonl")][:400]
    passages.sort(key=len)
    # short, medium, the longest real passages (truncated at 512), and long-long pairs
    docs = passages[:3] + passages[200:203] + passages[-3:]
    pairs = [(q, d) for q in queries[:3] for d in docs]
    pairs += [(passages[-1], passages[-2]), (queries[4] + " " + passages[-3] * 3, "short answer"), ("", ""), ("q", "")]
    return pairs


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory, minilm_dir):
    """Tiny random BERT and RoBERTa with the real WordPiece tokenizer (fast to compile)."""
    out = {}
    for family in ("bert", "roberta"):
        path = tmp_path_factory.mktemp(family)
        make_tiny_minilm(family, path, minilm_dir, num_labels=1, seed=21, type_vocab_size=2,
                         max_position_embeddings=514 if family == "roberta" else 512)
        out[family] = path
    return out


@pytest.mark.parametrize("num_labels", [1, 3])
def test_scores_equal_sentence_transformers(minilm_dir, tmp_path, real_pairs, num_labels):
    from sentence_transformers import CrossEncoder as STCrossEncoder
    path = _real_head_model(minilm_dir, tmp_path, num_labels)
    ours, ref = CrossEncoder(path), STCrossEncoder(str(path), device="cpu")
    assert ours.max_length == ref.max_seq_length == 512
    np.testing.assert_array_equal(ours.num_labels, ref.num_labels)
    want = ref.predict(real_pairs, batch_size=8)
    got = ours.predict(real_pairs)
    assert got.shape == want.shape == ((len(real_pairs),) if num_labels == 1 else (len(real_pairs), 3))
    assert np.abs(got - want).max() <= 1e-4
    if num_labels == 3:
        got_sm, want_sm = ours.predict(real_pairs, apply_softmax=True), ref.predict(real_pairs, apply_softmax=True)
        assert np.abs(got_sm - want_sm).max() <= 1e-5
        assert np.allclose(got_sm.sum(1), 1.0, atol=1e-6)
    # packing gives the same scores
    packed = CrossEncoder(path, buckets=BucketConfig(pack=True)).predict(real_pairs)
    assert np.abs(packed - want).max() <= 1e-4


def test_rank_equals_sentence_transformers(minilm_dir, tmp_path, real_pairs):
    from sentence_transformers import CrossEncoder as STCrossEncoder
    path = _real_head_model(minilm_dir, tmp_path, 1)
    query, docs = real_pairs[0][0], [d for _, d in real_pairs[:9]]
    got = CrossEncoder(path).rank(query, docs, top_k=5, return_documents=True)
    want = STCrossEncoder(str(path), device="cpu").rank(query, docs, top_k=5, return_documents=True)
    assert [r["corpus_id"] for r in got] == [r["corpus_id"] for r in want]
    assert all(abs(a["score"] - b["score"]) <= 1e-4 and a["text"] == b["text"] for a, b in zip(got, want))


def test_saved_model_loads_in_sentence_transformers(tiny_dirs, tmp_path, real_pairs):
    from sentence_transformers import CrossEncoder as STCrossEncoder
    ours = CrossEncoder(tiny_dirs["bert"], max_length=128)
    ours.save(tmp_path / "saved")
    ref = STCrossEncoder(str(tmp_path / "saved"), device="cpu")
    assert ref.max_seq_length == 128
    assert np.abs(ref.predict(real_pairs) - ours.predict(real_pairs)).max() <= 1e-4


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_scores_independent_of_batching_and_packing(tiny_dirs, real_pairs, family):
    base = CrossEncoder(tiny_dirs[family])
    ref = base.predict(real_pairs)
    one_stream = CrossEncoder(tiny_dirs[family])
    one_stream._runner.streams = 1  # CPU default is 2 concurrent streams: same batches, same scores
    np.testing.assert_array_equal(one_stream.predict(real_pairs), ref)
    for buckets in (BucketConfig(batch_size=1), BucketConfig(lengths=(16, 512), batch_size=5),
                    BucketConfig(pack=True, max_segments=4, tokens_per_batch=2048),
                    BucketConfig(pack=True, lengths=(512,), max_segments=16)):
        got = CrossEncoder(tiny_dirs[family], buckets=buckets).predict(real_pairs)
        assert np.abs(got - ref).max() <= 1e-5, buckets
    # order preserved and duplicates identical
    perm = np.random.default_rng(0).permutation(len(real_pairs))
    shuffled = base.predict([real_pairs[i] for i in perm])
    assert np.abs(shuffled - ref[perm]).max() <= 1e-5
    dup = base.predict(real_pairs + real_pairs)
    np.testing.assert_array_equal(dup[: len(real_pairs)], dup[len(real_pairs):])


def test_packed_roberta_matches_pytorch(tiny_dirs, real_pairs):
    """Packing restarts RoBERTa's offset positions per pair: compare with PyTorch directly."""
    from sentence_transformers import CrossEncoder as STCrossEncoder
    ref = STCrossEncoder(str(tiny_dirs["roberta"]), device="cpu").predict(real_pairs)
    got = CrossEncoder(tiny_dirs["roberta"], buckets=BucketConfig(pack=True)).predict(real_pairs)
    assert np.abs(got - ref).max() <= 1e-4


def test_compile_count_bounded_by_buckets(tiny_dirs):
    rng = random.Random(0)
    words = "the quick brown fox jumps over a lazy dog while jax compiles every bucket once".split()
    buckets = BucketConfig(lengths=(16, 32, 64), tokens_per_batch=512)
    ce = CrossEncoder(tiny_dirs["bert"], max_length=128, buckets=buckets)
    n_shapes = len(buckets.resolve(128))
    for trial in range(6):
        pairs = [(" ".join(rng.choices(words, k=rng.randint(0, 10))),
                  " ".join(rng.choices(words, k=rng.randint(0, 120)))) for _ in range(rng.randint(1, 40))]
        ce.predict(pairs)
        assert ce.compile_count <= n_shapes
    seen = ce.compile_count
    ce.predict([("a", "b" * 3)] * 7)  # new inputs, known shapes: nothing new compiles
    assert ce.compile_count == seen
    packed = CrossEncoder(tiny_dirs["bert"], max_length=128, buckets=BucketConfig(lengths=(16, 32, 64), pack=True))
    assert packed.warmup() == n_shapes and packed.compile_count == n_shapes
    packed.predict([("x " * rng.randint(0, 60), "y") for _ in range(50)])
    assert packed.compile_count == n_shapes


def test_defaults_follow_sentence_transformers(tiny_dirs, minilm_dir):
    ce = CrossEncoder(tiny_dirs["bert"])
    assert ce.num_labels == 1 and ce.activation_name == "sigmoid"
    s = ce.predict([("a", "b")])
    assert s.shape == (1,) and 0.0 < s[0] < 1.0
    assert np.isscalar(ce.predict(("a", "b"))) or ce.predict(("a", "b")).shape == ()
    bare = CrossEncoder(minilm_dir, allow_new_head=True)  # bare encoder: a new 1-label head, as ST
    assert bare.num_labels == 1 and bare.max_length == 512


# ---- bad input ----

@pytest.fixture(scope="module")
def tiny_ce(tiny_dirs):
    return CrossEncoder(tiny_dirs["bert"], max_length=64)


def test_empty_list_returns_empty_array(tiny_ce):
    out = tiny_ce.predict([])
    assert isinstance(out, np.ndarray) and out.shape == (0,)


def test_empty_strings_are_scored(tiny_ce):
    out = tiny_ce.predict([("", ""), ("", "x")])
    assert out.shape == (2,) and np.isfinite(out).all()


@pytest.mark.parametrize("bad,match", [
    ("just one string", "single str"),
    ([("a", None)], "None"),
    ([("a", "b", "c")], "3"),
    ([("a", 3)], "int"),
    (["a", ("b", "c")], "str"),
    (None, "None"),
])
def test_bad_pairs_raise_clear_errors(tiny_ce, bad, match):
    with pytest.raises((TypeError, ValueError), match=match):
        tiny_ce.predict(bad)


def test_rank_needs_one_label(minilm_dir, tmp_path):
    ce = CrossEncoder(_real_head_model(minilm_dir, tmp_path, 3))
    with pytest.raises(ValueError, match="num_labels=1"):
        ce.rank("q", ["a", "b"])


def test_rank_many_scores_all_queries_in_one_stream(tiny_ce):
    queries = ["what is a fox", "who compiles"]
    docs = [["a fox is an animal", "jax", "dogs"], ["xla compiles", "nobody"]]
    got = tiny_ce.rank_many(queries, docs, return_documents=True)
    for q, d, res in zip(queries, docs, got):
        single = tiny_ce.rank(q, d, return_documents=True)
        assert [r["corpus_id"] for r in res] == [r["corpus_id"] for r in single]
        assert sorted(r["corpus_id"] for r in res) == list(range(len(d)))
    with pytest.raises(ValueError, match="2 queries but 1"):
        tiny_ce.rank_many(queries, docs[:1])
