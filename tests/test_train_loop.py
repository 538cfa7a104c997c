"""End to end on a tiny model: train with an evaluator, log to JSON Lines + TensorBoard, export,
and the exported model scores identically in PyTorch sentence-transformers."""
from __future__ import annotations

import json

import numpy as np
import pytest

from test_train_utils import make_tiny_model, tiny_config, write_pairs
from xenc_jax.train.config import EvalConfig
from xenc_jax.train.data import DataSource


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from xenc_jax.train.loop import train
    root = tmp_path_factory.mktemp("loop")
    model = make_tiny_model(root / "model")
    data = write_pairs(root / "pairs.tsv", n=48)
    dev = write_pairs(root / "dev.tsv", n=20, seed=1)
    ev = EvalConfig(kind="correlation", data=DataSource(path=str(dev)), name="dev")
    cfg = tiny_config(model, data, root / "out", epochs=2, evaluator=ev, test=ev, eval_every=3)
    return cfg, train(cfg), dev


def test_logs_metrics_and_exports(trained):
    cfg, summary, _ = trained
    out = cfg.out_dir()
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("train/loss" in r and "train/pairs_per_s" in r for r in rows)
    assert sum("eval/spearman" in r for r in rows) == 4  # steps 3, 6, 9, 12 (12 = the end)
    assert any("test/spearman" in r for r in rows)
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert summary["steps"] == 12 and (out / "final" / "model.safetensors").is_file()
    assert (out / "best" / "config.json").is_file() and summary["best"]["metric"] == "spearman"
    assert np.isfinite(summary["test_final"]["spearman"])


def test_exported_model_scores_identically_in_sentence_transformers(trained):
    from sentence_transformers import CrossEncoder as STCrossEncoder

    from xenc_jax.cross_encoder import CrossEncoder
    from xenc_jax.train.data import read_examples
    cfg, _, dev = trained
    pairs = [tuple(t) for t in read_examples(DataSource(path=str(dev))).texts]
    final = cfg.out_dir() / "final"
    ours = CrossEncoder(str(final)).predict(pairs)
    theirs = STCrossEncoder(str(final), device="cpu").predict(pairs)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    assert np.ptp(ours) > 1e-3  # not a constant model


def test_xenc_eval_matches_the_training_summary(trained, tmp_path, capsys):
    from xenc_jax import cli
    cfg, summary, dev = trained
    from pathlib import Path
    cfg_file = tmp_path / "cfg.py"
    cfg_file.write_text("import sys\nsys.path.insert(0, %r)\nfrom test_train_utils import tiny_config\n"
                        "from xenc_jax.train.config import EvalConfig\nfrom xenc_jax.train.data import DataSource\n"
                        "ev = EvalConfig(kind='correlation', data=DataSource(path=%r))\n"
                        "CONFIG = tiny_config(%r, %r, %r, test=ev)\n"
                        % (str(Path(__file__).parent), str(dev), cfg.model, cfg.train.path, str(cfg.out_dir())))
    assert cli.main(["eval", "--config", str(cfg_file)]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["spearman"] == pytest.approx(summary["test_final"]["spearman"], abs=1e-6)


def test_bi_encoder_mnrl_training_exports_a_sentence_transformer(tmp_path):
    """Triplets -> MNRL with in-batch + hard negatives; the export loads in ST SentenceTransformer
    and embeds like our eval step (mean pooling)."""
    from sentence_transformers import SentenceTransformer

    from xenc_jax.hf.pretrained import load_pretrained
    from xenc_jax.train import step as S
    from xenc_jax.train.evaluators import Scorer
    from xenc_jax.train.loop import train
    model = make_tiny_model(tmp_path / "model")
    rows = [line.split("\t") for line in write_pairs(tmp_path / "p.tsv", n=24).read_text().splitlines()]
    trip = tmp_path / "trip.tsv"
    trip.write_text("".join(f"{a}\t{b}\t{rows[(i + 5) % len(rows)][1]}\n" for i, (a, b, _) in enumerate(rows)))
    cfg = tiny_config(model, trip, tmp_path / "out", task="bi_encoder", loss="mnrl", epochs=1,
                      train=DataSource(path=str(trip), kind="triplets", columns=(0, 1, 2), label_column=None))
    summary = train(cfg)
    assert summary["steps"] == 3
    losses = [json.loads(l)["train/loss"] for l in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()
              if "train/loss" in l]
    assert all(np.isfinite(losses))
    final = tmp_path / "out" / "final"
    texts = [r[0] for r in rows[:6]]
    theirs = SentenceTransformer(str(final), device="cpu").encode(texts, convert_to_numpy=True)
    pt = load_pretrained(final, head=False)
    plan = S.make_plan("dp")
    module = pt.module()
    scorer = Scorer(S.make_eval_step(S.embed_fn(module), plan, S.param_shardings(plan, module)),
                    plan, pt.tokenizer, 64)
    ours = scorer.embed(pt.params, texts)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
