"""mine_hard_negatives: rows equal sentence-transformers' on real MS MARCO with the real
all-MiniLM-L6-v2 (every output format, filters, random sampling with a seed, cross-encoder
rescoring), the positive's rank from the search pass, the embedding cache, bad input, and the
sharded search (8 forced CPU devices, in a subprocess)."""
from __future__ import annotations

import difflib
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as tf

from forced_devices import run_on_devices
from tiny_hf import make_tiny
from xenc_jax import BiEncoder, CrossEncoder, mine_hard_negatives, search

REPO = Path(__file__).resolve().parents[1]
MAX_LEN = 128  # both sides truncate at 128 tokens: the same rows, half the embedding time of 256
# Scores of one text differ between the two implementations by at most 1e-5: the BiEncoder <->
# SentenceTransformer parity bound on similarity scores (tests/test_bi_encoder.py TOL, fp32),
# asserted again here on every row both return.
SCORE_TOL = 1e-5
# Two candidates can only swap places (or a candidate cross a score bound) between the two
# implementations when their reference scores are closer than the sum of their errors: 2 x 1e-5
# for two candidates or a candidate and a fixed bound (max_score/min_score), 3 x 1e-5 for a margin
# bound, which carries the positive's score error too.
TIE_GAP = 3 * SCORE_TOL
IDENTICAL = {}  # (case, format) -> fraction of identical rows, printed at the end (pytest -s)


@pytest.fixture(scope="module")
def msmarco(data_dir):
    """(query, positive) pairs from the DL19 qrels (grade >= 2, 4 per query at most: 170 pairs
    over 43 queries) and a 300-passage corpus holding every positive."""
    root = data_dir / "msmarco-dl19-subset"
    queries = {d["_id"]: d["text"] for d in map(json.loads, open(root / "queries.jsonl", encoding="utf-8"))}
    docs = {d["_id"]: d["text"] for d in map(json.loads, open(root / "corpus.jsonl", encoding="utf-8"))}
    by_query = defaultdict(list)
    for line in open(root / "qrels_test.tsv", encoding="utf-8"):
        qid, did, grade = line.rstrip("\n").split("\t")
        if int(grade) >= 2 and len(by_query[qid]) < 4:
            by_query[qid].append(did)
    pairs = [{"query": queries[q], "answer": docs[d]} for q, ds in by_query.items() for d in ds]
    positives = {d for ds in by_query.values() for d in ds}
    corpus = [docs[d] for d in sorted(positives)] + [t for d, t in docs.items() if d not in positives]
    return pairs, corpus[:300]


@pytest.fixture(scope="module", autouse=True)
def report_identical():
    yield
    for (case, fmt), share in sorted(IDENTICAL.items()):
        print(f"identical rows vs sentence-transformers: {case:18s} {fmt:24s} {share:.2%}")


@pytest.fixture(scope="module")
def models(minilm_dir, tmp_path_factory):
    from sentence_transformers import SentenceTransformer
    st = SentenceTransformer(str(minilm_dir), device="cpu")
    st.max_seq_length = MAX_LEN
    root = tmp_path_factory.mktemp("mining_cache")
    return {"ours": BiEncoder(minilm_dir, max_seq_length=MAX_LEN), "st": st,
            "our_cache": str(root / "ours"), "st_cache": str(root / "st")}


@pytest.fixture(scope="module")
def dataset(msmarco):
    from datasets import Dataset
    pairs, _ = msmarco
    return Dataset.from_list(pairs)


def _mine_both(models, dataset, corpus, seed=None, **kw):
    from sentence_transformers.util import mine_hard_negatives as st_mine
    if seed is not None:
        random.seed(seed)
    want = st_mine(dataset, models["st"], corpus=corpus, cache_folder=models["st_cache"], verbose=False, **kw)
    if seed is not None:
        random.seed(seed)  # ours draws from the same global `random` as ST when random_seed is None
    got = mine_hard_negatives(dataset, models["ours"], corpus=corpus, cache_folder=models["our_cache"],
                              verbose=False, **kw)
    assert got.column_names == want.column_names
    return got.to_list(), want.to_list()


