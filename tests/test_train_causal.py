"""Training a causal-LM reranker (tiny Qwen3ForCausalLM saved by sentence-transformers with a
"1"/"0" LogitScore): the BCE gradient of its logit[true] - logit[false] score equals PyTorch's on
the same chat-template rows, and `train()` (what `xenc train` runs) lowers the loss and exports a
folder that sentence-transformers loads with the same tokens, template and scores. The gradient
also for a Gemma 2 reranker (tied embeddings as LM head, windows of 5, an attention and a final-
logit soft-cap that bind: models/families/gemma/presets.py).
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")

import jax  # noqa: E402

from test_train_utils import assert_grads_equal, tiny_config, write_pairs  # noqa: E402
from tiny_llm import PAIRS, make_st_reranker  # noqa: E402
from xenc_jax.chat_format import pair_encoder  # noqa: E402
from xenc_jax.cross_encoder import CrossEncoder  # noqa: E402
from xenc_jax.hf.pretrained import load_pretrained  # noqa: E402
from xenc_jax.hf.weights import params_from_hf  # noqa: E402
from xenc_jax.train import data as D  # noqa: E402
from xenc_jax.train import step as S  # noqa: E402

END_TOL = 1e-4
MAX_LENGTH = 96   # the template's fixed text is 68 tokens (tests/tiny_llm.py)


@pytest.fixture(scope="module")
def reranker(tmp_path_factory):
    root = tmp_path_factory.mktemp("causal")
    st = make_st_reranker(root, tokens="1/0", tie_word_embeddings=False, head_dim=16)
    return root / "st", st


@pytest.fixture(scope="module")
def gemma2_reranker(tmp_path_factory):
    root = tmp_path_factory.mktemp("gemma2")
    return root / "st", make_st_reranker(root, tokens="1/0", kind="gemma2-causal")


def test_bce_gradient_equals_pytorch(reranker, tmp_path):
    _check_bce_gradient(*reranker, tmp_path)


def test_gemma2_bce_gradient_equals_pytorch(gemma2_reranker, tmp_path):
    """As for Qwen3, on Gemma 2: the final soft-cap bends the scored logits (checked on PyTorch's
    uncapped LM head output), so a cap applied late, twice or not at all would fail."""
    _check_bce_gradient(*gemma2_reranker, tmp_path, final_softcap=3.0)


def _check_bce_gradient(path, st, tmp_path, final_softcap=None):
    """Rows tokenized by the model's own pair encoder (chat template), right-padded; PyTorch
    reads the score at each row's last real token. Gradients leaf by leaf within GRAD_RTOL of
    the largest (test_train_utils: fp32 reordering), mapped through the weight table; as many
    gradient entries on each side (a tied embedding / LM head is one parameter)."""
    pt = load_pretrained(path, head=True)
    enc = pair_encoder(path, pt.tokenizer, pt.config, MAX_LENGTH)
    groups = D.make_groups(D.read_examples(D.DataSource(path=str(write_pairs(tmp_path / "p.tsv", n=8)))),
                           pt.tokenizer, MAX_LENGTH, encode_pairs=enc)
    stream = D.BatchStream(groups, D.StreamConfig(batch_size=8, bucket_lengths=(MAX_LENGTH,), max_length=MAX_LENGTH,
                                                  pad_token_id=pt.tokenizer.pad_token_id, shuffle=False))
    stream.start_at({"epoch": 0, "index": 0})
    batch = next(stream).arrays()
    apply = S.cross_encoder_apply(pt.module())
    loss_fn = S.cross_encoder_loss("bce")
    ours_loss, grads = jax.jit(jax.value_and_grad(lambda p: loss_fn(apply(p, batch), batch)))(pt.params)

    model = st[0].model
    model.zero_grad()
    ids = torch.as_tensor(batch["input_ids"], dtype=torch.long)
    mask = torch.as_tensor((np.asarray(batch["attention_mask"]) > 0).astype(np.int64))
    logits = model(input_ids=ids, attention_mask=mask).logits
    last = mask.sum(1) - 1
    rows = logits[torch.arange(len(ids)), last]
    score = rows[:, st[1].true_token_id] - rows[:, st[1].false_token_id]
    if final_softcap is not None:
        assert model.config.final_logit_softcapping == final_softcap
        with torch.no_grad():
            raw = model.lm_head(model.model(input_ids=ids, attention_mask=mask).last_hidden_state)[
                torch.arange(len(ids)), last][:, [st[1].true_token_id, st[1].false_token_id]]
        capped = final_softcap * torch.tanh(raw / final_softcap)
        assert torch.equal(capped, rows[:, [st[1].true_token_id, st[1].false_token_id]].detach())
        assert float((raw - capped).abs().max()) > 0.1, raw   # the cap binds
    valid = torch.as_tensor(np.asarray(batch["valid"]).reshape(-1), dtype=torch.bool)
    labels = torch.as_tensor(np.asarray(batch["labels"], np.float32).reshape(-1))
    loss = torch.nn.functional.binary_cross_entropy_with_logits(score[valid], labels[valid])
    loss.backward()
    assert abs(float(ours_loss) - float(loss.detach())) <= 1e-5
    torch_grads = {k: p.grad.numpy() for k, p in model.named_parameters()}
    want = params_from_hf(torch_grads, pt.config, head=True).params
    assert_grads_equal(grads, want, torch_grads)


def test_train_lowers_loss_and_export_scores_alike_in_st(reranker, tmp_path):
    from sentence_transformers import CrossEncoder as STCrossEncoder

    from xenc_jax.train.loop import train
    path, _ = reranker
    data = write_pairs(tmp_path / "pairs.tsv", n=16)
    cfg = tiny_config(path, data, tmp_path / "out", max_length=MAX_LENGTH, bucket_lengths=(MAX_LENGTH,),
                      epochs=6, batch_size=8, log_every=1)
    summary = train(cfg)
    import json
    losses = [r["train/loss"] for r in map(json.loads, (cfg.out_dir() / "metrics.jsonl").read_text().splitlines())
              if "train/loss" in r]
    # fitting 16 pairs for 12 steps with Adam at 1e-3 (warmup 10%): the loss falls steadily
    assert summary["steps"] == 12 and np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3]), losses
    out = cfg.out_dir() / "final"
    theirs = STCrossEncoder(str(out), model_kwargs={"attn_implementation": "eager"})
    assert theirs[1].true_token_id == CrossEncoder(path).config.score_token_ids[0]
    ours = CrossEncoder(out)
    assert np.abs(ours.predict(PAIRS) - theirs.predict(PAIRS)).max() <= END_TOL
    assert np.abs(ours.predict(PAIRS) - CrossEncoder(path).predict(PAIRS)).max() > 1e-4   # trained params saved


def test_preset_runs_on_real_triplets(reranker, tmp_path, data_dir):
    """configs/qwen3_reranker_msmarco.py as shipped (MNRL on real MS MARCO triplets, bf16, remat,
    fsdp), only the model swapped for the tiny reranker and the run cut to 2 steps: every
    step's loss is finite, the export loads back as a causal reranker, and a longer run resumes
    from the orbax checkpoint of step 2 instead of starting again."""
    import dataclasses
    import json

    from xenc_jax.train.config import load_config
    from xenc_jax.train.loop import train
    path, _ = reranker
    cfg = dataclasses.replace(load_config("configs/qwen3_reranker_msmarco.py"), model=str(path), max_length=MAX_LENGTH,
                              bucket_lengths=(MAX_LENGTH,), max_steps=2, batch_size=4, output_dir=str(tmp_path),
                              checkpoint_every=2, log_every=1, progress=False, async_checkpoint=False)
    assert (cfg.loss, cfg.dtype, cfg.sharding, cfg.remat) == ("mnrl", "bfloat16", "fsdp", True)
    summary = train(cfg)
    rows = [json.loads(r) for r in (cfg.out_dir() / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert summary["steps"] == 2 and len(losses) == 2 and np.isfinite(losses).all()
    ce = CrossEncoder(cfg.out_dir() / "final")
    assert ce.config.head_kind == "lm" and np.isfinite(ce.predict(PAIRS)).all()
    more = train(dataclasses.replace(cfg, max_steps=3, resume_may_change=("max_steps",)))
    assert (more["steps"], more["steps_run_now"]) == (3, 1), more


def test_training_feeds_the_ids_scoring_and_embedding_feed(reranker, tmp_path):
    """For chat-template models, training tokenizes each row as the model is later used: a
    cross-encoder's pairs as CrossEncoder.predict does (the reranker template, cut rows ending in
    its suffix), a bi-encoder's texts as BiEncoder.encode and ST 6.3 do (each a user message
    through the template: a plain Qwen3Model folder whose tokenizer has one). The bi-encoder's
    export keeps the message modality, so ST and BiEncoder feed the trained model those ids too.
    Tokenization only: no step is compiled."""
    from sentence_transformers import SentenceTransformer
    from tiny_llm import make_tiny_llm

    from xenc_jax.bi_encoder import BiEncoder
    from xenc_jax.train.data import DataSource, read_examples
    from xenc_jax.train.loop import _load_model
    path, _ = reranker
    data = write_pairs(tmp_path / "pairs.tsv", n=6)
    rows = [line.split("\t") for line in data.read_text().splitlines()]
    rows[0][1] = " ".join(["a long document"] * 40)   # cut at MAX_LENGTH: the template suffix goes back
    data.write_text("".join("\t".join(r) + "\n" for r in rows))
    cfg = tiny_config(path, data, tmp_path / "ce", max_length=MAX_LENGTH, bucket_lengths=(MAX_LENGTH,))
    ex = read_examples(cfg.train)
    groups = _load_model(cfg, path, ex)[2]
    fed = [e.input_ids.tolist() for e in groups.encodings]
    assert fed == [e.input_ids.tolist() for e in CrossEncoder(path, max_length=MAX_LENGTH).encode_pairs(ex.texts)]
    plain = D.make_groups(ex, load_pretrained(path, head=True).tokenizer, MAX_LENGTH)   # what it fed before
    assert max(map(len, fed)) == MAX_LENGTH and fed != [e.input_ids.tolist() for e in plain.encodings]

    emb = tmp_path / "emb"
    make_tiny_llm("qwen3-model", emb, template="chat")
    trip = tmp_path / "trip.tsv"
    trip.write_text("".join(f"{a}\t{b}\t{rows[(i + 2) % len(rows)][1]}\n" for i, (a, b, _) in enumerate(rows)))
    bcfg = tiny_config(emb, trip, tmp_path / "be", task="bi_encoder", loss="mnrl", pooling="lasttoken", max_length=48,
                       train=DataSource(path=str(trip), kind="triplets", columns=(0, 1, 2), label_column=None))
    bex = read_examples(bcfg.train)
    pt, bi, bgroups, _, _ = _load_model(bcfg, emb, bex)
    texts = [t for row in bex.texts for t in row]
    fed = [e.input_ids.tolist() for e in bgroups.encodings]
    assert fed == [e.input_ids.tolist() for e in BiEncoder(emb, max_seq_length=48).encode_texts(texts)]
    assert all(ids[0] == 1 for ids in fed)   # <|im_start|>: the template's, not the text's first token
    out = bi.export(tmp_path / "export", pt.config, pt.params, pt.tokenizer, 48)
    assert fed == [e.input_ids.tolist() for e in BiEncoder(out).encode_texts(texts)]
    feats = SentenceTransformer(str(out), device="cpu", local_files_only=True,
                                model_kwargs={"attn_implementation": "eager"}).preprocess(texts)
    assert fed == [feats["input_ids"][r][feats["attention_mask"][r].bool()].tolist() for r in range(len(texts))]
