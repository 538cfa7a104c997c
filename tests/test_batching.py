"""xenc_jax.batching: token ids identical to sentence-transformers 6.2, fixed-shape batches."""
from __future__ import annotations

import dataclasses
import json
import os
import zlib

import numpy as np
import pytest

from xenc_jax.batching import (Batch, BucketConfig, Encoding, make_batches, scatter_results,
                               tokenize_pairs, tokenize_texts)

CLS, PAD = 101, 0


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def tok(minilm_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_dir))


@pytest.fixture(scope="module")
def msmarco(data_dir):
    folder = data_dir / "msmarco-dl19-subset"
    queries = [json.loads(line)["text"] for line in open(folder / "queries.jsonl")]
    passages = []
    with open(folder / "corpus.jsonl") as f:
        for line in f:
            passages.append(json.loads(line)["text"])
            if len(passages) == 200:
                break
    return queries, passages


@pytest.fixture(scope="module")
def cross_encoder(minilm_dir):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(minilm_dir), num_labels=1)


@pytest.fixture(scope="module")
def sentence_transformer(minilm_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_dir))


def _st_rows(features):
    """Unpadded (input_ids, token_type_ids) per row of an ST preprocess() output."""
    ids = features["input_ids"].numpy()
    mask = features["attention_mask"].numpy().astype(bool)
    types = features.get("token_type_ids")
    types = np.zeros_like(ids) if types is None else types.numpy()
    return [(ids[i][mask[i]], types[i][mask[i]]) for i in range(len(ids))]


def _assert_same(ours, theirs):
    assert len(ours) == len(theirs)
    for i, (enc, (ids, types)) in enumerate(zip(ours, theirs)):
        assert enc.input_ids.dtype == np.int32 and enc.token_type_ids.dtype == np.int32
        np.testing.assert_array_equal(enc.input_ids, ids, err_msg=f"input_ids of example {i}")
        np.testing.assert_array_equal(enc.token_type_ids, types, err_msg=f"types of example {i}")


# ----------------------------------------------------------------------------- ST parity

def _pair_sets(queries, passages):
    long_p = [" ".join(passages[i:i + 4]) for i in range(0, 40, 4)]
    return {
        "short": [(q, p) for q, p in zip(queries[:20], passages[:20])],
        "both_long": [(long_p[i], long_p[-1 - i]) for i in range(len(long_p))],
        "first_long": [(p, q) for q, p in zip(queries, long_p)],
        "second_long": [(q, p) for q, p in zip(queries, long_p)],
        "empty": [("", passages[0]), (queries[0], ""), ("", ""), ("  ", "\t\n")],
        "whitespace": [(f"  {q}  ", f"\n{p} ") for q, p in zip(queries[:5], passages[5:10])],
    }


@pytest.mark.parametrize("max_length", [512, 128, 37])
def test_pairs_match_sentence_transformers_cross_encoder(tok, cross_encoder, msmarco, max_length):
    cross_encoder.max_seq_length = max_length  # what CrossEncoder(..., max_length=) sets
    truncated = 0
    for name, pairs in _pair_sets(*msmarco).items():
        ours = tokenize_pairs(tok, pairs, max_length)
        # CrossEncoder.predict feeds each batch through self.preprocess(batch): the same call.
        _assert_same(ours, _st_rows(cross_encoder.preprocess(pairs)))
        assert all(len(e) <= max_length for e in ours), name
        truncated += sum(len(e) == max_length for e in ours)
        if name == "empty":
            np.testing.assert_array_equal(ours[2].input_ids, [CLS, 102, 102])
    if max_length < 512:
        assert truncated >= 20  # the long sets really exercised longest_first truncation


@pytest.mark.parametrize("max_length", [256, 20])
def test_texts_match_sentence_transformer(tok, sentence_transformer, msmarco, max_length):
    queries, passages = msmarco
    texts = (queries[:10] + passages[:30] + [" ".join(passages[:6]), "", "  ", "  padded text \n"])
    sentence_transformer.max_seq_length = max_length
    ours = tokenize_texts(tok, texts, max_length)
    _assert_same(ours, _st_rows(sentence_transformer.preprocess(texts)))
    assert any(len(e) == max_length for e in ours)


