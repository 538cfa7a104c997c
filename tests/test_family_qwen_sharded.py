"""Qwen3 on 8 forced CPU devices: a causal-LM scorer (yes/no columns of the LM head) and the
lasttoken bi-encoder give the one-device results on dp, fsdp, tp and fsdp_tp meshes, and a second
call compiles nothing new; training a causal reranker (chat-template rows, BCE on logit[yes] -
logit[no]) on dp, fsdp and fsdp_tp (model axis 4 > 2 kv heads), with each layer rematerialised,
gives the one-device plain run's losses and params.

tp uses a model axis of 4 with num_attention_heads 4 and num_key_value_heads 2: one query head
per device while the 2 kv heads ('kv_heads') stay replicated (sharding.py), each device
repeating them to its query head. intermediate_size 48 (not tiny_llm's 37) so the MLP really
splits over model=4 (a dimension that does not divide is left replicated).

The scorer runs the model-level path CrossEncoder runs: load_pretrained(plan=) straight into the
mesh, SequenceClassifier.apply at each packed segment's last token, placement.setup_sharding,
BucketedRunner. All meshes run in ONE subprocess (jax must see the forced devices at import).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# Same weights, same inputs, only the partitioning differs: the sums are split over devices
# (fsdp all-gathers, tp reduces the attention output / MLP partial sums), so fp32 rounding
# differs by a few ulp; 1e-5 on unit-norm embeddings and O(1) logits, as the other sharded tests.
SHARD_TOL = 1e-5
MLP = 48


@pytest.fixture(scope="module")
def qwen_dirs(tmp_path_factory):
    from tiny_llm import make_st_lasttoken_embedder, make_tiny_llm
    scorer = tmp_path_factory.mktemp("qwen3_scorer")
    make_tiny_llm("qwen3-causal", scorer, template=None, intermediate_size=MLP)
    emb = tmp_path_factory.mktemp("qwen3_emb")
    make_st_lasttoken_embedder(emb, intermediate_size=MLP)
    reranker = tmp_path_factory.mktemp("qwen3_reranker")
    make_tiny_llm("qwen3-causal", reranker, template="reranker", intermediate_size=MLP)
    return scorer, emb / "st", reranker


def test_dp_fsdp_tp_fsdp_tp_on_8_devices_equal_one_device(qwen_dirs, tmp_path):
    from forced_devices import run_on_devices
    from test_train_utils import write_pairs
    scorer, st_dir, reranker = qwen_dirs
    data = write_pairs(tmp_path / "pairs.tsv", n=24)
    run_on_devices([__file__, str(scorer), str(st_dir), str(reranker), str(data)], devices=8, timeout=420)


# ---- the subprocess ----

MESHES = {  # name -> (make_mesh args, strategy)
    "dp": ((8, 1), {}, "dp"),
    "fsdp": ((1, 1), {"fsdp": 8}, "fsdp"),
    "tp": ((2, 4), {}, "tp"),
    "fsdp_tp": ((1, 4), {"fsdp": 2}, "fsdp_tp"),
}


def _scorer(folder: str, buckets, mesh, strategy: str):
    """(score(pairs) -> [n] logits, runner, shardings): CrossEncoder's model-level path."""
    from xenc_jax.batching import make_batches, scatter_results, tokenize_pairs
    from xenc_jax.hf.pretrained import load_pretrained
    from xenc_jax.placement import loading_on_host, setup_sharding
    from xenc_jax.runner import BucketedRunner
    from xenc_jax.models.attention_impl import default_attention_impl
    from xenc_jax.sharding import ShardingPlan

    with loading_on_host(mesh):
        pt = load_pretrained(folder, head=True, num_labels=1,
                             plan=None if mesh is None else ShardingPlan(mesh, strategy))
    assert pt.config.head_kind == "lm" and len(pt.config.score_token_ids) == 2, pt.config
    module = pt.module(attention_impl=default_attention_impl(mesh))
    off = pt.config.position_offset
    plan, params, shardings, buckets = setup_sharding(module, pt.params, buckets, mesh, strategy)

    def fn(p, a):
        return module.apply({"params": p}, a["input_ids"], a["attention_mask"], a["token_type_ids"],
                            a["position_ids"] + off, a["cls_positions"])

    runner = BucketedRunner(fn, plan=plan, param_shardings=shardings)
    max_len = buckets.lengths[-1]

    def score(pairs):
        enc = tokenize_pairs(pt.tokenizer, pairs, max_len)
        out = runner.run(params, make_batches(enc, buckets, max_len, pt.tokenizer.pad_token_id),
                         show_progress=False, shapes=buckets.resolve(max_len)[::-1], segments=buckets.segments)
        return scatter_results(out, len(enc))[:, 0]

    return score, runner, shardings


TRAIN_LENGTH = 96   # the reranker template's fixed text is 68 tokens (tests/tiny_llm.py)


