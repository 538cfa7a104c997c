"""Training data from a directory of Parquet shards or a `datasets` save_to_disk folder (issue 31):
the same examples, in the same order, as the TSV they were written from (real STS-B rows), the
same per-process shards, a bad value named by shard and row, and a config digest that sees an
edited shard."""
from __future__ import annotations

import dataclasses

import pytest

from xenc_jax.train.data import DataSource, read_examples
from xenc_jax.train.rows import DataError


@pytest.fixture(scope="module")
def sts(data_dir, tmp_path_factory):
    """STS-B train (5749 real pairs) read from its TSV, and the same rows written as 3 Parquet
    shards and as a save_to_disk folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset
    src = DataSource(path=str(data_dir / "stsbenchmark" / "sts-train.csv"), format="tsv", kind="pairs",
                     columns=(5, 6), label_column=4, label_scale=0.2, extra_columns="ignore")
    raw = DataSource(**{**dataclasses.asdict(src), "label_scale": 1.0})
    ex = read_examples(raw)
    table = {"sentence1": [a for a, _ in ex.texts], "sentence2": [b for _, b in ex.texts], "score": ex.labels}
    out = tmp_path_factory.mktemp("sources")
    shards = out / "shards"
    shards.mkdir()
    n = len(ex.texts)
    for k, (lo, hi) in enumerate([(0, 2000), (2000, 4000), (4000, n)]):
        pq.write_table(pa.table({c: v[lo:hi] for c, v in table.items()}), shards / f"part-{k:05d}.parquet",
                       row_group_size=700)
    Dataset.from_dict(table).save_to_disk(str(out / "hf"))
    named = dict(columns=("sentence1", "sentence2"), label_column="score", label_scale=0.2, kind="pairs")
    return src, out, named


@pytest.mark.parametrize("where", ["shards", "hf"])
def test_table_sources_read_like_the_tsv(sts, where):
    src, out, named = sts
    want = read_examples(src)
    table = DataSource(path=str(out / where), **named)   # format auto: found from the folder
    got = read_examples(table)
    assert got.texts == want.texts and got.labels == want.labels and len(got) == 5749
    for pi in range(3):  # row i -> process i % 3, as for a file
        part = read_examples(table, process_index=pi, process_count=3)
        assert part.texts == want.texts[pi::3] and part.labels == want.labels[pi::3]


def test_bad_values_name_the_shard_and_row(sts, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    _, _, named = sts
    good = pa.table({"sentence1": ["a", "b"], "sentence2": ["c", "d"], "score": [1.0, 2.0]})
    pq.write_table(good, tmp_path / "part-0.parquet")
    pq.write_table(pa.table({"sentence1": ["a", None], "sentence2": ["c", "d"], "score": [1.0, 2.0]}),
                   tmp_path / "part-1.parquet")
    with pytest.raises(DataError, match=r"part-1\.parquet row 1: column 'sentence1' is a JSON null"):
        read_examples(DataSource(path=str(tmp_path), **named))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .parquet files in this directory"):
        read_examples(DataSource(path=str(tmp_path / "empty"), format="parquet", **named))
    with pytest.raises(DataError, match="does not exist"):
        read_examples(DataSource(path=str(tmp_path / "absent"), format="parquet", **named))


def test_config_digest_sees_an_edited_shard(sts, tmp_path, minilm_dir):
    import shutil

    from xenc_jax.train.config import TrainConfig
    from xenc_jax.train.digest import config_digest
    _, out, named = sts
    shards = tmp_path / "shards"
    shutil.copytree(out / "shards", shards)
    cfg = TrainConfig(train=DataSource(path=str(shards), **named))
    before = config_digest(cfg, minilm_dir)["train.file"]
    assert sorted(before) == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    shutil.copy(shards / "part-00000.parquet", shards / "part-00002.parquet")
    after = config_digest(cfg, minilm_dir)["train.file"]
    assert after["part-00002.parquet"] != before["part-00002.parquet"]
    assert after["part-00000.parquet"] == before["part-00000.parquet"]
