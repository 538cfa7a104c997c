"""Training a sentence-transformers CrossEncoder whose scores are Transformer (feature extraction)
-> Pooling -> Dense ... -> "scores" (hf/st_modules.py "pooled", the ettin-reranker layout): the
encoder and the Dense modules (the score head) train, the folder's Pooling as it is, and the
export is the same modules.json chain, which sentence-transformers 6.3 loads and scores like us.

Before: `xenc train` refused such folders (load_pretrained(head=True) put a head on the
Transformer, which would have dropped the trained Dense). The folder is a tiny random BERT with
the real MiniLM WordPiece vocabulary, built with ST 6.3's own CrossEncoder modules: mean Pooling
-> Dense(32 -> 8, Tanh) -> Dense(8 -> 1, identity, writing "scores"). Two Dense modules so the
head's params are a list, as in a chain with a projection before the score.

The last test is training's NaN check on evaluation outputs (train/loop.Run.run_eval), on this
folder with one word's embedding row set to NaN: the same config as the export test, so its train
and eval steps are the same programs (the test run's persistent compilation cache compiles them once).

Bounds: END_TOL 1e-4 is the project's fp32 end-to-end bound against PyTorch (DESIGN.md principle
6); gradients use test_train_utils.assert_grads_equal (GRAD_RTOL = 1e-5 of the largest entry:
fp32 sums in another order), the loss 1e-5 as the bi-encoder gradient test.
"""
from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from test_train_utils import minilm_path, tiny_config, write_pairs