def _ref_scores(models, corpus, dataset):
    """ST's own scores of every (unique query, corpus text), from the embeddings ST cached."""
    cache = Path(models["st_cache"])
    emb_c = np.load(next(cache.glob("corpus_embeddings_*.npy")))
    texts = list(dict.fromkeys(corpus + list(dataset["answer"])))
    assert len(texts) == len(emb_c)
    queries = list(dict.fromkeys(dataset["query"]))
    emb_q = models["st"].encode(queries, normalize_embeddings=True)
    return {q: dict(zip(texts, emb_c @ e)) for q, e in zip(queries, emb_q)}


def _positives(dataset) -> dict:
    out = defaultdict(set)
    for r in dataset:
        out[r["query"]].add(r["answer"])
    return out


def _negatives(rows, fmt, positives):
    """{anchor: ordered negatives} of a result, whatever its format."""
    out = defaultdict(list)
    for r in rows:
        if fmt == "triplet":
            negs = [r["negative"]]
        elif fmt.startswith("n-tuple"):
            negs = [v for k, v in r.items() if k.startswith("negative_")]
        elif fmt == "labeled-list":
            negs = r["answer"][1:]
        else:
            negs = [r["answer"]] if r["answer"] not in positives[r["query"]] else []
        out[r["query"]] += [n for n in negs if n not in out[r["query"]]]
    return out


def _check_rows(case, fmt, got, want, models, corpus, dataset, bounds=()):
    """>= 98% identical rows (in order); matched rows' scores within SCORE_TOL; every negative
    that only one side picked is within TIE_GAP of another candidate's or a bound's score."""
    key = lambda r: json.dumps({k: v for k, v in r.items() if k not in ("scores", "score")}, sort_keys=True)
    a, b = [key(r) for r in want], [key(r) for r in got]
    blocks = difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks()
    same = sum(m.size for m in blocks)
    IDENTICAL[(case, fmt)] = same / max(len(a), len(b))
    assert same >= 0.98 * max(len(a), len(b)), f"{case}/{fmt}: {same} of {len(a)} (ST) / {len(b)} rows identical"
    for m in blocks:
        for i, j in zip(range(m.a, m.a + m.size), range(m.b, m.b + m.size)):
            for name in ("scores", "score"):
                if name in want[i]:
                    diff = np.abs(np.subtract(got[j][name], want[i][name])).max()
                    assert diff <= SCORE_TOL, (case, fmt, i, diff)
    if same == len(a) == len(b):
        return
    ref = _ref_scores(models, corpus, dataset)
    positives = _positives(dataset)
    fmt = fmt.split("+")[0]
    ours, theirs = _negatives(got, fmt, positives), _negatives(want, fmt, positives)
    for anchor in set(ours) | set(theirs):
        # the candidates a swap can involve: ST's first 64 by score (every case's window is smaller)
        window = sorted(ref[anchor].items(), key=lambda kv: -kv[1])[:64]
        for text in set(ours[anchor]) ^ set(theirs[anchor]):
            s = ref[anchor][text]
            others = [v for t, v in window if t != text] + [b(ref, anchor) for b in bounds]
            gap = min(abs(s - v) for v in others)
            assert gap <= TIE_GAP, f"{case}/{fmt}: {text[:50]!r} picked by one side only, {gap:.2e} from any tie"


FORMATS = [("triplet", False), ("triplet", True), ("n-tuple", False), ("n-tuple", True),
           ("labeled-pair", False), ("labeled-pair", True), ("labeled-list", False), ("labeled-list", True)]


@pytest.mark.parametrize("fmt,scores", FORMATS)
def test_top_rows_equal_sentence_transformers(models, msmarco, dataset, fmt, scores):
    _, corpus = msmarco
    got, want = _mine_both(models, dataset, corpus, num_negatives=4, output_format=fmt, output_scores=scores)
    _check_rows("default", fmt + ("+scores" if scores else ""), got, want, models, corpus, dataset)
    assert len(got) > 0
    if fmt == "triplet" and not scores:
        # the tie check has teeth: one negative replaced by a text that ties with nothing fails it
        bad = [dict(r) for r in got]
        bad[5]["negative"] = corpus[-1]
        with pytest.raises(AssertionError, match="picked by one side only"):
            _check_rows("self-check", fmt, bad, want, models, corpus, dataset)
        IDENTICAL.pop(("self-check", fmt))