def test_do_lower_case_matches_sentence_transformers(minilm_dir, tmp_path):
    # all-MiniLM is uncased already, so build a cased variant of its tokenizer: only then does
    # do_lower_case change the ids.
    from sentence_transformers.base.modules import Transformer
    from transformers import AutoTokenizer

    for name in ["config.json", "model.safetensors", "vocab.txt", "special_tokens_map.json"]:
        os.symlink(minilm_dir / name, tmp_path / name)
    for name, key in [("tokenizer.json", None), ("tokenizer_config.json", "do_lower_case")]:
        cfg = json.loads((minilm_dir / name).read_text())
        if key is None:
            cfg["normalizer"]["lowercase"] = False
        else:
            cfg[key] = False
        (tmp_path / name).write_text(json.dumps(cfg))
    cased = AutoTokenizer.from_pretrained(str(tmp_path))
    texts = ["HELLO World [SEP] ΟΔΟΣ", "İstanbul STRASSE Éclair", "already lower", ""]
    st = Transformer(str(tmp_path), do_lower_case=True, max_seq_length=64)
    ours = tokenize_texts(cased, texts, 64, do_lower_case=True)
    _assert_same(ours, _st_rows(st.preprocess(texts)))
    # The test has teeth: without lowercasing, or lowercasing the Python strings (which breaks
    # the "[SEP]" added-token match), the ids differ.
    plain = tokenize_texts(cased, texts, 64)
    assert not np.array_equal(plain[0].input_ids, ours[0].input_ids)
    naive = tokenize_texts(cased, [t.lower() for t in texts], 64)
    assert not np.array_equal(naive[0].input_ids, ours[0].input_ids)
    # The caller's tokenizer is not mutated.
    assert "Lowercase" not in str(cased.backend_tokenizer.normalizer)


def test_empty_inputs_and_string_subclasses(tok):
    assert tokenize_pairs(tok, [], 32) == []
    assert tokenize_texts(tok, [], 32) == []
    arr = np.array([["what is a cat", "a cat is an animal"]])  # rows are ndarrays of np.str_
    _assert_same(tokenize_pairs(tok, arr, 32),
                 [(e.input_ids, e.token_type_ids)
                  for e in tokenize_pairs(tok, [("what is a cat", "a cat is an animal")], 32)])
    assert len(tokenize_pairs(tok, (p for p in [("a", "b"), ("c", "d")]), 32)) == 2


# ----------------------------------------------------------------------------- bad inputs

@pytest.mark.parametrize("pairs, exc, words", [
    ("a query", TypeError, ["single str", "wrap it in a list"]),
    (("query", "passage"), TypeError, ["one pair", "[(text_a, text_b)]"]),
    ([("q", "p"), "just a string"], TypeError, ["pairs[1]", "not a (text_a, text_b) pair"]),
    ([("q", "p"), ("q", None)], TypeError, ["pairs[1][1] is None", "''"]),
    ([(None, "p")], TypeError, ["pairs[0][0] is None"]),
    ([("q", "p", "x")], ValueError, ["pairs[0] has 3 items", "exactly 2"]),
    ([("q", "p"), ("q", float("nan"))], TypeError, ["pairs[1][1]", "float", "not a str"]),
    ([("q", 3)], TypeError, ["pairs[0][1]", "int"]),
    ([None], TypeError, ["pairs[0]", "NoneType"]),
    ({"q": "p"}, TypeError, ["pairs must be a list"]),
])
def test_tokenize_pairs_rejects_bad_input(tok, pairs, exc, words):
    with pytest.raises(exc) as err:
        tokenize_pairs(tok, pairs, 32)
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize("texts, words", [
    ("one text", ["single str", "[text, ...]"]),
    (["ok", None], ["texts[1] is None"]),
    (["ok", 7], ["texts[1]", "int", "not a str"]),
    ([("q", "p")], ["texts[0]", "tokenize_pairs"]),
])
def test_tokenize_texts_rejects_bad_input(tok, texts, words):
    with pytest.raises(TypeError) as err:
        tokenize_texts(tok, texts, 32)
    for word in words:
        assert word in str(err.value)


