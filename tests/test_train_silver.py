"""Silver pairs (xenc_jax/train/silver.py): the mined pairs equal a plain numpy reading of the
rule on real STS-B rows with the real all-MiniLM-L6-v2, and training with them is training on
gold + exactly those pairs."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from test_train_utils import make_tiny_model, tiny_config, write_pairs
from xenc_jax.train.config import ConfigError, apply_overrides
from xenc_jax.train.data import DataSource, read_examples
from xenc_jax.train.silver import SilverConfig, for_config, mine


def _reference(texts, labels, emb, per_text, max_rank):
    """The rule in numpy, written out: nearest first (ties: lower index), skip self, gold pairs,
    case-insensitive duplicates and pairs already taken."""
    sents = sorted({t for p in texts for t in p})
    idx = {s: i for i, s in enumerate(sents)}
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    cos = unit.astype(np.float64) @ unit.T.astype(np.float64)
    gold_cos = [cos[idx[a], idx[b]] for a, b in texts]
    slope, intercept = np.polyfit(gold_cos, labels, 1)
    gold = {(idx[a], idx[b]) for a, b in texts} | {(idx[b], idx[a]) for a, b in texts}
    out, seen = {}, set()
    for i in range(len(sents)):
        order = [j for j in np.argsort(-cos[i], kind="stable") if j != i][:max_rank]
        taken = 0
        for j in order:
            key = (min(i, j), max(i, j))
            if taken == per_text or (i, j) in gold or key in seen or sents[i].lower() == sents[j].lower():
                continue
            seen.add(key)
            out[(sents[i], sents[j])] = float(np.clip(slope * cos[i, j] + intercept, min(labels), max(labels)))
            taken += 1
    return out, cos, sents


@pytest.fixture(scope="module")
def minilm_embed(minilm_dir):
    """The real all-MiniLM-L6-v2's embeddings of a list of sentences, encoded once per distinct
    list: both cases below mine the same 400 rows, so the second reuses the first's encoding
    (the same model and sentences give the same embeddings; mine() is what is checked)."""
    from xenc_jax.bi_encoder import BiEncoder
    enc, memo = BiEncoder(str(minilm_dir)), {}

    def embed(sents):
        key = tuple(sents)
        if key not in memo:
            memo[key] = np.asarray(enc.encode(list(key)))
        return memo[key]
    return embed


@pytest.mark.parametrize("per_text,max_rank", [(1, 3), (2, 5)])
def test_mined_pairs_follow_the_rule_on_real_stsb(data_dir, minilm_embed, per_text, max_rank):
    src = DataSource(path=str(data_dir / "stsbenchmark" / "sts-train.csv"), format="tsv", columns=(5, 6),
                     label_column=4, label_scale=0.2, rows=(0, 400))
    gold = read_examples(src)
    cache = {}

    def embed(sents):
        cache["emb"] = minilm_embed(sents)
        return cache["emb"]

    got = mine(gold.texts, gold.labels, embed, per_text, max_rank)
    want, cos, sents = _reference(gold.texts, gold.labels, cache["emb"], per_text, max_rank)
    # The data has no near-ties that float rounding could flip, so the sets must be equal.
    assert got.texts == list(want)
    np.testing.assert_allclose(got.labels, list(want.values()), atol=1e-5)
    assert len(got) > 0.8 * per_text * len(sents)  # most texts found their partners
    lab = np.array(got.labels)
    assert 0.0 <= lab.min() and lab.max() <= 1.0 and np.ptp(lab) > 0.2  # graded, gold range
    gold_pairs = {tuple(p) for p in gold.texts} | {(b, a) for a, b in gold.texts}
    assert not gold_pairs & set(got.texts)


def test_silver_config_is_checked_before_compute():
    from xenc_jax.train.config import TrainConfig
    base = TrainConfig(train=DataSource(path="x.tsv"))
    assert apply_overrides(base, ["silver.per_text=2", "silver.max_rank=4"]).validate().silver.per_text == 2
    with pytest.raises(ConfigError, match="per_text=4 exceeds silver.max_rank=3"):
        apply_overrides(base, ["silver.per_text=4"]).validate()
    with pytest.raises(ConfigError, match="non-negative int"):
        apply_overrides(base, ["silver.per_text=-1"]).validate()
    with pytest.raises(ConfigError, match="pair-regression cross-encoder"):
        apply_overrides(base, ["silver.per_text=1", "loss=ce", "num_labels=3"]).validate()
    with pytest.raises(ConfigError, match="pair-regression cross-encoder"):
        apply_overrides(base, ["silver.per_text=1", "task=bi_encoder", "loss=cosent"]).validate()


def test_training_with_silver_equals_training_on_gold_plus_those_pairs(tmp_path):
    from xenc_jax.train.loop import train
    model = make_tiny_model(tmp_path / "model")
    data = write_pairs(tmp_path / "pairs.tsv", n=40)
    # one batch shape (gold and silver pairs are <= 29 tokens): one compile per train step, not two
    cfg = tiny_config(model, data, tmp_path / "silver", max_steps=6, silver=SilverConfig(per_text=1, max_rank=2),
                      bucket_lengths=(32,))
    got = train(cfg)
    rows = [json.loads(l) for l in (tmp_path / "silver" / "silver_pairs.jsonl").read_text().splitlines()[1:]]
    assert got["silver_pairs"] == len(rows) > 10
    again = for_config(cfg, read_examples(cfg.train))
    assert [(r["text1"], r["text2"]) for r in rows] == again.texts
    assert [r["label"] for r in rows] == again.labels
    # The same run on a file holding gold rows then the silver rows, silver off: same weights.
    both = tmp_path / "both.tsv"
    both.write_text(data.read_text() + "".join(f"{r['text1']}\t{r['text2']}\t{r['label']!r}\n" for r in rows))
    ref = train(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, path=str(both)),
                                    silver=SilverConfig(), output_dir=str(tmp_path / "plain")))
    assert got["steps_per_epoch"] == ref["steps_per_epoch"]
    a, b = got["state"].params, ref["state"].params
    import jax
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert any(not np.array_equal(np.asarray(x), np.asarray(y)) for x, y in
               zip(jax.tree.leaves(a), jax.tree.leaves(train(dataclasses.replace(
                   cfg, silver=SilverConfig(), output_dir=str(tmp_path / "gold")))["state"].params)))


def test_each_process_gets_the_silver_rows_it_would_read_from_one_file(tmp_path):
    from xenc_jax.train.silver import SilverPairs, shard
    gold = write_pairs(tmp_path / "gold.tsv", n=7)
    silver = SilverPairs([(f"s{k}", f"t{k}") for k in range(11)], [k / 10 for k in range(11)], 1.0, 0.0)
    both = tmp_path / "both.tsv"
    both.write_text(gold.read_text() + "".join(f"{a}\t{b}\t{y!r}\n" for (a, b), y in zip(silver.texts, silver.labels)))
    for pc in (1, 2, 3, 4):
        for pi in range(pc):
            mine_g = read_examples(DataSource(path=str(gold)), process_index=pi, process_count=pc)
            texts, labels = shard(silver, 7, pi, pc)
            want = read_examples(DataSource(path=str(both)), process_index=pi, process_count=pc)
            assert mine_g.texts + texts == want.texts and mine_g.labels + labels == want.labels


def test_resume_reuses_the_saved_pairs_and_only_for_the_same_settings(tmp_path):
    """A resumed run trains on the pairs saved with its checkpoints, not on pairs mined again
    (which could differ at near-ties on other hardware). Shown by editing the saved file: the
    resumed run sees the edit; with other silver settings the file is not used."""
    from xenc_jax.train.loop import train
    from xenc_jax.train.silver import meta_for, read_jsonl
    model = make_tiny_model(tmp_path / "model")
    data = write_pairs(tmp_path / "pairs.tsv", n=40)
    out = tmp_path / "run"
    # one batch shape (pairs <= 29 tokens): one compile per train step instead of two
    cfg = tiny_config(model, data, out, max_steps=3, silver=SilverConfig(per_text=1, max_rank=2),
                      bucket_lengths=(32,))
    first = train(cfg)
    saved = out / "silver_pairs.jsonl"
    lines = saved.read_text().splitlines()
    assert json.loads(lines[0])["meta"]["silver"]["per_text"] == 1
    saved.write_text("\n".join(lines[:-2]) + "\n")  # drop the last two pairs
    resumed = train(dataclasses.replace(cfg, max_steps=6, resume_may_change=("max_steps",)))
    assert resumed["steps_run_now"] == 3 and resumed["silver_pairs"] == first["silver_pairs"] - 2
    gold = read_examples(cfg.train)
    assert read_jsonl(saved, meta_for(cfg, len(gold))) is not None
    other = dataclasses.replace(cfg, silver=SilverConfig(per_text=1, max_rank=3))
    assert read_jsonl(saved, meta_for(other, len(gold))) is None
    fresh = train(dataclasses.replace(other, output_dir=str(tmp_path / "other"), max_steps=1))
    assert fresh["silver_pairs"] >= first["silver_pairs"]  # mined anew, over more candidates