@pytest.mark.parametrize("fmt", ["triplet", "n-tuple-scores", "labeled-list"])
def test_filters_equal_sentence_transformers(models, msmarco, dataset, fmt):
    """range_min / range_max / both margins / max_score / min_score, with ranks skipped and
    candidates removed by every filter."""
    _, corpus = msmarco
    positives = _positives(dataset)

    def hardest(ref, anchor):  # the margins' reference: the anchor's lowest positive score
        return min(v for t, v in ref[anchor].items() if t in positives[anchor])

    kw = dict(range_min=2, range_max=30, relative_margin=0.05, absolute_margin=0.01, max_score=0.8,
              min_score=0.1, num_negatives=5, output_scores=True)
    got, want = _mine_both(models, dataset, corpus, output_format=fmt, **kw)
    bounds = (lambda ref, a: 0.8, lambda ref, a: 0.1, lambda ref, a: hardest(ref, a) - 0.01,
              lambda ref, a: hardest(ref, a) - abs(hardest(ref, a)) * 0.05)
    _check_rows("filters", fmt, got, want, models, corpus, dataset, bounds)
    assert any(len(r.get("scores", [])) for r in got)


def test_random_sampling_and_include_positives(models, msmarco, dataset):
    _, corpus = msmarco
    got, want = _mine_both(models, dataset, corpus, seed=7, sampling_strategy="random", range_max=20,
                           num_negatives=3, output_format="n-tuple")
    _check_rows("random", "n-tuple", got, want, models, corpus, dataset)
    # a seeded run repeats itself, and differs from another seed
    again = mine_hard_negatives(dataset, models["ours"], corpus=corpus, sampling_strategy="random", range_max=20,
                                random_seed=3, output_format="n-tuple", cache_folder=models["our_cache"], verbose=False)
    same = mine_hard_negatives(dataset, models["ours"], corpus=corpus, sampling_strategy="random", range_max=20,
                               random_seed=3, output_format="n-tuple", cache_folder=models["our_cache"], verbose=False)
    assert again.to_list() == same.to_list() != got
    got, want = _mine_both(models, dataset, corpus, include_positives=True, num_negatives=6, output_scores=True)
    _check_rows("include_positives", "n-tuple", got, want, models, corpus, dataset)


def test_cross_encoder_rescoring_equals_sentence_transformers(models, msmarco, dataset, minilm_dir, tmp_path):
    """The candidates re-ranked and re-scored by a cross-encoder (MiniLM's encoder + a seeded
    head), and the positives scored by it, as ST: 6 queries to keep it cheap."""
    from sentence_transformers import CrossEncoder as STCrossEncoder
    torch.manual_seed(1)
    tf.BertForSequenceClassification.from_pretrained(str(minilm_dir), num_labels=1).save_pretrained(str(tmp_path))
    tf.AutoTokenizer.from_pretrained(str(minilm_dir)).save_pretrained(str(tmp_path))
    first = set(list(dict.fromkeys(dataset["query"]))[:6])
    head = dataset.filter(lambda r: r["query"] in first)
    _, corpus = msmarco
    ce_ours = CrossEncoder(tmp_path, max_length=MAX_LEN)
    ce_st = STCrossEncoder(str(tmp_path), device="cpu", max_length=MAX_LEN)
    from sentence_transformers.util import mine_hard_negatives as st_mine
    kw = dict(corpus=corpus, num_negatives=3, range_max=8, output_format="labeled-list", output_scores=True,
              verbose=False)
    want = st_mine(head, models["st"], cross_encoder=ce_st, cache_folder=models["st_cache"], **kw).to_list()
    got = mine_hard_negatives(head, models["ours"], cross_encoder=ce_ours, cache_folder=models["our_cache"],
                              **kw).to_list()
    assert [r["answer"] for r in got] == [r["answer"] for r in want]
    # CrossEncoder <-> ST parity on real pairs is 1e-5 on sigmoid scores (tests/test_cross_encoder.py)
    assert max(np.abs(np.subtract(g["scores"], w["scores"])).max() for g, w in zip(got, want)) <= 1e-5
    assert len(got) == len(head)  # one row per (query, positive): every one found negatives