def test_max_length_too_small_for_special_tokens(tok):
    # HF would silently skip truncation here and return 7 tokens for max_length=2.
    with pytest.raises(ValueError, match="adds 3 special tokens"):
        tokenize_pairs(tok, [("hello world", "foo bar")], 2)
    assert [len(e) for e in tokenize_pairs(tok, [("hello world", "foo bar")], 3)] == [3]
    with pytest.raises(TypeError, match="max_length must be an int"):
        tokenize_texts(tok, ["x"], None)


def test_bad_configs_and_batch_arguments():
    with pytest.raises(ValueError, match="batch_size or tokens_per_batch"):
        BucketConfig(tokens_per_batch=None)
    with pytest.raises(ValueError, match="row_multiple must be a positive int"):
        BucketConfig(row_multiple=0)
    with pytest.raises(ValueError, match="lengths entries"):
        BucketConfig(lengths=(32, -1))
    enc = [Encoding(np.arange(40, dtype=np.int32), np.zeros(40, np.int32))]
    with pytest.raises(ValueError, match=r"encodings\[0\] has 40 tokens.*max_length=32"):
        make_batches(enc, BucketConfig(), 32, PAD)
    with pytest.raises(TypeError, match="pad_token_id must be an int"):
        make_batches(enc, BucketConfig(), 64, None)
    with pytest.raises(TypeError, match=r"encodings\[0\].*tokenize_pairs"):
        make_batches([[1, 2, 3]], BucketConfig(), 64, PAD)
    with pytest.raises(ValueError, match="token_type_ids"):
        make_batches([Encoding(np.arange(4, dtype=np.int32), np.zeros(3, np.int32))],
                     BucketConfig(), 64, PAD)


# ----------------------------------------------------------------------------- batch planning

def test_resolve():
    assert BucketConfig().resolve(256) == [(256, 32), (128, 64), (85, 96), (64, 128), (51, 160),
                                           (42, 192), (32, 256)]
    # max_length is always a bucket; rows rounded up to row_multiple; at least 1 row.
    assert BucketConfig(lengths=(32, 64, 128, 256), tokens_per_batch=1000, row_multiple=8).resolve(300) == [
        (32, 32), (16, 64), (8, 128), (8, 256), (8, 300)]
    assert BucketConfig(tokens_per_batch=100).resolve(512)[-1] == (1, 512)
    assert BucketConfig(batch_size=6, row_multiple=4).resolve(40) == [(8, 32), (8, 40)]
    assert BucketConfig(lengths=[64, 32, 64]).lengths == (32, 64)
    # tails: the last batch of a bucket may also have half, a quarter... of its rows; resolve()
    # lists every shape (shortest length first, fewest rows first within a length)
    assert BucketConfig(tokens_per_batch=1024, tail_halvings=2).row_counts(192) == (5, 3, 2)
    assert BucketConfig(lengths=(64,), tokens_per_batch=1024, tail_halvings=3).resolve(128) == [
        (2, 64), (4, 64), (8, 64), (16, 64), (1, 128), (2, 128), (4, 128), (8, 128)]
    # halvings stop at row_multiple (a mesh's data-parallel size) and at 1 row
    assert BucketConfig(batch_size=8, row_multiple=4, tail_halvings=3).row_counts(32) == (8, 4)
    assert BucketConfig(batch_size=1, tail_halvings=3).resolve(32) == [(1, 32)]
    with pytest.raises(ValueError, match="tail_halvings must be an int >= 0"):
        BucketConfig(tail_halvings=-1)


