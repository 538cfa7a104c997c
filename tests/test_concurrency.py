"""Several threads calling predict / encode on ONE model object get the single-threaded results.

The HF fast tokenizer keeps truncation/padding settings as mutable state on the Rust object:
shared between threads it raises "Already borrowed" or tokenizes with another thread's
max_length. Two models sharing one tokenizer with different max_length make that visible.
"""
from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import transformers as tf

from tiny_hf import make_tiny_minilm
from xenc_jax.bi_encoder import BiEncoder
from xenc_jax.cross_encoder import CrossEncoder

THREADS, ROUNDS = 8, 3


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory, minilm_dir):
    out = {}
    for head in (True, False):
        path = tmp_path_factory.mktemp("ce" if head else "bi")
        make_tiny_minilm("bert", path, minilm_dir, head=head, seed=3, type_vocab_size=2,
                         max_position_embeddings=64)
        out[head] = path
    return out


def _texts(seed: int, n: int = 6) -> list[str]:
    """Texts of 1..50 words: several bucket shapes, some longer than max_length; enough of
    them that one tokenizer call lasts long enough for another thread to cut in."""
    rng = random.Random(seed)
    words = "the quick brown fox jumps over a lazy dog while rain falls on green hills".split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 50))) for _ in range(n)]


def _hammer(jobs):
    """Run every (fn, arg, expected) job ROUNDS times on THREADS threads; all must match."""
    with ThreadPoolExecutor(THREADS) as pool:
        futures = [(pool.submit(fn, arg), want) for _ in range(ROUNDS) for fn, arg, want in jobs]
        for fut, want in futures:
            got = fut.result()
            assert got.dtype == want.dtype and np.array_equal(got, want)


def test_cross_encoder_predict_concurrent(tiny_dirs):
    ce = CrossEncoder(tiny_dirs[True], max_length=48)
    short = CrossEncoder(tiny_dirs[True], max_length=12)  # truncates almost every pair
    short.tokenizer = ce.tokenizer  # one tokenizer, two truncation settings
    inputs = [list(zip(_texts(i), _texts(100 + i))) for i in range(THREADS)]
    jobs = [(m.predict, pairs, m.predict(pairs)) for m in (ce, short) for pairs in inputs]
    _hammer(jobs)


def test_bi_encoder_encode_concurrent(tiny_dirs):
    be = BiEncoder(tiny_dirs[False], max_seq_length=40)
    short = BiEncoder(tiny_dirs[False], max_seq_length=10)
    short.tokenizer = be.tokenizer
    inputs = [_texts(200 + i) for i in range(THREADS)]
    jobs = [(m.encode, texts, m.encode(texts)) for m in (be, short) for texts in inputs]
    _hammer(jobs)


def test_save_leaves_live_tokenizer_unchanged(tiny_dirs, tmp_path):
    for model, name in ((CrossEncoder(tiny_dirs[True], max_length=20), "max_length"),
                        (BiEncoder(tiny_dirs[False], max_seq_length=20), "max_seq_length")):
        before = model.tokenizer.model_max_length
        assert before != 20
        model.save(tmp_path / name)
        assert model.tokenizer.model_max_length == before
        saved = tf.AutoTokenizer.from_pretrained(str(tmp_path / name))
        assert saved.model_max_length == 20  # the saved folder still carries the model's limit


def test_shared_tokenizer_concurrent(tiny_dirs):
    """The race itself, without the model in between (a script doing this on the code before
    TOKENIZER_LOCK got wrong ids in 146 of 400 calls; this test itself was not run on that code)."""
    from xenc_jax.batching import tokenize_texts
    tok = tf.AutoTokenizer.from_pretrained(str(tiny_dirs[False]))
    texts = _texts(7, n=64)
    want = {m: [e.input_ids.tolist() for e in tokenize_texts(tok, texts, m)] for m in (10, 40)}
    with ThreadPoolExecutor(THREADS) as pool:
        got = list(pool.map(lambda i: [e.input_ids.tolist() for e in tokenize_texts(tok, texts, (10, 40)[i % 2])],
                            range(200)))
    assert all(g == want[(10, 40)[i % 2]] for i, g in enumerate(got))