def test_positive_rank_from_the_search_pass():
    """search_blocks' counts equal a brute-force count, in one pass with the top-k."""
    rng = np.random.default_rng(0)
    corpus = rng.normal(size=(301, 16)).astype(np.float32)
    queries = rng.normal(size=(37, 16)).astype(np.float32)
    blocks = search.corpus_blocks((corpus[i:i + 50] for i in range(0, 301, 50)), 301, 16, block_size=64)
    excl = rng.integers(0, 301, 37)
    full = search.similarity(queries, corpus)
    thr = full[np.arange(37), excl]
    s, ids, counts = search.search_blocks(queries, blocks, top_k=20, query_chunk_size=16, thresholds=thr,
                                          exclude_ids=excl)
    # the excluded row (the threshold's own) is not counted even where the jitted block rounds
    # its score an ulp above the threshold
    np.testing.assert_array_equal(counts, (full > thr[:, None]).sum(1))
    want = search.semantic_search(queries, corpus, top_k=20)
    assert ids.tolist() == [[h["corpus_id"] for h in r] for r in want]


def test_grouped_top_k_is_lax_top_k():
    """search._top_k (group maxima first: the CPU search's speed) returns exactly lax.top_k's
    values and indices, ties included: scores drawn from 3 values tie everywhere, a row of -inf
    (padding) and a half-masked row; the grouped path (B=1024: groups of 32 for k=1, 16 for k=8)
    and its fallback."""
    import jax
    from jax import lax
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 3, (6, 1024)).astype(np.float32)
    scores[1], scores[2, 300:] = -np.inf, -np.inf
    scores[3] = rng.normal(size=1024)
    for k in (1, 8, 300):  # 300: groups of ~sqrt(1024 / 300) < 4 columns gain nothing: lax.top_k itself
        got = jax.jit(lambda s, k=k: search._top_k(s, k))(scores)
        want = lax.top_k(scores, k)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, minilm_dir):
    """A tiny random bi-encoder with the real tokenizer (fast), and a second one (another seed)."""
    tok = tf.AutoTokenizer.from_pretrained(str(minilm_dir))
    out = []
    for seed in (3, 4):
        path = tmp_path_factory.mktemp(f"tiny{seed}")
        make_tiny("bert", path, head=False, seed=seed, vocab_size=tok.vocab_size, max_position_embeddings=128)
        tok.save_pretrained(str(path))
        out.append(BiEncoder(path))
    return out


TINY_PAIRS = [{"q": f"question {i} about topic {i % 7}", "p": f"answer {i} on topic {i % 7} with detail {i * 3}"}
              for i in range(40)]
TINY_CORPUS = [f"passage {i} about topic {i % 11} and words {i * 7 % 13}" for i in range(150)]


def test_list_of_dicts_cache_and_embedding_dtype(tiny, tmp_path):
    from datasets import Dataset
    model, other = tiny
    kw = dict(corpus=TINY_CORPUS, num_negatives=2, output_scores=True, verbose=False)
    rows = mine_hard_negatives(TINY_PAIRS, model, cache_folder=tmp_path, **kw)
    assert isinstance(rows, list) and set(rows[0]) == {"q", "p", "negative", "scores"} and len(rows) == 80
    assert rows == mine_hard_negatives(Dataset.from_list(TINY_PAIRS), model, **kw).to_list()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and files[0].startswith("corpus_embeddings_") and files[1].startswith("query_embeddings_")
    # the cache is read, not recomputed: a model that cannot encode still mines the same rows
    real = model.encode_stream
    model.encode_stream = None
    try:
        assert mine_hard_negatives(TINY_PAIRS, model, cache_folder=tmp_path, **kw) == rows
    finally:
        model.encode_stream = real
    # another model, prompt or dtype gets its own files
    mine_hard_negatives(TINY_PAIRS, other, cache_folder=tmp_path, **kw)
    mine_hard_negatives(TINY_PAIRS, model, cache_folder=tmp_path, corpus_prompt="passage: ", **kw)
    half = mine_hard_negatives(TINY_PAIRS, model, cache_folder=tmp_path, embedding_dtype="bfloat16", **kw)
    assert len(list(tmp_path.iterdir())) == 2 + 2 + 1 + 1  # the prompt changes the corpus only; bf16 too
    # bf16: every score is the cosine of the fp32 query with the bf16-rounded passage embedding
    import ml_dtypes
    texts = list(dict.fromkeys(TINY_CORPUS + [r["p"] for r in TINY_PAIRS]))
    emb = model.encode(texts, normalize_embeddings=True).astype(ml_dtypes.bfloat16).astype(np.float32)
    by_text = dict(zip(texts, emb))
    for r in half[:10]:
        q = model.encode(r["q"], normalize_embeddings=True)
        want = search.similarity(q, by_text[r["negative"]])[0, 0]
        assert abs(r["scores"][1] - want) <= 1e-5  # vs the bf16 rounding's ~1e-3