def _random_encodings(rng, dist, n, max_length):
    if dist == "uniform":
        lens = rng.integers(2, max_length + 1, n)
    elif dist == "lognormal":
        lens = np.clip(rng.lognormal(3.5, 0.8, n).astype(int), 2, max_length)
    elif dist == "tiny":
        lens = rng.integers(2, 6, n)
    else:  # all at the limit
        lens = np.full(n, max_length)
    out = []
    for length in lens:
        ids = np.r_[CLS, rng.integers(1000, 30000, length - 1)].astype(np.int32)
        out.append(Encoding(ids, (rng.random(length) < 0.5).astype(np.int32)))
    return out


def _unpack(batch: Batch, segments: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Read every example back out of a batch, checking the layout invariants on the way."""
    found = {}
    rows, length = batch.input_ids.shape
    assert batch.cls_positions.shape == batch.example_ids.shape == (rows, segments)
    assert batch.input_ids.dtype == batch.attention_mask.dtype == np.int32
    assert batch.position_ids.dtype == batch.token_type_ids.dtype == np.int32
    assert batch.cls_positions.dtype == np.int32 and batch.example_ids.dtype == np.int64
    for r in range(rows):
        mask, used = batch.attention_mask[r], 0
        slots = batch.example_ids[r]
        k = int((slots >= 0).sum())
        assert (slots[:k] >= 0).all() and (slots[k:] == -1).all()  # filled slots come first
        assert (batch.cls_positions[r, k:] == 0).all()
        for s in range(k):
            cols = np.flatnonzero(mask == s + 1)
            start = batch.cls_positions[r, s]
            # Segment s+1 is one contiguous run that starts right where the previous one ended.
            assert cols[0] == start == used and (np.diff(cols) == 1).all()
            assert batch.input_ids[r, start] == CLS
            np.testing.assert_array_equal(batch.position_ids[r, cols], np.arange(len(cols)))
            found[int(slots[s])] = (batch.input_ids[r, cols], batch.token_type_ids[r, cols])
            used += len(cols)
        pad = mask == 0
        assert pad[used:].all() and not pad[:used].any()  # nothing but padding after the segments
        assert (batch.input_ids[r, pad] == PAD).all() and (batch.position_ids[r, pad] == 0).all()
        assert (batch.token_type_ids[r, pad] == 0).all()
        assert mask.max() <= segments
    return found


@pytest.mark.parametrize("dist", ["uniform", "lognormal", "tiny", "full"])
@pytest.mark.parametrize("pack", [False, True])
def test_make_batches_invariants(dist, pack):
    rng = np.random.default_rng(zlib.crc32(f"{dist}-{pack}".encode()))
    for trial in range(3):
        max_length = int(rng.choice([48, 128, 200]))
        config = BucketConfig(
            lengths=(16, 32, 64, 128), pack=pack, max_segments=int(rng.choice([2, 3, 8])),
            row_multiple=int(rng.choice([1, 2, 8])), tail_halvings=trial,
            **({"batch_size": int(rng.integers(1, 20))} if trial == 1
               else {"tokens_per_batch": int(rng.choice([256, 1000]))}))
        n = int(rng.integers(1, 300))
        encodings = _random_encodings(rng, dist, n, max_length)
        batches = make_batches(encodings, config, max_length, PAD)

        shapes = {b.input_ids.shape for b in batches}
        allowed = set(config.resolve(max_length))
        assert shapes <= allowed and len(shapes) <= len(allowed)
        for b in batches:
            assert b.input_ids.shape[0] % config.row_multiple == 0
        found = {}
        for b in batches:
            part = _unpack(b, config.segments)
            assert not set(part) & set(found)  # no example twice
            found.update(part)
        assert sorted(found) == list(range(n))  # every example once
        for i, enc in enumerate(encodings):
            np.testing.assert_array_equal(found[i][0], enc.input_ids)
            np.testing.assert_array_equal(found[i][1], enc.token_type_ids)
        # Each example (or packed row) sits in the smallest bucket that fits it, except rows
        # promoted to fill the last batch of a longer bucket (slots that would be padding).
        lengths = [x for _, x in config.resolve(max_length)]
        last_of_bucket = {b.input_ids.shape[1]: k for k, b in enumerate(batches)}
        for k, b in enumerate(batches):
            L = b.input_ids.shape[1]
            used = (b.attention_mask > 0).sum(1)
            smaller = max([x for x in lengths if x < L], default=0)
            if k != last_of_bucket[L]:
                assert (used > smaller).all()  # full batches: no padding rows, no promoted rows
            else:
                promoted = (used > 0) & (used <= smaller)
                if promoted.any() and (used == 0).any():
                    # padding is left only when rows ran out, or when the longest remaining rows
                    # form an equal-length group too big to promote whole (never split)
                    rest = [int(u) for x in batches if x.input_ids.shape[1] < L
                            for u in (x.attention_mask > 0).sum(1) if u > 0]
                    assert not rest or rest.count(max(rest)) > int((used == 0).sum())
        assert sum(b.num_examples for b in batches) == n
        # Padding rows: the rows of one bucket sit in the cheapest cover that its row counts
        # allow, so fewer padding rows than its smallest count (a whole batch without tails).
        for L in {b.input_ids.shape[1] for b in batches}:
            empty = sum(int(((b.attention_mask > 0).sum(1) == 0).sum()) for b in batches if b.input_ids.shape[1] == L)
            assert empty < min(config.row_counts(L)), (L, empty, config.row_counts(L))
        # and tails never compute more token slots than full batches would
        plain = make_batches(encodings, dataclasses.replace(config, tail_halvings=0), max_length, PAD)
        assert sum(b.padded_tokens for b in batches) <= sum(b.padded_tokens for b in plain)


def test_packing_improves_density_on_real_queries(tok, msmarco):
    queries, passages = msmarco
    encodings = tokenize_texts(tok, queries + passages, 128)  # 250 texts
    plain = make_batches(encodings, BucketConfig(tokens_per_batch=512), 128, tok.pad_token_id)
    packed = make_batches(encodings, BucketConfig(tokens_per_batch=512, pack=True), 128,
                          tok.pad_token_id)

    def density(bs):
        return sum(b.real_tokens for b in bs) / sum(b.padded_tokens for b in bs)

    assert sum(b.real_tokens for b in packed) == sum(len(e) for e in encodings)
    assert density(packed) > density(plain) and density(packed) > 0.9
    assert max(int(b.attention_mask.max()) for b in packed) > 1  # really packed
    found = {}
    for b in packed:
        found.update(_unpack(b, 8))
    for i, enc in enumerate(encodings):
        np.testing.assert_array_equal(found[i][0], enc.input_ids)


def test_distinct_shapes_bounded_across_many_inputs():
    # The compile bound: whatever the input sizes and length mixes, only resolve() shapes occur.
    rng = np.random.default_rng(7)
    config = BucketConfig(tokens_per_batch=2048, row_multiple=4)
    tails = BucketConfig(tokens_per_batch=2048, row_multiple=4, tail_halvings=3, pack=True)
    seen, seen_tails = set(), set()
    for _ in range(15):
        n = int(rng.integers(1, 400))
        encodings = _random_encodings(rng, str(rng.choice(["uniform", "lognormal", "tiny"])), n, 256)
        seen |= {b.input_ids.shape for b in make_batches(encodings, config, 256, PAD)}
        seen_tails |= {b.input_ids.shape for b in make_batches(encodings, tails, 256, PAD)}
    assert seen <= set(config.resolve(256)) and len(seen) <= len(config.resolve(256))
    assert seen_tails <= set(tails.resolve(256)) and len(tails.resolve(256)) <= 4 * len(config.resolve(256))


def test_empty_and_single():
    assert make_batches([], BucketConfig(), 64, PAD) == []
    enc = [Encoding(np.array([CLS, 5, 102], np.int32), np.zeros(3, np.int32))]
    (b,) = make_batches(enc, BucketConfig(batch_size=4), 64, PAD)
    assert b.input_ids.shape == (4, 32) and b.example_ids[:, 0].tolist() == [0, -1, -1, -1]
    assert b.real_tokens == 3 and b.padded_tokens == 128


def test_fill_rows_keeps_row_order_and_empty_rows():
    """fill_rows lays rows out in the order given; a row of 0 examples is an empty row (the
    training stream's missing slots), also as the last row, where an index past the last segment
    used to be read."""
    from xenc_jax.batching import TokenTable, fill_rows
    rng = np.random.default_rng(5)
    encodings = _random_encodings(rng, "tiny", 5, 16)
    table = TokenTable.of(encodings[:2] + [None] + encodings[2:])  # a None slot has length 0
    assert table.lens[2] == 0 and table.lens.sum() == sum(len(e) for e in encodings)
    seg_ex, counts = np.array([3, 0, 1, 4, 5]), np.array([1, 0, 2, 0, 2, 0])
    batches = fill_rows(table, seg_ex, counts, (4, 16), 2, PAD)
    assert [b.input_ids.shape for b in batches] == [(4, 16), (4, 16)]
    ids = np.concatenate([b.example_ids for b in batches])
    assert ids.tolist() == [[3, -1], [-1, -1], [0, 1], [-1, -1], [4, 5], [-1, -1], [-1, -1], [-1, -1]]
    found = {k: v for b in batches for k, v in _unpack(b, 2).items()}
    by_slot = dict(zip([0, 1, 3, 4, 5], encodings))
    assert sorted(found) == sorted(by_slot)
    for k, (got_ids, got_types) in found.items():
        np.testing.assert_array_equal(got_ids, by_slot[k].input_ids)
        np.testing.assert_array_equal(got_types, by_slot[k].token_type_ids)


@pytest.mark.parametrize("pack", [False, True])
def test_scatter_results_restores_input_order(pack):
    rng = np.random.default_rng(3)
    encodings = _random_encodings(rng, "lognormal", 257, 128)
    config = BucketConfig(tokens_per_batch=512, pack=pack, row_multiple=2)
    batches = make_batches(encodings, config, 128, PAD)
    # A fake model: score = first real token id + length of the segment, per slot, with a
    # trailing feature axis, so a wrong gather would show.
    outs = []
    for b in batches:
        rows = np.arange(b.input_ids.shape[0])[:, None]
        lens = np.stack([(b.attention_mask == s + 1).sum(1) for s in range(config.segments)], 1)
        first = b.input_ids[rows, np.minimum(b.cls_positions + 1, b.input_ids.shape[1] - 1)]
        outs.append((b, np.stack([first, lens], -1).astype(np.float32)))
    result = scatter_results(outs, len(encodings))
    expected = np.array([[e.input_ids[1], len(e)] for e in encodings], np.float32)
    np.testing.assert_array_equal(result, expected)

    with pytest.raises(ValueError, match=r"missing"):
        scatter_results(outs[1:], len(encodings))
    with pytest.raises(ValueError, match=r"repeated"):
        scatter_results(outs + outs[:1], len(encodings))
    with pytest.raises(ValueError, match=r"expected \[B, P, \.\.\.\]"):
        scatter_results([(outs[0][0], outs[0][1][:, 0, 0])], len(encodings))
    assert scatter_results([], 0).shape == (0,)


def test_unique_encodings_maps_duplicates_to_one_entry():
    from xenc_jax.batching import Encoding, unique_encodings
    mk = lambda ids, types: Encoding(np.asarray(ids, np.int32), np.asarray(types, np.int32))
    encs = [mk([1, 2, 3], [0, 0, 1]), mk([1, 2], [0, 0]), mk([1, 2, 3], [0, 0, 1]),
            mk([1, 2, 3], [0, 1, 1]), mk([1, 2], [0, 0])]
    unique, inverse = unique_encodings(encs)
    assert len(unique) == 3 and inverse.tolist() == [0, 1, 0, 2, 1]  # same ids, other types: distinct
    for e, j in zip(encs, inverse):
        np.testing.assert_array_equal(e.input_ids, unique[j].input_ids)
        np.testing.assert_array_equal(e.token_type_ids, unique[j].token_type_ids)
    assert unique_encodings([])[0] == [] and unique_encodings([])[1].shape == (0,)


# ----------------------------------------------------------------------------- small calls: tails

def _real_fraction(batches) -> float:
    return sum(b.real_tokens for b in batches) / sum(b.padded_tokens for b in batches)


def test_reranking_calls_pad_little_with_tails(tok, msmarco):
    """A reranking call (1 query x 8, 32 or 100 MS MARCO passages) in the CPU pairs layouts the
    autotune may pick. Without tails the last batch of a bucket is padded to its full row count:
    8 pairs (4 packed rows of 192) in a 4096-token batch of 21 rows are under 25% real tokens.
    Tuned batches above 1024 tokens get tails back down to about 1024 (4096: 21, 11 or 6 rows),
    and a bucket leaves fewer padding rows than its smallest tail: that call is >= 4/6 real rows
    of ~95% real tokens (0.65). Tails never compute more slots than full batches (make_batches
    keeps the cheaper plan). Deterministic: fixed data, no model."""
    from xenc_jax.autotune import Choice
    from xenc_jax.runner import default_buckets
    queries, passages = msmarco
    base = default_buckets("pairs", "cpu")
    for tokens, halvings in ((1024, 0), (2048, 1), (4096, 2)):
        tails = Choice(192, tokens, 2, "float32").buckets(base)
        assert tails.tail_halvings == halvings and tails.tokens_per_batch == tokens
        plain = BucketConfig(pack=True, pack_length=192, tokens_per_batch=tokens)
        for n in (8, 32, 100):
            enc = tokenize_pairs(tok, [(queries[n % 7], p) for p in passages[:n]], 512)
            got = _real_fraction(make_batches(enc, tails, 512, tok.pad_token_id))
            before = _real_fraction(make_batches(enc, plain, 512, tok.pad_token_id))
            assert got >= before, (tokens, n, got, before)
            if tokens == 4096 and n == 8:
                assert got >= 0.65 > 0.25 > before  # the waste this is about, and its bound


def test_tail_shapes_compile_in_warmup_and_results_stay(minilm_dir, msmarco):
    """On the real MiniLM with tails: warmup() compiles every shape resolve() lists, tails
    included, and calls of any size then compile nothing more; a small call's embeddings equal
    the ones the same texts get inside a larger call (other batches, other row counts) within
    the bi-encoder tests' fp32 tolerance (1e-5: scores may differ in rounding only)."""
    from xenc_jax import BiEncoder
    # one bucket of 64 tokens and one halving: 2 shapes, so 2 compiles of the real model
    cfg = BucketConfig(lengths=(64,), pack=True, pack_length=64, tokens_per_batch=1024, tail_halvings=1)
    assert cfg.resolve(64) == [(8, 64), (16, 64)]
    model = BiEncoder(minilm_dir, max_seq_length=64, buckets=cfg)
    assert model.warmup() == 2 and model.compile_count == 2
    queries, passages = msmarco
    texts = queries[:10] + passages[:40]
    big = model.encode(texts)
    for n in (3, 8, 20):
        assert np.abs(model.encode(texts[-n:]) - big[-n:]).max() <= 1e-5, n
    assert model.compile_count == 2
    # the small call computes fewer padding slots: 8 passages (8 rows) in a tail of 8 rows
    # instead of a full batch of 16
    enc = model.encode_texts(texts[-8:])
    got = make_batches(enc, cfg, 64, model._pad_id)
    plain = make_batches(enc, BucketConfig(lengths=(64,), pack=True, pack_length=64, tokens_per_batch=1024), 64,
                         model._pad_id)
    assert [b.shape for b in got] == [(8, 64)] and [b.shape for b in plain] == [(16, 64)]
    assert _real_fraction(got) == 2 * _real_fraction(plain) > 0.9
