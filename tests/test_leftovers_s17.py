"""Small user-facing leftovers of the training walk-through (session 17): each test reproduces
what a user saw and checks the fix on real files, without compiling a model."""
from __future__ import annotations

import numpy as np


def test_bi_encoder_export_keeps_source_pooler(minilm_dir, tmp_path):
    """A bi-encoder export of all-MiniLM-L6-v2 (BertModel) carries the source's pooler tensors
    unchanged: transformers (and so sentence-transformers 6.3) loads it reporting no MISSING /
    newly initialized weights. BiHead.export on the source's own params (what an export after
    0 steps writes): no compile needed."""
    from transformers import AutoModel

    from xenc_jax.hf.checkpoint_files import read_checkpoint
    from xenc_jax.train.bi_head import load_with_head
    from xenc_jax.train.config import TrainConfig
    cfg = TrainConfig(model=str(minilm_dir), task="bi_encoder", loss="mnrl")
    pt, head = load_with_head(cfg, minilm_dir)
    out = head.export(tmp_path / "export", pt.config, pt.params, pt.tokenizer, 64)
    model, info = AutoModel.from_pretrained(str(out), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    src, ours = read_checkpoint(minilm_dir), read_checkpoint(out)
    for k in ("pooler.dense.weight", "pooler.dense.bias"):
        np.testing.assert_array_equal(ours[k], src[k])   # copied, not trained: bit-equal
    # and the encoder weights are the export's params, untouched by the rewrite of the file
    np.testing.assert_array_equal(ours["embeddings.word_embeddings.weight"], src["embeddings.word_embeddings.weight"])


def test_bi_encoder_save_keeps_source_pooler(minilm_dir, tmp_path):
    """BiEncoder.save of all-MiniLM-L6-v2 carries the pooler too (it did not: transformers, and so
    sentence-transformers 6.3, reported pooler.dense.* MISSING / newly initialized); no compile."""
    from transformers import AutoModel

    from xenc_jax import BiEncoder
    from xenc_jax.hf.checkpoint_files import read_checkpoint
    out = BiEncoder(str(minilm_dir), autotune=False).save(tmp_path / "saved")
    _, info = AutoModel.from_pretrained(str(out), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    np.testing.assert_array_equal(read_checkpoint(out)["pooler.dense.weight"],
                                  read_checkpoint(minilm_dir)["pooler.dense.weight"])


def _near_untrained_select(**filters):
    """mining_core.select (the filters mine_hard_negatives and `xenc mine` apply) on what a
    near-untrained teacher gives: every candidate scores about as the positive (0.29..0.31 vs 0.30)."""
    import random
    from collections import Counter

    from xenc_jax.mining_core import select
    from xenc_jax.mining_options import Options
    n, w = 3, 8
    scores = np.linspace(0.31, 0.29, w, dtype=np.float32)[None].repeat(n, 0)
    ids = np.arange(w)[None].repeat(n, 0) + 10        # corpus ids 10..17; positives are 0..2
    o = Options(range_min=0, range_max=w, num_negatives=2, sampling_strategy="top", include_positives=False,
                **{"absolute_margin": None, "relative_margin": None, "max_score": None, "min_score": None, **filters})
    skipped = Counter()
    _, neg_s = select(scores, ids, np.full(n, -1), [[i] for i in range(n)], 20, np.full(n, 0.30, np.float32),
                      o, random.Random(0), skipped)
    return o, skipped, neg_s


def test_mine_shortfall_names_the_filter(capsys):
    """--relative-margin 0.05 on a near-untrained teacher leaves no negative: `xenc mine` says the
    relative margin removed them (its share of the candidates) and which flag loosens it, instead of
    writing 0 rows silently; without filters, a too-narrow range is named instead."""
    from collections import Counter

    from xenc_jax.cli.mine import _shortfall
    from xenc_jax.mining_rows import shortfall_hint
    o, skipped, neg_s = _near_untrained_select(relative_margin=0.05)
    assert np.isinf(neg_s).all()   # the reproduction: every negative removed (0.31..0.29 > 0.30 * 0.95)
    stats = Counter(anchors_now=3, rows_now=0, short_anchors=int(np.isinf(neg_s).any(1).sum()),
                    **{f"skipped:{k}": v for k, v in skipped.items()})
    _shortfall(stats, o)
    err = capsys.readouterr().err
    assert "3 of 3 anchors got fewer than 2 negative(s) (0 output rows)" in err, err
    assert "relative_margin removed 24 of 24 candidates (100%)" in err and "lower --relative-margin (now 0.05)" in err
    # the library's wording names its parameters; no filter removing anything points at the range
    o, skipped, neg_s = _near_untrained_select()
    assert not np.isinf(neg_s).any()
    hint = shortfall_hint(skipped, o)
    assert "No filter removed candidates" in hint and "raise range_max" in hint, hint
    o, skipped, _ = _near_untrained_select(absolute_margin=0.0, max_score=0.296)
    hint = shortfall_hint(skipped, o)
    assert "absolute_margin removed" in hint and "max_score removed" in hint and "raise max_score" in hint, hint


def test_short_row_hint_names_the_files_format(tmp_path):
    """A row with too few columns: the hint names the format actually read (a semicolon-separated
    file read as csv was asked "is the file tab-separated as expected?")."""
    import pytest

    from xenc_jax.train.data import DataSource, read_examples
    from xenc_jax.train.rows import DataError
    for fmt, name, text in (("csv", "pairs.csv", "a question;an answer;1\n"),
                            ("tsv", "pairs.tsv", "a question an answer 1\n"),
                            ("jsonl", "pairs.jsonl", '["a question", "an answer"]\n')):
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(DataError) as e:
            read_examples(DataSource(path=str(path), format="auto"))
        msg = str(e.value)
        assert f"{path}:1" in msg and "missing column" in msg, msg
        want = {"csv": "comma-separated as expected (format csv)", "tsv": "tab-separated as expected (format tsv)",
                "jsonl": "does every row hold all the columns the config names?"}[fmt]
        assert want in msg, msg


def test_resume_mismatch_suggests_only_what_resume_may_change_can_allow(tmp_path):
    """A resume whose changed settings also change the state's structure (ema_decay 0 -> 0.9 adds
    an EMA) was told "--set resume_may_change=ema_decay", which the structure check then refused:
    now the refusal says no resume_may_change can allow it and shows the structure difference.
    A change that keeps the structure gets the suggestion, named as config keys validate() accepts
    (a label_map entry -> train.label_map). A tiny TrainState in a real orbax checkpoint: no model."""
    import dataclasses

    import jax
    import jax.numpy as jnp
    import pytest

    from xenc_jax.train.checkpoint import CheckpointMismatchError, Checkpointer
    from xenc_jax.train.config import TrainConfig
    from xenc_jax.train.data import DataSource
    from xenc_jax.train.step import TrainState
    params = {"w": jnp.ones((2, 3), jnp.float32)}
    state = TrainState(jnp.asarray(2, jnp.int32), params, {"mu": jnp.zeros((2, 3), jnp.float32)})
    old = {"ema_decay": 0.0, "batch_size": 8, "train.label_map.yes": 1}
    ckpt = Checkpointer(tmp_path / "checkpoints", every_steps=1, async_save=False)
    ckpt.save(2, state, {"config_digest": old}, force=True)
    ckpt.wait()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    with_ema = dataclasses.replace(abstract, ema=abstract.params)
    with pytest.raises(CheckpointMismatchError) as e:
        ckpt.restore_latest(with_ema, digest={**old, "ema_decay": 0.9})
    msg = str(e.value)
    assert "ema_decay: 0.0 -> 0.9" in msg and "no resume_may_change can allow" in msg, msg
    assert "ema: this run has it" in msg and "resume_may_change=" not in msg and "new output_dir" in msg, msg
    with pytest.raises(CheckpointMismatchError) as e:
        ckpt.restore_latest(abstract, digest={**old, "batch_size": 4, "train.label_map.yes": 0})
    msg = str(e.value)
    assert "--set resume_may_change=batch_size,train.label_map " in msg, msg
    data = tmp_path / "pairs.tsv"
    data.write_text("a\tb\t1\n")
    TrainConfig(train=DataSource(path=str(data)),
                resume_may_change=("batch_size", "train.label_map")).validate()   # accepted as suggested
    restored, _ = ckpt.restore_latest(abstract, digest={**old, "batch_size": 4, "train.label_map.yes": 0},
                                      may_change=("batch_size", "train.label_map"))
    assert int(restored.step) == 2
    ckpt.close()
