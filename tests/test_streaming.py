"""Streaming predict/encode (issue 16): any iterable, read in chunks, prepared in a background
thread; the concatenated chunks equal predict/encode bit for bit (they score in the same chunks),
and errors name the item's index in the whole input."""
from __future__ import annotations

import numpy as np
import pytest

from test_train_utils import WORDS, make_tiny_model


def _pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    return [(" ".join(rng.choice(WORDS, rng.integers(1, 8))), " ".join(rng.choice(WORDS, rng.integers(2, 60))))
            for _ in range(n)]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("stream") / "model", dropout=False)


def test_predict_stream_equals_predict_bit_for_bit(tiny_dir):
    from xenc_jax.cross_encoder import CrossEncoder
    pairs = _pairs(1300)
    pairs[700] = pairs[3]  # a duplicate in another chunk
    ce = CrossEncoder(str(tiny_dir), chunk_size=500)
    want = ce.predict(pairs)
    parts = list(ce.predict_stream(iter(pairs)))  # a one-shot iterator, no len()
    assert [len(p) for p in parts] == [500, 500, 300]
    got = np.concatenate(parts)
    assert got.dtype == np.float32 and np.array_equal(got, want)
    # chunking only changes which pairs share a batch: other chunk sizes agree to fp32 rounding
    other = ce.predict(pairs, chunk_size=4096)
    np.testing.assert_allclose(other, want, rtol=0, atol=1e-6)
    assert ce.predict([]).shape == (0,) and list(ce.predict_stream([])) == []


def test_encode_stream_equals_encode_bit_for_bit(tmp_path):
    from tiny_hf import make_tiny_minilm
    from test_train_utils import minilm_path
    from xenc_jax.bi_encoder import BiEncoder
    make_tiny_minilm("bert", tmp_path / "bi", minilm_path(), head=False, seed=4)
    texts = [b for _, b in _pairs(900, seed=1)]
    bi = BiEncoder(str(tmp_path / "bi"), chunk_size=400)
    want = bi.encode(texts, normalize_embeddings=True)
    got = np.concatenate(list(bi.encode_stream((t for t in texts), normalize_embeddings=True)))
    assert np.array_equal(got, want)


def test_stream_errors_name_the_index_in_the_whole_input(tiny_dir):
    from xenc_jax.cross_encoder import CrossEncoder
    ce = CrossEncoder(str(tiny_dir), chunk_size=100)
    pairs = _pairs(250)
    pairs[230] = "just one text"
    with pytest.raises(TypeError, match=r"pairs\[230\] is a single str"):
        for _ in ce.predict_stream(iter(pairs)):
            pass
    with pytest.raises(TypeError, match="got a single str"):
        next(ce.predict_stream("not an iterable of pairs"))
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        next(ce.predict_stream(pairs, chunk_size=0))


def test_prefetch_overlaps_and_stops_cleanly():
    """prepare runs ahead in its own thread (bounded), errors reach the consumer in order, and
    closing the stream early stops the producer."""
    import threading
    import time
    from xenc_jax.streaming import prefetch
    seen = []

    def prepare(x):
        seen.append((x, threading.current_thread().name))
        return x * 2
    gen = prefetch(iter(range(100)), prepare, depth=2)
    assert next(gen) == 0
    time.sleep(0.2)
    assert 2 <= len(seen) <= 4 and all(name == "xenc-prefetch" for _, name in seen)  # bounded look-ahead
    gen.close()
    time.sleep(0.3)
    assert len(seen) <= 5

    def bad(x):
        if x == 3:
            raise ValueError("row 3 is bad")
        return x
    with pytest.raises(ValueError, match="row 3 is bad"):
        assert list(prefetch(iter(range(10)), bad)) == [0, 1, 2]