END_TOL = 1e-4
LOSS_TOL = 1e-5
MAX_LEN = 32
PAIRS = [("a man is playing the guitar", "a man plays a guitar"), ("two dogs in the park", "a red car"),
         ("the cat is eating", ""), ("", "")]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    import tiny_hf
    from sentence_transformers import CrossEncoder as STCrossEncoder
    from sentence_transformers.cross_encoder.modules import Dense, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    root = tmp_path_factory.mktemp("pooled_ce")
    tiny_hf.make_tiny_minilm("bert", root / "bert", minilm_path(), head=False, seed=11, max_position_embeddings=128,
                             hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(12)
    t = Transformer(str(root / "bert"), transformer_task="feature-extraction", max_seq_length=MAX_LEN,
                    model_kwargs={"attn_implementation": "eager"})
    proj = Dense(32, 8, activation_function=torch.nn.Tanh())
    score = Dense(8, 1, activation_function=None, module_output_name="scores")
    with torch.no_grad():   # random biases: a dropped bias cannot hide behind a zero
        proj.linear.bias.normal_(0, 0.5)
        score.linear.bias.normal_(0, 0.5)
    STCrossEncoder(modules=[t, Pooling(32, pooling_mode="mean"), proj, score]).save(str(root / "ce"))
    return root / "ce"


def _config(folder, data, out, **kw):
    return tiny_config(folder, data, out, max_length=MAX_LEN, bucket_lengths=(MAX_LEN,), **kw)


def _st(path):
    from sentence_transformers import CrossEncoder as STCrossEncoder
    return STCrossEncoder(str(path), device="cpu", model_kwargs={"attn_implementation": "eager"})


def test_bce_gradient_equals_sentence_transformers(folder, tmp_path):
    """The train step's loss and gradient (the chain's embed function: encoder, mean Pooling, both
    Dense; the library's BCE on 8 pairs) equal ST's CrossEncoder forward on the same ids + torch's
    BCEWithLogitsLoss (what ST's BinaryCrossEntropyLoss computes) backpropagated by autograd."""
    import jax

    from test_train_utils import assert_grads_equal
    from xenc_jax.hf.weights import params_from_hf
    from xenc_jax.train import data as D
    from xenc_jax.train import step as S
    from xenc_jax.train.loop import _load_model
    data = write_pairs(tmp_path / "p.tsv", n=8, seed=3)
    cfg = _config(folder, data, tmp_path / "out")
    pt, head, groups, _, _ = _load_model(cfg, folder, D.read_examples(cfg.train))
    assert head is not None and head.cross_encoder and pt.config.num_labels == 1
    stream = D.BatchStream(groups, D.StreamConfig(batch_size=8, bucket_lengths=(MAX_LEN,), max_length=MAX_LEN,
                                                  pad_token_id=pt.tokenizer.pad_token_id, shuffle=False))
    stream.start_at({"epoch": 0, "index": 0})
    batch = next(stream).arrays()
    assert np.asarray(batch["valid"]).all() and np.asarray(batch["input_ids"]).shape == (8, MAX_LEN)
    apply, loss_fn = S.per_row(head.model_fn(pt.module())), S.cross_encoder_loss("bce")
    ours_loss, grads = jax.jit(jax.value_and_grad(lambda p: loss_fn(apply(p, batch), batch)))(head.init_params(pt.params))

    st = _st(folder).eval()
    as_t = lambda k, f=lambda x: x: torch.as_tensor(f(np.asarray(batch[k])), dtype=torch.long)
    features = {"input_ids": as_t("input_ids"), "attention_mask": as_t("attention_mask", lambda m: m > 0),
                "token_type_ids": as_t("token_type_ids")}
    scores = st(features)["scores"].reshape(-1)
    loss = torch.nn.BCEWithLogitsLoss()(scores, torch.as_tensor(np.asarray(batch["labels"]).reshape(-1)))
    loss.backward()
    assert abs(float(ours_loss) - float(loss.detach())) <= LOSS_TOL, (float(ours_loss), float(loss))
    named = dict(st.named_parameters())
    # BertModel's pooler is not on the path to the scores (ST's Pooling reads token embeddings)
    assert {k for k, p in named.items() if p.grad is None} == {k for k in named if ".pooler." in k}
    torch_grads = {k: p.grad.numpy() for k, p in named.items() if p.grad is not None}
    encoder = {k.removeprefix("0.model."): g for k, g in torch_grads.items() if k.startswith("0.model.")}
    want = {**params_from_hf(encoder, pt.config, head=False).params,
            "dense": [{"kernel": torch_grads[f"{i}.linear.weight"], "bias": torch_grads[f"{i}.linear.bias"]}
                      for i in (2, 3)]}
    assert set(torch_grads) == {"0.model." + k for k in encoder} | {f"{i}.linear.{w}" for i in (2, 3)
                                                                  for w in ("weight", "bias")}
    assert_grads_equal(grads, want, torch_grads, "pooled cross-encoder bce")


def _train_config(folder, tmp_path, **kw):
    """3 steps of 8 pairs; evaluation: 8 pairs in one bucket of 64 rows (EvalConfig's batch_size)."""
    data = write_pairs(tmp_path / "train.tsv", n=24, seed=4)
    return _config(folder, data, tmp_path / "out", **kw)


def test_trained_export_is_the_same_chain_and_scores_like_sentence_transformers(folder, tmp_path):
    """A few steps of `xenc train` (library train()) with a test evaluator: the Dense head moved, the
    export lists the source's modules (Transformer, Pooling, Dense, Dense) with model_type
    CrossEncoder, and ST 6.3 loads it with the scores our CrossEncoder gives (sigmoid, ST's default
    for one label); `xenc eval` (evaluate_model) on the export repeats the run's test metrics."""
    from xenc_jax.cross_encoder import CrossEncoder
    from xenc_jax.hf import st_modules
    from xenc_jax.train.config import EvalConfig
    from xenc_jax.train.data import DataSource
    from xenc_jax.train.loop import evaluate_model, train
    dev = write_pairs(tmp_path / "dev.tsv", n=8, seed=5)
    ev = EvalConfig(kind="correlation", data=DataSource(path=str(dev), format="tsv"))
    cfg = _train_config(folder, tmp_path, test=ev)
    summary = train(cfg)
    assert summary["steps"] == 3
    final = tmp_path / "out" / "final"
    kinds = lambda p: [m["type"].rsplit(".", 1)[-1] for m in json.loads((p / "modules.json").read_text())]
    assert kinds(final) == kinds(folder) == ["Transformer", "Pooling", "Dense", "Dense"]
    assert json.loads((final / "config_sentence_transformers.json").read_text())["model_type"] == "CrossEncoder"
    before, after = st_modules.read_chain(folder).pooled, st_modules.read_chain(final).pooled
    assert after.pooling_modes == ("mean",) and [o for o, _ in after.ops] == ["dense", "dense"]
    moved = max(float(np.abs(b[k] - a[k]).max()) for b, a in zip(before.dense_params, after.dense_params) for k in b)
    assert moved > 1e-4, moved   # the score head trained (lr 1e-3, 3 steps)
    want = _st(final).predict(PAIRS)
    ours = CrossEncoder(final).predict(PAIRS)
    assert want.shape == ours.shape == (len(PAIRS),)
    assert np.abs(ours - want).max() <= END_TOL, np.abs(ours - want).max()
    again = evaluate_model(dataclasses.replace(cfg, model=str(final)), ev)
    assert again.keys() == summary["test_final"].keys()
    for k, v in summary["test_final"].items():
        assert abs(again[k] - v) <= 1e-6, (k, again[k], v)


def _with_nan_word(folder, path, word: str) -> int:
    """A copy of `folder` whose embedding row of `word` is NaN (test_train_utils.nan_word)."""
    from test_train_utils import nan_word
    shutil.copytree(folder, path)
    return nan_word(path, word)


def test_a_nan_eval_output_stops_training_and_keeps_the_last_good_checkpoint(folder, tmp_path):
    """A NaN model output in training's evaluation stops the run naming the step, the evaluator and
    the pair; it never becomes a NaN metric or a "best" model, and the step whose evaluation failed
    is not checkpointed (its weights would become what a resume starts from and, with
    keep_checkpoints=1, delete the good one). The fault is real, not mocked: one word's embedding
    row is NaN; training never reads it (the training texts do not hold the word), so the steps and
    checkpoints stay finite, like a model fine on its training data and broken on some evaluation
    input; the evaluation data holds the word in its third pair."""
    from xenc_jax.runner import NonFiniteOutput
    from xenc_jax.train.config import EvalConfig
    from xenc_jax.train.data import DataSource
    from xenc_jax.train.evaluators import NonFiniteEvaluation
    from xenc_jax.train.loop import train
    model = tmp_path / "nan_model"
    _with_nan_word(folder, model, "zebra")
    dev = tmp_path / "dev.tsv"
    dev.write_text("a man is riding\ta man rides\t0.9\ntwo dogs\ta red car\t0.1\nthe zebra runs\ta cat\t0.3\n"
                   "a child eats\tthe child is eating\t0.8\n")
    ev = EvalConfig(kind="correlation", data=DataSource(path=str(dev), format="tsv"))
    cfg = _train_config(model, tmp_path, evaluator=ev, eval_every=2, checkpoint_every=1, keep_checkpoints=1)
    with pytest.raises(NonFiniteEvaluation) as err:
        train(cfg)
    msg = str(err.value)
    assert isinstance(err.value, NonFiniteOutput)   # what predict / encode raise for a NaN output
    assert msg.startswith(f"step 2: the eval evaluator (correlation, {dev}) got a non-finite model output")
    assert f"step 2 was not checkpointed; the latest checkpoint is step 1 in {tmp_path / 'out' / 'checkpoints'}" in msg
    assert "the model's output for pairs[2] is nan" in msg   # the zebra pair, in the evaluator's order
    steps = sorted(int(p.name) for p in (tmp_path / "out" / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [1]   # a step-2 save would have deleted it (keep_checkpoints=1)
    assert not (tmp_path / "out" / "best").exists()


@pytest.mark.parametrize("role", ["train", "eval"])
def test_a_lone_surrogate_in_training_data_is_a_data_error_naming_file_and_line(tmp_path, role):
    """A JSON "\\udXXX" escape without its pair is valid JSON but not a text (the tokenizer would
    stop with a bare 'TextInputSequence must be str'): train() refuses it by file:line, column and
    code point, for the training rows and an evaluator's, before any model is loaded (the model
    path here does not exist)."""
    from xenc_jax.train.config import EvalConfig
    from xenc_jax.train.data import DataError, DataSource
    from xenc_jax.train.loop import train
    bad = tmp_path / f"{role}.jsonl"
    bad.write_text(json.dumps({"q": "a dog", "d": "a cat", "y": 1}) + "\n"
                   + json.dumps({"q": "a dog", "d": "docs \ud83d", "y": 0}) + "\n")   # ensure_ascii: "\ud83d"
    good = write_pairs(tmp_path / "good.tsv", n=8)
    src = DataSource(path=str(bad), format="jsonl", columns=("q", "d"), label_column="y")
    kw = {"train": src} if role == "train" else {"evaluator": EvalConfig(kind="correlation", data=src)}
    cfg = _config(tmp_path / "no_model", good, tmp_path / "out", **kw)
    with pytest.raises(DataError, match=rf"^{bad}:2: column 'd' holds an unpaired surrogate \(\\ud83d\)"):
        train(cfg)
