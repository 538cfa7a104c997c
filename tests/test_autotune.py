"""The CPU autotune (issue 17, xenc_jax/autotune.py): it measures the real model on this machine,
applies the fastest layout, caches it per CPU and model shape, and a bf16 request that runs
faster in fp32 says so once and runs fp32 compute. The suite runs with XENC_AUTOTUNE=0
(conftest.py); each test here turns it on with a cache file of its own."""
from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest

from test_streaming import _pairs


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny BERT cross-encoder with MiniLM's real WordPiece tokenizer and a 512-position table,
    so every candidate layout (rows of 192 and 256 tokens) fits."""
    from test_train_utils import minilm_path
    from tiny_hf import make_tiny_minilm
    path = tmp_path_factory.mktemp("autotune") / "ce"
    make_tiny_minilm("bert", path, minilm_path(), num_labels=1, seed=5, max_position_embeddings=512)
    return path


@pytest.fixture
def tuning_on(tmp_path, monkeypatch):
    from xenc_jax import autotune
    monkeypatch.setenv("XENC_AUTOTUNE", "1")
    monkeypatch.setenv("XENC_AUTOTUNE_CACHE", str(tmp_path / "autotune.json"))
    monkeypatch.setattr(autotune, "_WARNED", set())  # "once per process": each test is its own process here
    return tmp_path / "autotune.json"


def test_autotune_measures_applies_and_caches(tiny_dir, tuning_on):
    from xenc_jax import CrossEncoder
    from xenc_jax.autotune import LAYOUTS
    pairs = _pairs(300, seed=7)
    untuned = CrossEncoder(str(tiny_dir), autotune=False)
    want = untuned.predict(pairs)
    assert untuned.tuning.source == "default" and not tuning_on.exists()

    ce = CrossEncoder(str(tiny_dir), autotune=True)
    t = ce.tuning
    assert t.source == "measured"
    assert (t.choice.pack_length, t.choice.tokens_per_batch) in LAYOUTS["pairs"]
    assert t.choice.compute_dtype == "float32" and t.choice.streams in (1, 2)
    # every layout candidate and the 1-stream variant were timed with the real model
    assert len(t.measurements) >= len(LAYOUTS["pairs"]) + 1 and all(r > 0 for _, r in t.measurements)
    assert ce.buckets.pack_length == t.choice.pack_length and ce._runner.streams == t.choice.streams
    # another layout only changes which pairs share a packed row: scores agree to fp32 rounding
    np.testing.assert_allclose(ce.predict(pairs), want, rtol=0, atol=1e-6)
    assert "rows of" in t.describe() and "measured" in t.describe()

    stored = json.loads(tuning_on.read_text())
    assert list(stored) == [t.key] and stored[t.key]["choice"] == dataclasses.asdict(t.choice)
    # a second model of the same shape on this CPU takes the cached result, measuring nothing
    again = CrossEncoder(str(tiny_dir))
    assert again.tuning.source == "cache" and again.tuning.choice == t.choice
    assert again.buckets == ce.buckets


def test_bf16_that_is_slower_here_runs_fp32_and_says_so_once(tiny_dir, tuning_on, monkeypatch):
    """What a CPU whose bf16 dots are slow measures (fp32 faster) is stored as compute_dtype
    float32 for the bf16 request; loading it must run fp32 compute, give fp32's scores exactly,
    and warn once naming the CPU."""
    from xenc_jax import CrossEncoder
    from xenc_jax.autotune import cpu_model, tuning_key
    fp32 = CrossEncoder(str(tiny_dir), autotune=False)
    key = tuning_key("pairs", fp32.config, "bfloat16", fp32.max_length, extra="params float32")
    choice = {"pack_length": fp32.buckets.pack_length, "tokens_per_batch": fp32.buckets.tokens_per_batch,
              "streams": fp32._runner.streams, "compute_dtype": "float32"}
    tuning_on.write_text(json.dumps({key: {"choice": choice, "measurements": [["bf16", 1.0], ["fp32", 2.0]]}}))
    pairs = _pairs(200, seed=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ce = CrossEncoder(str(tiny_dir), dtype="bfloat16")
        CrossEncoder(str(tiny_dir), dtype="bfloat16")  # the same shape again: no second warning
    said = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(said) == 1 and "runs in float32" in said[0] and cpu_model()[0] in said[0]
    assert ce.tuning.source == "cache" and str(ce.dtype) == "float32"
    np.testing.assert_array_equal(ce.predict(pairs), fp32.predict(pairs))
    # with the autotune off, bf16 compute is what runs
    monkeypatch.setenv("XENC_AUTOTUNE", "0")
    assert str(CrossEncoder(str(tiny_dir), dtype="bfloat16").dtype) == "bfloat16"


def test_tuning_is_off_when_asked_and_never_breaks_on_a_bad_cache(tiny_dir, tuning_on, monkeypatch):
    from xenc_jax import CrossEncoder
    from xenc_jax.batching import BucketConfig
    tuning_on.write_text("{ not json")
    # max_length 128: 4 length buckets, so warmup() compiles 12 shapes with a tuned layout's tail
    # batches instead of 30 (what is checked does not depend on the number of buckets)
    ce = CrossEncoder(str(tiny_dir), max_length=128)  # a damaged cache reads as empty
    assert ce.tuning.source == "default"
    ce.warmup()  # warmup() tunes when nothing is cached, and repairs the file
    assert ce.tuning.source == "measured" and ce.tuning.key in json.loads(tuning_on.read_text())
    # explicit buckets are the user's choice: never replaced by a tuning
    mine = BucketConfig(pack=True, pack_length=128, tokens_per_batch=512)
    assert CrossEncoder(str(tiny_dir), buckets=mine).buckets == mine
    monkeypatch.setenv("XENC_AUTOTUNE", "0")
    off = CrossEncoder(str(tiny_dir))
    assert off.tuning.source == "default" and off.buckets.pack_length == 192
    with pytest.raises(ValueError, match="autotune must be None"):
        CrossEncoder(str(tiny_dir), autotune="yes")


def test_bi_encoder_autotune(tmp_path, tuning_on):
    import transformers as tf
    from test_train_utils import minilm_path
    from tiny_hf import make_tiny
    from xenc_jax import BiEncoder
    from xenc_jax.autotune import LAYOUTS
    tok = tf.AutoTokenizer.from_pretrained(str(minilm_path()))
    make_tiny("bert", tmp_path / "bi", head=False, seed=4, vocab_size=tok.vocab_size, max_position_embeddings=512)
    tok.save_pretrained(str(tmp_path / "bi"))
    texts = [b for _, b in _pairs(300, seed=9)]
    want = BiEncoder(str(tmp_path / "bi"), autotune=False).encode(texts)
    bi = BiEncoder(str(tmp_path / "bi"), autotune=True)
    assert bi.tuning.source == "measured" and bi.tuning.key.startswith("texts|")
    assert (bi.tuning.choice.pack_length, bi.tuning.choice.tokens_per_batch) in LAYOUTS["texts"]
    np.testing.assert_allclose(bi.encode(texts), want, rtol=0, atol=1e-6)


def test_pick_needs_the_margin():
    from xenc_jax.autotune import _pick
    assert _pick({"default": 100.0, "other": 104.0}, "default", 0.05) == "default"
    assert _pick({"default": 100.0, "other": 106.0}, "default", 0.05) == "other"


def _preset(cache, model, choice: dict, dtype: str = "float32") -> None:
    from xenc_jax.autotune import tuning_key
    key = tuning_key("pairs", model.config, dtype, model.max_length, extra="params float32")
    cache.write_text(json.dumps({key: {"choice": choice, "measurements": []}}))


def test_cli_uses_the_tuned_layout_and_a_resume_keeps_the_parts_layout(tiny_dir, tuning_on, tmp_path, capsys):
    """`xenc score` scores with this CPU's cached tuning and says so in its summary; a rerun of an
    interrupted job scores its remaining parts with the layout of the finished ones (from their
    manifest), whatever the cache says now, so the output stays byte-identical."""
    from argparse import Namespace
    from test_cli_stream import write_tsv
    from xenc_jax import CrossEncoder
    from xenc_jax.cli import main
    from xenc_jax.cli.jobs import PartsJob
    from xenc_jax.cli.streamed import choose_layout, layout
    base = CrossEncoder(str(tiny_dir), autotune=False)
    tuned = {"pack_length": 256, "tokens_per_batch": 2048, "streams": 1, "compute_dtype": "float32"}
    _preset(tuning_on, base, tuned)
    tsv = write_tsv(tmp_path / "pairs.tsv", 400, seed=3)
    pairs = [tuple(l.split("\t")) for l in tsv.read_text().splitlines()]
    out = tmp_path / "s.jsonl"
    assert main(["score", str(tsv), "--model", str(tiny_dir), "--chunk-size", "128", "-o", str(out)]) == 0
    assert "layout: rows of 256 x 2048 tokens, 1 stream(s), float32 compute (autotune: cache)" in capsys.readouterr().err
    want = CrossEncoder(str(tiny_dir), chunk_size=128).predict(pairs)  # the cached layout, as the CLI
    got = np.asarray([json.loads(l)["score"] for l in out.read_text().splitlines()], np.float32)
    assert np.array_equal(got, want)

    # an interrupted job's manifest says rows of 192 x 4096: a rerun takes that, not the cache's
    model = CrossEncoder(str(tiny_dir))
    assert layout(model)["pack_length"] == 256
    old = {**layout(model), "pack_length": 192, "tokens_per_batch": 4096}
    job = PartsJob(tmp_path / "r.jsonl", {"job": "pairs", "settings": {"layout": old}}, "jsonl")
    args = Namespace(output=str(tmp_path / "r.jsonl"), input=str(tsv), overwrite=False)
    choose_layout(args, model, {"job": "pairs", "settings": {"layout": layout(model)}})
    assert layout(model)["pack_length"] == 256  # no finished part yet: nothing to keep the layout of
    job.write_part(0, lambda f: f.write(b"{}\n"))
    choose_layout(args, model, {"job": "other", "settings": {"layout": layout(model)}})
    assert layout(model)["pack_length"] == 256  # another job's parts: not this job's layout (issue 29)
    choose_layout(args, model, {"job": "pairs", "settings": {"layout": layout(model)}})
    assert layout(model) == old and model.tuning.source == "resumed"


def test_xenc_tune_measures_then_shows(tiny_dir, tuning_on, capsys):
    from xenc_jax.cli import main
    assert main(["tune", "--model", str(tiny_dir), "--show"]) == 0
    assert "no tuning cached" in capsys.readouterr().out
    assert main(["tune", "--model", str(tiny_dir)]) == 0
    out = capsys.readouterr().out
    assert "autotune (measured): rows of" in out and "CPU: " in out and str(tuning_on) in out
    assert main(["tune", "--model", str(tiny_dir), "--show"]) == 0
    assert "autotune (cache): rows of" in capsys.readouterr().out


def test_untuned_bf16_follows_this_cpus_dot_check(tiny_dir, tuning_on):
    """Before any full tuning, a bf16 model asks one cached dot measurement: where bf16 dots ran
    at half fp32's speed (as on the Xeon of ../shared/notes), it runs fp32 and warns; where they
    are faster, bf16. The measurement itself is real and cached per CPU."""
    from xenc_jax.autotune import bf16_dot_ratio
    from xenc_jax.machine import cpu_key
    import jax
    from xenc_jax import CrossEncoder
    ratio = bf16_dot_ratio()  # measured on this machine
    key = f"bf16-dot|jax {jax.__version__}|cpu {cpu_key()}"
    assert ratio > 0 and json.loads(tuning_on.read_text())[key]["ratio"] == round(ratio, 3)
    for stored, want in ((0.5, "float32"), (1.5, "bfloat16")):
        tuning_on.write_text(json.dumps({key: {"ratio": stored}}))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ce = CrossEncoder(str(tiny_dir), dtype="bfloat16")
        assert str(ce.dtype) == want
        said = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        assert ("one bf16 dot" in " ".join(said)) == (want == "float32")
        assert ce.tuning.source == ("dot check" if want == "float32" else "default")


def test_a_deep_model_tunes_on_a_cut_copy(tmp_path, tuning_on, monkeypatch):
    """A model deeper than CUT_ABOVE is tuned on a copy of CUT_LAYERS of its layers (the candidates
    rank per layer: autotune.py's docstring has the measurements): every runner the tuning builds
    is of the cut config; the Tuning and the cache say so; the model keeps its own params, config
    and runner (the copy only picks a layout, and a layout never changes scores:
    test_autotune_measures_applies_and_caches)."""
    from xenc_jax import CrossEncoder, autotune
    from xenc_jax.autotune import CUT_ABOVE, CUT_LAYERS, LAYOUTS, cached
    from test_train_utils import minilm_path
    from tiny_hf import make_tiny_minilm
    depth = CUT_ABOVE + 1
    make_tiny_minilm("bert", tmp_path / "deep", minilm_path(), num_labels=1, seed=6, num_hidden_layers=depth,
                     max_position_embeddings=512)
    # max_length 128: fewer bucket shapes to compile; two layouts, short measurements: what is
    # checked is which model the tuning ran, not which layout won
    monkeypatch.setattr(autotune, "MEASURE_S", 0.02)
    monkeypatch.setattr(autotune, "LAYOUTS", {**LAYOUTS, "pairs": LAYOUTS["pairs"][:2]})
    ce = CrossEncoder(str(tmp_path / "deep"), autotune=False, max_length=128)
    params, runner = ce.params, ce._runner
    built, ran, build = [], [], ce._runner_for

    def recorded(dt, config=None):  # the real runner; it notes its config and the params it runs
        built.append(config)
        r = build(dt, config)
        run = r.run
        r.run = lambda p, *a, **k: ran.append(len(p["encoder"]) - 1) or run(p, *a, **k)
        return r
    ce._runner_for = recorded
    t = ce.autotune()
    assert built and all(c is not None and c.num_layers == CUT_LAYERS for c in built)
    assert ran and set(ran) == {CUT_LAYERS}  # layers of the params each timed run got (less embeddings)
    assert t.source == "measured" and (t.choice.pack_length, t.choice.tokens_per_batch) in LAYOUTS["pairs"]
    assert f"{CUT_LAYERS} of the {depth} layers" in t.measured_on and t.measured_on in t.describe()
    assert cached(t.key).measured_on == t.measured_on  # `xenc tune --show` says it too
    assert ce.config.num_layers == depth and ce.buckets.pack_length == t.choice.pack_length
    assert ce.params is params and ce._runner is runner and len(params["encoder"]) == depth + 1  # + embeddings
    assert np.isfinite(ce.predict(_pairs(8, seed=10))).all()  # the whole model scores in the tuned layout


def test_cut_copy_keeps_the_layer_kind_mix():
    """Sliding and full layers cost differently: the copy keeps the model's mix of them (Gemma 2
    alternating, Gemma 3 five sliding to one full, ModernBERT a full one every third, Qwen2's
    max_window_layers), with the kept layers' own weights renumbered from layer_0."""
    from xenc_jax.autotune import CUT_ABOVE, cut_copy
    from xenc_jax.hf.configs import config_from_dict
    from xenc_jax.models.families.gemma.presets import GEMMA2_BASE, GEMMA3_BASE
    from xenc_jax.models.families.modernbert.presets import BASE as MODERNBERT
    from xenc_jax.models.families.qwen.presets import BASE as QWEN
    qwen2 = {**QWEN, "use_sliding_window": True, "sliding_window": 4096, "max_window_layers": 21}
    for model_type, d, want in (("gemma2", GEMMA2_BASE, (0, 1, 2, 3)), ("gemma3_text", GEMMA3_BASE, (0, 1, 2, 5)),
                                ("modernbert", MODERNBERT, (0, 1, 2, 4)), ("qwen2", qwen2, (0, 1, 2, 21)),
                                ("qwen3", QWEN, (0, 1, 2, 3))):
        cfg = config_from_dict({"model_type": model_type, **d})
        kinds = getattr(cfg, "layer_kinds", None) or cfg.layer_types
        params = {"encoder": {"embeddings": "E", **{f"layer_{i}": i for i in range(cfg.num_layers)}}, "head": "H"}
        cut = cut_copy(cfg, params)
        assert cut.layers == want and cut.of == cfg.num_layers, model_type
        assert cut.params == {"encoder": {"embeddings": "E", **{f"layer_{j}": i for j, i in enumerate(want)}},
                              "head": "H"}
        cut_kinds = getattr(cut.config, "layer_kinds", None) or cut.config.layer_types
        assert cut.config.num_layers == len(want) and tuple(cut_kinds) == tuple(kinds[i] for i in want)
        assert set(cut_kinds) == set(kinds)  # every kind the model has is timed
    shallow = config_from_dict({"model_type": "qwen3", **QWEN, "num_hidden_layers": CUT_ABOVE})
    assert cut_copy(shallow, {"encoder": {f"layer_{i}": i for i in range(CUT_ABOVE)}}) is None  # tuned whole
