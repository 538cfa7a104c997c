"""Non-finite numbers never become results: embeddings given to search and mining are refused
with the first bad row, and a NaN / inf that our own model computes (a float16/bfloat16 overflow,
a broken checkpoint) stops predict, rank, encode and the streamed CLI with the input that caused
it, instead of a NaN score, a NaN line or a NaN ranked somewhere in a top-k."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from xenc_jax import search
from xenc_jax.cli import main
from xenc_jax.runner import NonFiniteOutput, check_outputs
from xenc_jax.search import corpus_blocks, pairwise_similarity, search_blocks, semantic_search, similarity

BAD_WORD = "zebra"  # one token of MiniLM's vocabulary, its embedding row set to inf below


# ----------------------------------------------------------------------------- the top-k


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the two-stage top-k runs on XLA:CPU only")
def test_two_stage_top_k_equals_lax_top_k_with_infinities():
    """search._top_k (group maxima, then top_k of the chosen groups) against lax.top_k on tiles
    holding -inf (padding) and +inf: the same values and the same indices, ties by index. NaN is
    left out on purpose: lax.top_k ranks it first while XLA:CPU's max-reduce drops it, so the two
    differ there; no NaN score can reach either (the inputs are checked against
    search._SQ_NORM_LIMIT, test_the_norm_limit_keeps_every_score_finite_and_is_enforced)."""
    rng = np.random.default_rng(0)
    q, b, k = 4, 1024, 4   # 64 groups of 16 >= 4k: the two-stage path, not the lax.top_k fallback
    g = 1 << round(np.log2(b // k) / 2)
    assert b % g == 0 and b // g >= 4 * k and g >= 4
    tile = rng.standard_normal((q, b)).astype(np.float32)
    tile[:, 900:] = -np.inf                       # a padded tail
    tile[1, [7, 300, 301]] = np.inf               # +inf in two groups: ties by index
    tile[2, [5, 640]] = -np.inf                   # -inf among real scores
    tile[3, :] = -np.inf                          # all padding: k ties, lowest indices first
    tile[3, [1000, 17]] = np.inf
    want_s, want_i = lax.top_k(jnp.asarray(tile), k)
    got_s, got_i = jax.jit(lambda s: search._top_k(s, k))(tile)
    np.testing.assert_array_equal(np.asarray(got_i), np.asarray(want_i))
    np.testing.assert_array_equal(np.asarray(got_s), np.asarray(want_s))


# ----------------------------------------------------------------------------- search inputs


def _rows(n=6, d=8, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def test_search_refuses_nonfinite_rows_naming_argument_and_row():
    good = _rows()
    nan_q, inf_c = good.copy(), _rows(seed=1)
    nan_q[3, 2] = np.nan
    inf_c[4, 5] = -np.inf
    with pytest.raises(ValueError, match=r"query_embeddings\[3\] holds nan at column 2: embeddings must be finite"):
        semantic_search(nan_q, good, top_k=2)
    with pytest.raises(ValueError, match=r"corpus_embeddings\[4\] holds -inf at column 5"):
        semantic_search(good, inf_c, top_k=2)
    with pytest.raises(ValueError, match=r"corpus_embeddings\[4\] holds -inf"):   # a jax array: fetched, checked
        semantic_search(jnp.asarray(good), jnp.asarray(inf_c), top_k=2)
    with pytest.raises(ValueError, match=r"b\[4\] holds -inf"):
        similarity(good, inf_c)
    with pytest.raises(ValueError, match=r"a\[3\] holds nan"):
        pairwise_similarity(nan_q, good, "dot")
    big = good.astype(np.float64)
    big[1, 0] = 1e300                             # finite float64, inf once float32
    with pytest.raises(ValueError, match=r"a\[1\] holds inf at column 0"):
        similarity(big, good)

    blocks = corpus_blocks(iter([good[:4], good[4:]]), 6, 8, block_size=4)
    with pytest.raises(ValueError, match=r"queries\[3\] holds nan"):
        search_blocks(nan_q, blocks, top_k=2)
    with pytest.raises(ValueError, match=r"thresholds\[1\] is NaN"):
        search_blocks(good, blocks, top_k=2, thresholds=[0.0, np.nan, 0, 0, 0, 0])
    # the corpus stream: the chunk, its row and the global corpus row
    with pytest.raises(ValueError, match=r"corpus chunk 1 row 2 \(corpus row 6\) holds -inf"):
        corpus_blocks(iter([good[:4], inf_c[2:6], good[:2]]), 10, 8, block_size=4)
    # finite float32 beyond float16's range: inf once stored, and said so
    wide = good.copy()
    wide[2, 1] = 7e4
    with pytest.raises(ValueError, match=r"corpus chunk 0 row 2 \(corpus row 2\) holds inf.*once stored as "
                                         r"float16: use dtype=float32"):
        corpus_blocks(iter([wide]), 6, 8, dtype=np.float16)


def test_the_norm_limit_keeps_every_score_finite_and_is_enforced():
    """Rows just under search._SQ_NORM_LIMIT score finite with every function, opposite vectors
    included (euclidean's (|a| + |b|)^2 is the largest term: 4x a row's squared norm, hence the
    quarter of float32's range); a row just over it is refused with its norm."""
    d = 8
    norm = np.sqrt(search._SQ_NORM_LIMIT) * 0.99
    a = np.full((1, d), norm / np.sqrt(d), np.float32)
    pair = np.concatenate([a, -a])
    for fn in search.SCORE_FUNCTIONS:
        scores = similarity(pair, pair, fn)
        assert np.isfinite(scores).all(), (fn, scores)
    over = pair * np.float32(1.02)
    with pytest.raises(ValueError, match=r"b\[0\] has L2 norm 9\.\d+e\+18, above 9\.22e\+18.*scale the embeddings"):
        similarity(pair, over)


# ----------------------------------------------------------------------------- model outputs


@pytest.fixture(scope="module")
def poisoned(minilm_dir, tmp_path_factory):
    """Tiny BERT cross-encoder and bi-encoder folders (MiniLM's real tokenizer) whose embedding row
    of BAD_WORD is inf: every text holding that word computes NaN, every other text is untouched."""
    import torch
    import transformers as tf
    from tiny_hf import make_tiny
    tok = tf.AutoTokenizer.from_pretrained(str(minilm_dir))
    bad_id = tok.convert_tokens_to_ids(BAD_WORD)
    assert bad_id != tok.unk_token_id
    dirs = {}
    for kind, head in (("ce", True), ("bi", False)):
        path = tmp_path_factory.mktemp(f"poisoned_{kind}")
        model = make_tiny("bert", path, head=head, seed=5, vocab_size=tok.vocab_size, type_vocab_size=2,
                          max_position_embeddings=128)
        with torch.no_grad():
            model.get_input_embeddings().weight[bad_id] = float("inf")
        model.save_pretrained(str(path))
        tok.save_pretrained(str(path))
        dirs[kind] = path
    return dirs


PAIRS = [("a man", "eats food"), ("a dog", "in the park"), ("a cat", f"a {BAD_WORD} runs"), ("two people", "ride")]


def test_cross_encoder_nonfinite_score_names_the_pair(poisoned):
    from xenc_jax.cross_encoder import CrossEncoder
    ce = CrossEncoder(poisoned["ce"])
    fine = ce.predict(PAIRS[:2] + PAIRS[3:])
    assert np.isfinite(fine).all()   # the model is fine on other pairs: the index below is exact
    with pytest.raises(NonFiniteOutput, match=r"output for pairs\[2\] is nan \(compute dtype float32\).*"
                                              r"float32 already.*checkpoint's weights"):
        ce.predict(PAIRS, chunk_size=2)   # the second chunk: its global index, not 0
    # rank / rank_many name the caller's own arguments, not the pairs they build from them
    with pytest.raises(NonFiniteOutput, match=r"output for \(query, documents\[1\]\) is nan") as e:
        ce.rank("a cat", ["a dog", f"the {BAD_WORD}", "food"])
    assert e.value.index == 1 and "pairs[" not in str(e.value)
    with pytest.raises(NonFiniteOutput, match=r"output for \(queries\[2\], documents\[2\]\[1\]\) is nan"):
        ce.rank_many(["a", "b", "c"], [["x", "y"], [], ["z", f"a {BAD_WORD}"]])   # flattened: pair 3
    with pytest.raises(NonFiniteOutput, match=r"output for \(queries\[1\], documents\[1\]\[0\]\) is nan"):
        ce.rank_many(["a", f"my {BAD_WORD}"], [["x"], ["y", "z"]])   # the query is the bad text
    # a text the tokenizer cannot take is named the same way (was pairs[0][0] for rank's query)
    with pytest.raises(ValueError, match=r"^query cannot be encoded as UTF-8: .*lone surrogate '\\udce9'"):
        ce.rank("caf\udce9", ["a"])
    with pytest.raises(ValueError, match=r"^documents\[1\]\[2\] cannot be encoded as UTF-8"):
        ce.rank_many(["a", "b"], [["x"], ["y", "z", "caf\udce9"]])


def test_bi_encoder_nonfinite_embedding_names_the_text_and_the_cli_writes_none(poisoned, tmp_path, capsys):
    from xenc_jax.bi_encoder import BiEncoder
    texts = ["a man", "a dog", "in the park", f"a {BAD_WORD}", "food"]
    be = BiEncoder(poisoned["bi"])
    assert np.isfinite(be.encode(texts[:3] + texts[4:])).all()
    with pytest.raises(NonFiniteOutput, match=r"output for sentences\[3\] is nan"):
        list(be.encode_stream(texts, chunk_size=2))
    # the CLI stops with the message and writes no output (no NaN line, no half file)
    (tmp_path / "t.txt").write_text("\n".join(texts) + "\n")
    out = tmp_path / "e.npy"
    assert main(["encode", str(tmp_path / "t.txt"), "--model", str(poisoned["bi"]), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "xenc encode: error: the model's output for sentences[3] is nan" in err and "Traceback" not in err
    assert not out.exists()
    pairs = tmp_path / "p.tsv"
    pairs.write_text("".join(f"{q}\t{d}\n" for q, d in PAIRS))
    out = tmp_path / "s.jsonl"
    assert main(["score", str(pairs), "--model", str(poisoned["ce"]), "-o", str(out)]) == 2
    assert "the model's output for pairs[2] is nan" in capsys.readouterr().err
    assert not out.exists()
    assert not any(b"NaN" in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())


def test_check_outputs_points_a_16_bit_run_to_float32():
    """The advice depends on the compute dtype: a bf16 run is told to use float32 first."""
    out = np.ones((5, 3), np.float32)
    assert check_outputs(out, 10, "pairs", jnp.bfloat16) is out
    out[4, 1] = np.inf
    with pytest.raises(NonFiniteOutput, match=r"pairs\[14\] is inf \(compute dtype bfloat16\).*dtype='float32' "
                                              r"\(CLI: --dtype float32\)"):
        check_outputs(out, 10, "pairs", jnp.bfloat16)


# ----------------------------------------------------------------------------- mining's cache


def test_damaged_embedding_cache_names_file_and_row(tmp_path):
    from xenc_jax import mining_embed
    emb = _rows(10, 4)
    emb[7, 3] = np.nan
    path = tmp_path / "corpus_embeddings_x.npy"
    with open(path, "wb") as f:
        mining_embed._write_header(f, 10, 4, np.dtype(np.float32))
        f.write(emb.tobytes())
    with pytest.raises(ValueError, match=r"corpus_embeddings_x.npy row 7 holds nan at column 3.*damaged: "
                                         r"delete it to recompute it"):
        list(mining_embed._read_chunks(path, 10, 4, np.dtype(np.float32), rows=4))
