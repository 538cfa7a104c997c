"""Bi-encoder training trains what it exports: the train step embeds through the source ST
folder's Pooling / Dense / Normalize (or the configured pooling), and the export is exactly that
model: PyTorch sentence-transformers and our BiEncoder load it and give the eval step's
embeddings (fp32, 1e-5). Tiny local models only (no /work/shared data needed). The gradient of
the bi-encoder step equals sentence-transformers' on a GTR-shaped T5 (MNRL)."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from test_train_utils import make_tiny_model, tiny_config, write_pairs
from xenc_jax.train.config import ConfigError
from xenc_jax.train.data import DataSource

TOL = 1e-5  # fp32, fixed


def _st_folder(tmp_path, name, *, dense: bool, normalize: bool, legacy_lower: bool = False):
    """A tiny BERT saved by sentence-transformers itself: Transformer + mean Pooling (+ Dense
    32 -> 16, tanh, random bias) (+ Normalize). legacy_lower: sentence_bert_config.json as older
    ST versions wrote it, with max_seq_length and do_lower_case=true (ST 6.x bakes lowercasing
    into the tokenizer and writes neither)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models
    base = make_tiny_model(tmp_path / f"{name}_hf")
    torch.manual_seed(4)
    mods = [models.Transformer(str(base), max_seq_length=64)]
    mods.append(models.Pooling(mods[0].get_embedding_dimension(), pooling_mode="mean"))
    if dense:
        layer = models.Dense(32, 16, activation_function=torch.nn.Tanh())
        with torch.no_grad():
            layer.linear.bias.normal_(0, 0.5)
        mods.append(layer)
    if normalize:
        mods.append(models.Normalize())
    SentenceTransformer(modules=mods, device="cpu").save(str(tmp_path / name))
    if legacy_lower:
        (tmp_path / name / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": 64, "do_lower_case": True}))
    return tmp_path / name


def _triplets(tmp_path):
    rows = [line.split("\t") for line in write_pairs(tmp_path / "p.tsv", n=24).read_text().splitlines()]
    trip = tmp_path / "trip.tsv"
    trip.write_text("".join(f"{a}\t{b}\t{rows[(i + 5) % len(rows)][1]}\n" for i, (a, b, _) in enumerate(rows)))
    texts = [r[0] for r in rows[:6]] + ["A Man Is Playing The Guitar", ""]
    return trip, texts


def _config(model, trip, out, **kw):
    return tiny_config(model, trip, out, task="bi_encoder", loss="mnrl", epochs=1,
                       train=DataSource(path=str(trip), kind="triplets", columns=(0, 1, 2), label_column=None), **kw)


def _dense_weights(folder):
    from xenc_jax.hf.st_folder import read_st_folder
    return read_st_folder(folder).dense_params


def _check_export(cfg, final, texts, dim):
    """ST and our BiEncoder load the export and embed like the training eval step."""
    from sentence_transformers import SentenceTransformer

    from xenc_jax.bi_encoder import BiEncoder
    from xenc_jax.hf.pretrained import load_pretrained
    from xenc_jax.train import step as S
    from xenc_jax.train.bi_head import build_head
    from xenc_jax.train.evaluators import Scorer
    theirs = SentenceTransformer(str(final), device="cpu").encode(texts, convert_to_numpy=True)
    ours = BiEncoder(final).encode(texts)
    assert ours.shape == theirs.shape == (len(texts), dim)
    assert np.abs(ours - theirs).max() <= TOL, np.abs(ours - theirs).max()
    # the train/eval step's embedding function on the exported weights: the same numbers
    pt = load_pretrained(final, head=False)
    head = build_head(dataclasses.replace(cfg, pooling=None, normalize=None), final, pt.config)
    plan = S.make_plan("dp")
    module = pt.module()
    p_sh = head.param_shardings(plan, S.param_shardings(plan, module))
    params = plan.put_params(head.init_params(pt.params), p_sh)
    scorer = Scorer(S.make_eval_step(head.model_fn(module), plan, p_sh), plan, pt.tokenizer, 64,
                    do_lower_case=head.do_lower_case)
    step_emb = scorer.embed(params, texts)
    assert np.abs(step_emb - theirs).max() <= TOL, np.abs(step_emb - theirs).max()
    return ours


def test_cls_pooling_training_exports_what_it_trained(tmp_path):
    """A mean-pooling ST folder trained with pooling='cls': the export's Pooling is cls (not the
    source's copied mean), and it embeds in ST like BiEncoder and the eval step."""
    from xenc_jax.train.loop import train
    src = _st_folder(tmp_path, "src", dense=False, normalize=False, legacy_lower=True)
    trip, texts = _triplets(tmp_path)
    cfg = _config(src, trip, tmp_path / "out", pooling="cls")
    summary = train(cfg)
    assert summary["steps"] == 3
    final = tmp_path / "out" / "final"
    pool_cfg = json.loads((final / "1_Pooling" / "config.json").read_text())
    assert pool_cfg["pooling_mode"] == "cls"
    assert [m["type"].rsplit(".", 1)[-1] for m in json.loads((final / "modules.json").read_text())] == \
        ["Transformer", "Pooling"]
    st_cfg = json.loads((final / "sentence_bert_config.json").read_text())
    assert st_cfg == {"max_seq_length": 64, "do_lower_case": True}  # the source's, not forced False
    assert json.loads((final / "tokenizer_config.json").read_text())["model_max_length"] == 64
    assert json.loads((final / "config_sentence_transformers.json").read_text()) == \
        json.loads((src / "config_sentence_transformers.json").read_text())
    _check_export(cfg, final, texts, 32)


@pytest.mark.parametrize("dense", ["train", "freeze"])
def test_mean_dense_normalize_training_exports_what_it_trained(tmp_path, dense):
    """Mean pooling + Dense (32 -> 16, tanh) + Normalize from the source folder: the train step
    runs them; dense=train moves the Dense weights and the export holds the trained ones,
    dense=freeze exports the source's unchanged. ST loads the export with equal embeddings."""
    from xenc_jax.train.loop import train
    src = _st_folder(tmp_path, "src", dense=True, normalize=True)
    trip, texts = _triplets(tmp_path)
    cfg = _config(src, trip, tmp_path / "out", dense=dense)
    train(cfg)
    final = tmp_path / "out" / "final"
    kinds = [m["type"].rsplit(".", 1)[-1] for m in json.loads((final / "modules.json").read_text())]
    assert kinds == ["Transformer", "Pooling", "Dense", "Normalize"]
    before, after = _dense_weights(src)[0], _dense_weights(final)[0]
    assert set(after) == {"kernel", "bias"} and after["kernel"].shape == (16, 32)
    moved = max(float(np.abs(before[k] - after[k]).max()) for k in before)
    if dense == "train":
        assert moved > 1e-4, moved
    else:
        assert moved == 0.0
    emb = _check_export(cfg, final, texts, 16)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, atol=1e-5)  # Normalize was exported


