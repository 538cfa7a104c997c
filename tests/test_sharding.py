"""Sharded scoring and encoding on 8 forced CPU devices equal the single-device results.

XLA_FLAGS must be set before jax is first imported, and the rest of the suite imports jax with
one CPU device, so the 8-device checks run in a fresh interpreter (this file as a script, like
test_search_sharded.py); the pytest side builds the tiny models and checks the exit status.
Models: tiny random BERT (32 hidden, 4 heads, mlp 64) with the real WordPiece tokenizer, as a
cross-encoder and as an ST bi-encoder folder (Transformer, mean Pooling, Dense, Normalize).
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
from forced_devices import run_on_devices

REPO = Path(__file__).resolve().parents[1]
TOL = 1e-5


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, minilm_dir):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models
    from tiny_hf import make_tiny_minilm
    dims = dict(type_vocab_size=2, max_position_embeddings=512, intermediate_size=64)
    ce_dir = tmp_path_factory.mktemp("ce")
    make_tiny_minilm("bert", ce_dir, minilm_dir, num_labels=1, seed=21, **dims)
    enc_dir = tmp_path_factory.mktemp("enc")
    make_tiny_minilm("bert", enc_dir, minilm_dir, head=False, seed=3, **dims)
    st_dir = tmp_path_factory.mktemp("st")
    SentenceTransformer(modules=[models.Transformer(str(enc_dir), max_seq_length=64),
                                 models.Pooling(32, "mean"), models.Dense(32, 16), models.Normalize()],
                        device="cpu").save(str(st_dir))
    return ce_dir, st_dir


def test_sharded_matches_single_device_on_8_devices(tiny_models):
    ce_dir, st_dir = tiny_models
    run_on_devices([__file__, str(ce_dir), str(st_dir)], devices=8)  # prints per-mesh diffs


def test_rules_table_and_mesh_errors_on_one_device():
    """What needs no forced devices runs here: the rules table and mesh validation."""
    import jax
    from jax.sharding import PartitionSpec as P

    from xenc_jax import sharding as S
    rules = dict(S.axis_rules("tp"))
    assert rules["batch"] == ("data", "fsdp") and rules["heads"] == rules["mlp"] == "model"
    assert rules["embed"] is None and rules["vocab"] is None
    assert dict(S.axis_rules("fsdp"))["embed"] == "fsdp"
    assert dict(S.axis_rules("dp"))["heads"] is None
    with pytest.raises(ValueError, match="unknown sharding strategy"):
        S.axis_rules("zero3")
    mesh = S.make_mesh()
    assert dict(mesh.shape) == {"data": jax.device_count(), "model": 1}
    assert dict(S.axis_rules("fsdp", mesh))["embed"] == "data"  # no fsdp axis: params over data
    plan = S.ShardingPlan(mesh, "tp")
    assert plan.batch_sharding(2).spec == P("data", None) and plan.data_parallel_size == 1
    n = jax.device_count()
    with pytest.raises(ValueError, match=f"needs {2 * n} devices, but only {n}"):
        S.make_mesh(data=2 * n)
    with pytest.raises(ValueError, match="at most one mesh axis may be -1"):
        S.make_mesh(data=-1, model=-1)
    with pytest.raises(ValueError, match="sizes are ints >= 1"):
        S.make_mesh(data=0)
    with pytest.raises(ValueError, match="bad mesh spec"):
        S.resolve_mesh("dta=2")
    assert S.parse_mesh_spec("data=-1, model=2") == {"data": -1, "model": 2}
    with pytest.raises(ValueError, match="needs the boxed abstract params"):
        S.ShardingPlan(mesh, "fsdp").param_shardings({"w": np.zeros((4, 4))})


# ----------------------------------------------------------------------------- 8-device script

def _pairs(n=37):
    rng = np.random.default_rng(0)
    words = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex jovial kings".split()
    return [(" ".join(rng.choice(words, rng.integers(1, 5))), " ".join(rng.choice(words, rng.integers(1, 25))))
            for _ in range(n)]


def _check_cross_encoder(ce_dir, failures):
    import jax
    from jax.sharding import PartitionSpec as P

    from xenc_jax.batching import BucketConfig
    from xenc_jax.cross_encoder import CrossEncoder
    from xenc_jax.sharding import make_mesh, spec_table

    pairs = _pairs()
    buckets = BucketConfig(lengths=(16,), batch_size=4)  # shapes: (rows, 16) and (rows, 64)

    def build(**kw):
        ce = CrossEncoder(ce_dir, max_length=64, buckets=buckets, **kw)
        n_shapes = ce.warmup()
        return ce, ce.predict(pairs), n_shapes

    ref, want, n_shapes = build()
    ref_compiles = ref.compile_count
    assert ref_compiles == n_shapes == 2, (ref_compiles, n_shapes)
    cases = [("data=8", make_mesh(8, 1), "dp"), ("data=4,model=2", make_mesh(4, 2), "tp"),
             ("data=2,model=4", make_mesh(2, 4), "fsdp_tp"),
             ("data=2,fsdp=2,model=2", make_mesh(data=2, fsdp=2, model=2), "fsdp"),
             ("auto", "auto", "dp")]
    expect = {  # param -> spec per strategy (the rules table made concrete)
        "tp": {"encoder/layer_0/attention/query/kernel": P(None, "model", None),
               "encoder/layer_0/attention/query/bias": P("model", None),
               "encoder/layer_0/attention/out/kernel": P("model", None, None),
               "encoder/layer_1/mlp_in/kernel": P(None, "model"),
               "encoder/layer_1/mlp_out/kernel": P("model", None),
               "encoder/embeddings/word/embedding": P(None, None),
               "head/out/kernel": P(None, None)},
        "fsdp_tp": {"encoder/layer_0/attention/query/kernel": P("data", "model", None),
                    "encoder/layer_0/attention/out/kernel": P("model", None, "data"),
                    "encoder/embeddings/word/embedding": P(None, "data"),
                    "encoder/embeddings/norm/scale": P("data"),
                    "head/out/kernel": P("data", None)},
        "fsdp": {"encoder/layer_0/attention/query/kernel": P("fsdp", None, None),
                 "encoder/layer_1/mlp_in/kernel": P("fsdp", None),
                 "encoder/embeddings/word/embedding": P(None, "fsdp")},
        "dp": {"encoder/layer_0/attention/query/kernel": P(None, None, None),
               "encoder/embeddings/word/embedding": P(None, None)},
    }
    for name, mesh, strategy in cases:
        ce, got, shapes = build(mesh=mesh, sharding=strategy)
        compiles = ce.compile_count
        diff = float(np.abs(got - want).max())
        print(f"cross-encoder mesh {name} {strategy}: max diff {diff:.2e}, compiles {compiles}, "
              f"rows multiple {ce.buckets.row_multiple}")
        if got.shape != want.shape or diff > TOL:
            failures.append(f"CE {name} {strategy}: max diff {diff}")
        if compiles != ref_compiles or shapes != n_shapes:
            failures.append(f"CE {name}: {compiles} compiles vs {ref_compiles} single-device")
        if ce.buckets.row_multiple != ce.plan.data_parallel_size:
            failures.append(f"CE {name}: row_multiple {ce.buckets.row_multiple}")
        table = spec_table(jax.tree.map(lambda x: x.sharding, ce.params))  # where params really are
        for param, spec in expect[strategy].items():
            if table[param] != spec:
                failures.append(f"CE {name} {strategy}: {param} placed {table[param]}, expected {spec}")
        if strategy == "tp":  # the modules' with_logical_constraint hints bind under the plan
            from xenc_jax.runner import empty_batch
            runner = ce._runner
            placed = runner._place(runner.arrays(empty_batch(ce.plan.data_parallel_size, 16, 1)))
            with ce.plan.context():
                hlo = runner._fn.jitted.lower(ce.params, placed).as_text()
            qkv = hlo.count('sharding_constraint %') and hlo.count('[{"data"}, {}, {"model"}, {}]>')
            if qkv < 3:  # query, key, value activations [batch, length, heads, kv] per layer
                failures.append(f"CE {name}: {qkv} [batch, length, heads->model, kv] constraints in the HLO")
        if name == "auto" and dict(ce.plan.mesh.shape) != {"data": 8, "model": 1}:
            failures.append(f"mesh='auto' built {dict(ce.plan.mesh.shape)}")
    for ce in (ref, ce):  # compiled already: the hot loop makes explicit transfers only
        try:
            with jax.transfer_guard("disallow"):
                ce.predict(pairs)
        except Exception as e:
            failures.append(f"implicit transfer (mesh {ce.plan and dict(ce.plan.mesh.shape)}): {e}")


    # packed rows (several pairs per row, outputs [B, P, 1]) on a sharded mesh
    packing = dataclasses.replace(buckets, pack=True, max_segments=4)
    packed_ref = CrossEncoder(ce_dir, max_length=64, buckets=packing).predict(pairs)
    packed = CrossEncoder(ce_dir, max_length=64, buckets=packing, mesh=make_mesh(2, 4),
                          sharding="fsdp_tp").predict(pairs)
    diff = max(float(np.abs(packed - packed_ref).max()), float(np.abs(packed - want).max()))
    print(f"packed cross-encoder mesh data=2,model=4 fsdp_tp: max diff {diff:.2e}")
    if diff > TOL:
        failures.append(f"CE packed on data=2,model=4: max diff {diff}")


def _check_bi_encoder_and_search(st_dir, failures):
    from xenc_jax import search
    from xenc_jax.batching import BucketConfig
    from xenc_jax.bi_encoder import BiEncoder
    from xenc_jax.sharding import make_mesh

    texts = [b for _, b in _pairs(29)] + ["", "x"]
    buckets = BucketConfig(lengths=(16,), batch_size=4)
    ref = BiEncoder(st_dir, buckets=buckets)
    want = ref.encode(texts)
    assert want.shape == (31, 16)
    for name, mesh, strategy in (("data=8", make_mesh(8, 1), "dp"), ("data=2,model=4", make_mesh(2, 4), "tp")):
        be = BiEncoder(st_dir, buckets=buckets, mesh=mesh, sharding=strategy)
        got = be.encode(texts)
        diff = float(np.abs(got - want).max())
        print(f"bi-encoder mesh {name} {strategy}: max diff {diff:.2e}, compiles {be.compile_count} "
              f"(single device {ref.compile_count})")
        if got.shape != want.shape or diff > TOL:
            failures.append(f"BE {name}: max diff {diff}")
        if be.compile_count != ref.compile_count:
            failures.append(f"BE {name}: {be.compile_count} compiles vs {ref.compile_count}")
        # semantic_search over the same meshes (its shard_map mode), on these embeddings
        q, corpus = want[:5], want[5:]
        plain = search.semantic_search(q, corpus, top_k=7, corpus_chunk_size=12)
        for axis in ("data", "model"):
            hits = search.semantic_search(q, corpus, top_k=7, corpus_chunk_size=12, mesh=be.plan.mesh,
                                          corpus_axis=axis)
            ids_ok = [[h["corpus_id"] for h in r] for r in hits] == [[h["corpus_id"] for h in r] for r in plain]
            sdiff = max(abs(a["score"] - b["score"]) for ra, rb in zip(hits, plain) for a, b in zip(ra, rb))
            if not ids_ok or sdiff > 1e-6:
                failures.append(f"search mesh {name} over {axis}: ids equal {ids_ok}, score diff {sdiff}")


def _check_indivisible_and_errors(ce_dir, failures):
    from jax.sharding import PartitionSpec as P

    from xenc_jax.cross_encoder import CrossEncoder
    from xenc_jax.hf.pretrained import load_pretrained
    from xenc_jax.sharding import ShardingPlan, make_mesh, spec_table

    module = load_pretrained(ce_dir, with_tokenizer=False).module()
    ids = np.zeros((1, 2), np.int32)
    mesh = make_mesh(data=1, model=8)  # 4 heads cannot split 8 ways; mlp 64 can
    table = spec_table(ShardingPlan(mesh, "tp").module_param_shardings(module, ids, ids))
    if table["encoder/layer_0/attention/query/kernel"] != P(None, None, None) or \
            table["encoder/layer_0/mlp_in/kernel"] != P(None, "model"):
        failures.append(f"indivisible heads not left replicated: {table['encoder/layer_0/attention/query/kernel']}")
    try:
        ShardingPlan(mesh, "tp", strict=True).module_param_shardings(module, ids, ids)
        failures.append("strict=True accepted 4 heads over model=8")
    except ValueError as e:
        if "not divisible by mesh axes model (size 8)" not in str(e):
            failures.append(f"unclear strict error: {e}")
    for kwargs, message in ((dict(data=16), "needs 16 devices, but only 8 are available"),
                            (dict(data=3), "uses 3 of the 8 devices"),
                            (dict(data=-1, model=3), "not divisible by the fixed axes")):
        try:
            make_mesh(**kwargs)
            failures.append(f"make_mesh({kwargs}) accepted")
        except ValueError as e:
            if message not in str(e):
                failures.append(f"make_mesh({kwargs}): unclear error {e}")
    try:
        CrossEncoder(ce_dir, max_length=64, mesh="data=4,model=4")
        failures.append("CrossEncoder accepted a 16-device mesh on 8 devices")
    except ValueError as e:
        if "needs 16 devices" not in str(e):
            failures.append(f"CrossEncoder mesh error unclear: {e}")


def _main(ce_dir, st_dir) -> int:
    sys.path.insert(0, str(REPO))
    import jax
    assert jax.device_count() == 8, jax.devices()
    failures: list[str] = []
    _check_cross_encoder(ce_dir, failures)
    _check_bi_encoder_and_search(st_dir, failures)
    _check_indivisible_and_errors(ce_dir, failures)
    from forced_devices import report
    return report(failures)


if __name__ == "__main__":
    sys.exit(_main(*sys.argv[1:3]))