def _training(reranker_dir: str, data: str, failures: list) -> None:
    """SGD steps (test_train_sharded._train: params after SGD are well-conditioned in the
    gradient, see there) on one device without remat vs sharded meshes with remat."""
    import dataclasses

    from test_train_sharded import SGD_LR, STEPS, _train
    from xenc_jax.chat_format import pair_encoder
    from xenc_jax.hf.pretrained import load_pretrained
    from xenc_jax.sharding import make_mesh
    from xenc_jax.train import data as D
    from xenc_jax.train import step as S
    pt = load_pretrained(reranker_dir, head=True)
    enc = pair_encoder(reranker_dir, pt.tokenizer, pt.config, TRAIN_LENGTH)
    groups = D.make_groups(D.read_examples(D.DataSource(path=data)), pt.tokenizer, TRAIN_LENGTH, encode_pairs=enc)
    stream = D.BatchStream(groups, D.StreamConfig(batch_size=8, bucket_lengths=(TRAIN_LENGTH,),
                                                  max_length=TRAIN_LENGTH, pad_token_id=pt.tokenizer.pad_token_id, seed=3))
    import jax
    want, want_losses, _ = _train(pt, stream, S.make_plan("dp", make_mesh(devices=jax.devices()[:1])), STEPS, SGD_LR)
    remat = dataclasses.replace(pt, config=dataclasses.replace(pt.config, remat=True))
    for strategy, mesh in (("dp", make_mesh(data=8)), ("fsdp", make_mesh(data=8)),
                           ("fsdp_tp", make_mesh(data=2, model=4))):
        got, losses, _ = _train(remat, stream, S.make_plan(strategy, mesh), STEPS, SGD_LR)
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)))
        moved = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(pt.params)))
        print(f"causal training {strategy} (remat): max |param diff| vs 1 device {diff:.3g} (moved {moved:.3g}); "
              f"losses {np.round(losses, 6).tolist()} vs {np.round(want_losses, 6).tolist()}")
        if not diff <= SHARD_TOL or not moved > 1e-4:
            failures.append(f"causal training {strategy}: diff {diff}, moved {moved}")
        if not np.allclose(losses, want_losses, atol=SHARD_TOL):
            failures.append(f"causal training {strategy}: losses differ")


def _main(scorer_dir: str, st_dir: str, reranker_dir: str, data: str) -> int:
    sys.path.insert(0, str(REPO))
    import jax

    from xenc_jax.batching import BucketConfig
    from xenc_jax.bi_encoder import BiEncoder
    from xenc_jax.sharding import make_mesh, spec_table
    assert jax.device_count() == 8, jax.devices()
    rng = np.random.default_rng(0)
    words = "yes no the cat a dog sees likes the red ball a long book near the sea today".split()
    text = lambda n: " ".join(rng.choice(words, n))
    pairs = [(text(int(rng.integers(1, 6))), text(int(rng.integers(1, 40)))) for _ in range(13)]
    texts = [p[1] for p in pairs] + [text(60), ""]   # 60 words > max_seq_length 48: truncated
    # One shape per model (compiles dominate on 2 cores); packed: segments end mid-row, so each
    # segment's last token is read where rows are split over devices. 8 rows split over every dp size.
    buckets = BucketConfig(lengths=(64,), batch_size=8, pack=True, max_segments=4)
    failures = []

    def check(what, got, want, before, after):
        diff = float(np.abs(np.asarray(got) - np.asarray(want)).max())
        print(f"qwen3 {what}: max diff {diff:.2e}, compiles {before} -> {after}")
        if got.shape != want.shape or not diff <= SHARD_TOL:
            failures.append(f"{what}: shape {got.shape} vs {want.shape}, diff {diff}")
        if after != before or before != 1:
            failures.append(f"{what}: compile count {before} then {after} (one bucket shape: expected 1, 1)")

    score, _, _ = _scorer(scorer_dir, buckets, None, "dp")
    want_scores = score(pairs)
    be_buckets = BucketConfig(lengths=(48,), batch_size=8, pack=True, max_segments=4)
    want_emb = BiEncoder(st_dir, buckets=be_buckets).encode(texts, prompt_name="query")
    for name, (args, kwargs, strategy) in MESHES.items():
        mesh = make_mesh(*args, **kwargs)
        score, runner, shardings = _scorer(scorer_dir, buckets, mesh, strategy)
        got = score(pairs)
        before = runner.compile_count
        again = score(pairs)
        check(f"causal-LM scorer {name}", got, want_scores, before, runner.compile_count)
        if not np.array_equal(again, got):
            failures.append(f"scorer {name}: second call differs")
        if name == "tp":   # heads split over model=4, the 2 kv heads whole
            specs = spec_table(shardings)
            q, k = (specs[f"encoder/layer_0/attention/{n}/kernel"] for n in ("query", "key"))
            print(f"tp query {q}, key {k}")
            if tuple(q)[1] != "model" or any(k):
                failures.append(f"tp specs: query {q}, key {k}")
        be = BiEncoder(st_dir, buckets=be_buckets, mesh=mesh, sharding=strategy)
        got = be.encode(texts, prompt_name="query")
        before = be.compile_count
        again = be.encode(texts, prompt_name="query")
        check(f"bi-encoder {name}", got, want_emb, before, be.compile_count)
        if not np.array_equal(again, got):
            failures.append(f"bi-encoder {name}: second call differs")
    _training(reranker_dir, data, failures)
    from forced_devices import report
    return report(failures)


if __name__ == "__main__":
    sys.exit(_main(*sys.argv[1:5]))