def test_bad_input_is_a_clear_error(tiny):
    model = tiny[0]
    cases = [
        (dict(dataset=[]), "dataset is empty"),
        (dict(anchor_column_name="query"), "anchor_column_name 'query' is not a column of the dataset; "
                                           "columns found: ['q', 'p']"),
        (dict(positive_column_name="q"), "both 'q'"),
        (dict(dataset=TINY_PAIRS[:3] + [{"q": "x", "p": None}]), "dataset row 3: column 'p' holds NoneType"),
        (dict(dataset=TINY_PAIRS[:3] + [{"q": "x"}]), "dataset row 3 has no 'p' key"),
        (dict(corpus=[]), "corpus is empty"),
        (dict(corpus=TINY_CORPUS[:5] + [3]), "corpus[5] is int"),
        (dict(corpus=TINY_CORPUS[:20], range_max=100), "range_max=100 is beyond the corpus: it holds 60 unique"),
        (dict(corpus=TINY_CORPUS[:20], missing_positive="error"), "dataset row 0: the positive 'answer 0"),
        (dict(num_negatives=0), "num_negatives must be at least 1"),
        (dict(range_min=5, range_max=6, num_negatives=2), "Cannot mine 2 negatives per query"),
        (dict(use_faiss=True), "use_faiss is not supported"),
        (dict(sampling_strategy="best"), "sampling_strategy must be 'top' or 'random'"),
        (dict(output_format="pairs"), "Invalid output_format: pairs"),
        (dict(embedding_dtype="int8"), "embedding_dtype must be one of"),
    ]
    for kw, message in cases:
        kw = {"dataset": TINY_PAIRS, "verbose": False, **kw}
        with pytest.raises((ValueError, TypeError), match=None) as err:
            mine_hard_negatives(model=model, **kw)
        assert message in str(err.value), (kw.keys(), str(err.value))
    with pytest.raises(TypeError, match="model must be an xenc_jax.BiEncoder"):
        mine_hard_negatives(TINY_PAIRS, "all-MiniLM-L6-v2")


def test_sharded_mining_equals_one_device(tiny):
    run_on_devices([__file__, str(tiny[0].model_dir)], devices=8)


def _main() -> int:
    """8 forced CPU devices: search_blocks over a (8,) and a (4, 2) mesh equals one device (ids,
    counts), and mining with mesh= gives the rows of mesh=None."""
    sys.path.insert(0, str(REPO))
    import jax
    from jax.sharding import Mesh
    from xenc_jax import search as S
    devices = np.array(jax.devices())
    assert len(devices) == 8
    rng = np.random.default_rng(1)
    corpus = rng.normal(size=(203, 24)).astype(np.float32)
    queries = rng.normal(size=(19, 24)).astype(np.float32)
    thr = rng.normal(size=19).astype(np.float32)
    one = S.search_blocks(queries, S.corpus_blocks([corpus], 203, 24, block_size=40), top_k=30, thresholds=thr,
                          query_chunk_size=8)
    for mesh, axis in ((Mesh(devices, ("data",)), "data"), (Mesh(devices.reshape(4, 2), ("data", "model")), "model")):
        blocks = S.corpus_blocks([corpus], 203, 24, block_size=40, mesh=mesh, corpus_axis=axis)
        got = S.search_blocks(queries, blocks, top_k=30, thresholds=thr, query_chunk_size=8)
        assert got[1].tolist() == one[1].tolist() and got[2].tolist() == one[2].tolist(), axis
        assert np.abs(got[0] - one[0]).max() <= 1e-6
    model = BiEncoder(sys.argv[1])
    kw = dict(corpus=TINY_CORPUS, num_negatives=3, output_format="n-tuple", verbose=False, corpus_chunk_size=16)
    plain = mine_hard_negatives(TINY_PAIRS, model, **kw)
    sharded = mine_hard_negatives(TINY_PAIRS, model, mesh=Mesh(devices, ("data",)), **kw)
    assert plain == sharded
    print("ALL OK")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