def test_bi_encoder_head_settings_are_validated(tmp_path):
    base = _config(tmp_path / "m", tmp_path / "t.tsv", tmp_path / "o")
    assert base.pooling is None and base.dense == "train" and base.normalize is None
    base.validate()
    dataclasses.replace(base, pooling=("cls", "mean"), dense="freeze", normalize=True).validate()
    for kw, match in ((dict(pooling="median"), r"pooling must be .*'cls'.*'lasttoken'"),
                      (dict(pooling=()), "at least one mode"),
                      (dict(pooling=3), "pooling must be"),
                      (dict(dense="fixed"), "dense must be 'train' or 'freeze'"),
                      (dict(normalize="yes"), "normalize must be")):
        with pytest.raises(ConfigError, match=match):
            dataclasses.replace(base, **kw).validate()
    with pytest.raises(ConfigError, match="bi-encoder settings"):
        dataclasses.replace(base, task="cross_encoder", loss="bce", pooling="cls").validate()
    # --set overrides reach the same checks
    from xenc_jax.train.config import apply_overrides
    assert apply_overrides(base, ["pooling=cls"]).pooling == ("cls",)
    with pytest.raises(ConfigError, match="unknown pooling mode 'avg'"):
        apply_overrides(base, ["pooling=avg"]).validate()


def test_pooling_that_does_not_fit_the_dense_module_is_an_error(tmp_path):
    """Two pooling modes give 64 features, the source Dense takes 32: an error before training."""
    from xenc_jax.train.loop import train
    src = _st_folder(tmp_path, "src", dense=True, normalize=False)
    trip, _ = _triplets(tmp_path)
    with pytest.raises(ValueError, match="Dense in_features 32 != the incoming dimension 64"):
        train(_config(src, trip, tmp_path / "out", pooling=("cls", "mean")))


def _gtr_t5_folder(root):
    """A GTR / sentence-T5-shaped ST folder saved by sentence-transformers: a tiny random T5 v1.1
    encoder (gated-GELU; 3 heads of d_kv 8 != 32 / 3; 8 relative buckets, max distance 16, so rows
    of up to 32 tokens reach the log-spaced and clipped buckets) -> mean Pooling -> Dense(32 -> 24,
    no bias, identity) -> Normalize; tests/tiny_llm.py's byte-level BPE tokenizer (pad 0)."""
    import transformers as tf
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models
    from tiny_hf import randomize_
    from tiny_hf import tiny_config as hf_tiny_config
    from tiny_llm import llm_tokenizer
    llm_tokenizer(root / "hf", template=None)
    torch.manual_seed(5)
    t5 = tf.T5EncoderModel._from_config(hf_tiny_config("t5", vocab_size=544, feed_forward_proj="gated-gelu"),
                                        attn_implementation="eager")
    randomize_(t5, 5)
    t5.save_pretrained(str(root / "hf"))
    transformer = models.Transformer(str(root / "hf"), max_seq_length=32,
                                     model_kwargs={"attn_implementation": "eager"})
    dense = models.Dense(32, 24, bias=False, activation_function=torch.nn.Identity())
    SentenceTransformer(modules=[transformer, models.Pooling(32, pooling_mode="mean"), dense, models.Normalize()],
                        device="cpu").save(str(root / "st"))
    return root / "st"


def test_t5_mnrl_gradient_equals_sentence_transformers(tmp_path):
    """The gradient the bi-encoder train step takes (build_head's embed function: T5 encoder, mean
    Pooling, the trained Dense, Normalize; the library's MNRL on 8 (anchor, positive, negative)
    triplets) equals sentence-transformers' MultipleNegativesRankingLoss backward on the same
    folder and the same right-padded ids: loss within 1e-5, every parameter's gradient (token
    table, relative bias, norms, Dense) within GRAD_RTOL of the largest entry (test_train_utils:
    fp32 reordering). PyTorch's T5 gradients map onto our tree through the T5 weight table."""
    import jax
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from test_train_utils import assert_grads_equal
    from xenc_jax.hf.pretrained import load_pretrained
    from xenc_jax.hf.weights import params_from_hf
    from xenc_jax.train import data as D
    from xenc_jax.train import step as S
    from xenc_jax.train.bi_head import build_head, encoder_dir
    src = _gtr_t5_folder(tmp_path)
    trip, _ = _triplets(tmp_path)
    cfg = _config(src, trip, tmp_path / "out", max_length=32)
    pt = load_pretrained(encoder_dir(src), head=False)
    head = build_head(cfg, src, pt.config)
    groups = D.make_groups(D.read_examples(cfg.train), pt.tokenizer, 32, task="bi_encoder",
                           encode_texts=head.text_encoder(pt.tokenizer, pt.config, 32))
    stream = D.BatchStream(groups, D.StreamConfig(batch_size=8, bucket_lengths=(32,), max_length=32,
                                                  pad_token_id=pt.tokenizer.pad_token_id, shuffle=False))
    stream.start_at({"epoch": 0, "index": 0})
    batch = next(stream).arrays()
    assert np.asarray(batch["input_ids"]).shape == (24, 32) and np.asarray(batch["valid"]).all()
    apply, loss_fn = head.apply_fn(pt.module()), S.bi_encoder_loss("mnrl")
    grad_fn = jax.jit(jax.value_and_grad(lambda p: loss_fn(apply(p, batch), batch)))
    ours_loss, grads = grad_fn(head.init_params(pt.params))

    st = SentenceTransformer(str(src), device="cpu").eval()
    ids = torch.as_tensor(np.asarray(batch["input_ids"]), dtype=torch.long).reshape(8, 3, -1)
    mask = torch.as_tensor((np.asarray(batch["attention_mask"]) > 0).astype(np.int64)).reshape(8, 3, -1)
    # ST's columns: anchors, positives, negatives (our rows hold each triplet's 3 texts in turn)
    features = [{"input_ids": ids[:, c], "attention_mask": mask[:, c]} for c in range(3)]
    loss = MultipleNegativesRankingLoss(st)(features, torch.zeros(8))
    loss.backward()
    assert abs(float(ours_loss) - float(loss.detach())) <= 1e-5, (float(ours_loss), float(loss))
    torch_grads = {k: p.grad.numpy() for k, p in st.named_parameters()}
    encoder = {k.removeprefix("0.model."): g for k, g in torch_grads.items() if k.startswith("0.model.")}
    want = {**params_from_hf(encoder, pt.config, head=False).params,
            "dense": [{"kernel": torch_grads["2.linear.weight"]}]}
    assert set(torch_grads) == {"0.model." + k for k in encoder} | {"2.linear.weight"}
    assert_grads_equal(grads, want, torch_grads, "t5 mnrl")
