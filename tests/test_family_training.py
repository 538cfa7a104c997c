"""Every family trains like the BERT family: the BCE gradient of a padded pair batch equals
PyTorch's (mapped through the family's own weight table), a few optimizer steps lower the loss,
and the trained model saved by us scores alike in PyTorch sentence-transformers. (bf16 compute
close to fp32, once here: tests/test_family_conformance.py, for every family.)

One tiny seeded random model per family with a real tokenizer (all-MiniLM-L6-v2's WordPiece
vocabulary; MPNet's special tokens around it, as all-mpnet-base-v2 builds its own, also for
RoBERTa / XLM-R whose special ids are the same; without token type ids for ModernBERT and
DistilBERT). Adding a family: one entry in FAMILY_MODELS. Decoders: a causal-LM reranker's
gradient is tests/test_train_causal.py; Qwen3's and Qwen2's score heads are rows here.
"""
from __future__ import annotations

import jax
import numpy as np
import optax
import pytest
import torch

from test_train_utils import assert_grads_equal, write_pairs
from tiny_hf import deberta_tokenizer, make_tiny, modernbert_tokenizer, mpnet_tokenizer
from tiny_llm import llm_tokenizer
from xenc_jax.cross_encoder import CrossEncoder
from xenc_jax.hf.pretrained import load_pretrained, save_pretrained
from xenc_jax.hf.weights import params_from_hf
from xenc_jax.train import data as D
from xenc_jax.train import step as S

NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def minilm_tokenizer(minilm_dir):
    import transformers as tf
    return tf.AutoTokenizer.from_pretrained(str(minilm_dir))


def bpe_tokenizer(_minilm_dir):
    """tests/tiny_llm.py's byte-level BPE tokenizer, no chat template: pairs as plain text pairs."""
    return llm_tokenizer(None, template=None)


# family -> (make_tiny overrides, tokenizer from the MiniLM folder)
FAMILY_MODELS = {
    "bert": (NO_DROPOUT, minilm_tokenizer),
    # <s>=0 <pad>=1 </s>=2 like RoBERTa's own vocabulary: positions start at pad + 1 = 2
    "roberta": (NO_DROPOUT, mpnet_tokenizer),
    "xlm-roberta": (NO_DROPOUT, mpnet_tokenizer),
    # an embedding projection (16 -> 32) and token types
    "electra": (NO_DROPOUT, minilm_tokenizer),
    # no token type ids
    "distilbert": ({"dropout": 0.0, "attention_dropout": 0.0, "seq_classif_dropout": 0.0}, modernbert_tokenizer),
    "mpnet": ({"max_position_embeddings": 130, **NO_DROPOUT}, mpnet_tokenizer),
    # pad 0, [CLS] 101, [SEP] 102 in this vocabulary; a window of 16 < the 32-token rows; biases on
    "modernbert": ({"max_position_embeddings": 128, "pad_token_id": 0, "cls_token_id": 101, "sep_token_id": 102,
                    "bos_token_id": 101, "eos_token_id": 102, "local_attention": 16, "num_hidden_layers": 3,
                    "attention_bias": True, "mlp_bias": True, "norm_bias": True}, modernbert_tokenizer),
    # separate position projections (their gradients too), token types, absolute positions, log buckets
    "deberta-v2": ({"max_position_embeddings": 128, "share_att_key": False, "type_vocab_size": 2,
                    "position_biased_input": True, "position_buckets": 8, "max_relative_positions": 16,
                    **NO_DROPOUT}, deberta_tokenizer),
    # a decoder's score head read at each row's last real token (GQA, q/k norms)
    "qwen3": ({"max_position_embeddings": 128, "pad_token_id": 0}, bpe_tokenizer),
    "qwen2": ({"max_position_embeddings": 128, "pad_token_id": 0}, bpe_tokenizer),   # q/k/v biases
    # the presets' switches (models/families/*/presets.py): Llama 6 query heads over 3 kv heads,
    # head_dim 8 != 36 / 6, attention and MLP biases, Llama 3 rope scaling; Mistral a window of 7
    # tokens, shorter than the rows; Gemma multi-query (1 kv head), (1 + w) norms, scaled
    # embeddings; Gemma 2 windows of 5, query_pre_attn_scalar, an attention soft-cap of 2 that
    # binds on these weights; Gemma 3 q/k norms and a rope theta per layer type
    "llama": ({"pad_token_id": 0}, bpe_tokenizer),
    "mistral": ({"pad_token_id": 0}, bpe_tokenizer),
    "gemma": ({"pad_token_id": 0}, bpe_tokenizer),
    "gemma2": ({"pad_token_id": 0}, bpe_tokenizer),
    "gemma3_text": ({"pad_token_id": 0}, bpe_tokenizer),
}
END_TOL = 1e-4  # fp32 whole model, the project bound
# Families whose rows skip the steps test: the train step and the optimizer are the same code for
# every family, and each steps row costs a train-step compile, a scoring compile and two ST loads
# (CI time). What differs per family is checked without a compile: the gradient, and the save ->
# PyTorch round trip of the params (test_saved_params_load_bit_identical_in_pytorch).
GRADIENT_ONLY = frozenset({"llama", "mistral", "gemma", "gemma2", "gemma3_text"})


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("data") / "pairs.tsv", n=16)


@pytest.fixture(scope="module", params=sorted(FAMILY_MODELS))
def family_model(request, tmp_path_factory, minilm_dir, pairs_file):
    return _family_model(request.param, tmp_path_factory, minilm_dir, pairs_file)


@pytest.fixture(scope="module", params=sorted(set(FAMILY_MODELS) - GRADIENT_ONLY))
def trained_family(request, tmp_path_factory, minilm_dir, pairs_file):
    return _family_model(request.param, tmp_path_factory, minilm_dir, pairs_file)


@pytest.fixture(scope="module", params=sorted(GRADIENT_ONLY))
def saved_family(request, tmp_path_factory, minilm_dir, pairs_file):
    return _family_model(request.param, tmp_path_factory, minilm_dir, pairs_file)


_BUILT: dict = {}


def _family_model(family, tmp_path_factory, minilm_dir, pairs_file):
    """(family, folder, torch model, our Pretrained, a padded batch of 16 pairs), built once."""
    if family not in _BUILT:
        _BUILT[family] = _build_family_model(family, tmp_path_factory, minilm_dir, pairs_file)
    return _BUILT[family]


def _build_family_model(family, tmp_path_factory, minilm_dir, pairs_file):
    overrides, make_tokenizer = FAMILY_MODELS[family]
    path = tmp_path_factory.mktemp(family)
    tok = make_tokenizer(minilm_dir)
    torch_model = make_tiny(family, path, num_labels=1, seed=11, vocab_size=len(tok), **overrides)
    tok.save_pretrained(str(path))
    pt = load_pretrained(path, head=True)
    groups = D.make_groups(D.read_examples(D.DataSource(path=str(pairs_file))), pt.tokenizer, 64)
    stream = D.BatchStream(groups, D.StreamConfig(batch_size=16, bucket_lengths=(32,), max_length=64,
                                                  pad_token_id=tok.pad_token_id, shuffle=False))
    stream.start_at({"epoch": 0, "index": 0})
    return family, path, torch_model, pt, next(stream).arrays()


def _torch_bce_grads(family, torch_model, batch):
    """PyTorch's forward on the same right-padded rows (it derives its own positions), the same
    mean BCE over real rows, and the gradient of every named parameter."""
    torch_model.zero_grad()
    kw = {"input_ids": torch.as_tensor(batch["input_ids"], dtype=torch.long),
          "attention_mask": torch.as_tensor(batch["attention_mask"], dtype=torch.long)}
    if getattr(torch_model.config, "type_vocab_size", 0):
        kw["token_type_ids"] = torch.as_tensor(batch["token_type_ids"], dtype=torch.long)
    logits = torch_model(**kw).logits[:, 0]
    valid = torch.as_tensor(np.asarray(batch["valid"]).reshape(-1), dtype=torch.bool)
    labels = torch.as_tensor(np.asarray(batch["labels"], np.float32).reshape(-1))
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[valid], labels[valid])
    loss.backward()
    return float(loss.detach()), {k: p.grad.numpy() for k, p in torch_model.named_parameters()}


def test_bce_gradient_equals_pytorch(family_model):
    """Our gradient of the library's BCE loss equals PyTorch's, leaf by leaf, relative to the
    largest gradient entry (GRAD_RTOL, test_train_utils: a reordering of fp32 sums, far below a
    wrong mask or a dropped term). The weight table maps PyTorch's gradients onto our tree: its
    transforms are linear (transposes, reshapes, splits), so gradients map as weights do.
    Every PyTorch parameter is compared (norm scales and embeddings too): as many gradient
    entries on each side, none left out by the mapping. One jitted program: op-by-op dispatch
    took ~4x longer on the decoders (measured on 2 loaded cores)."""
    family, _, torch_model, pt, batch = family_model
    apply = S.cross_encoder_apply(pt.module())
    loss_fn = S.cross_encoder_loss("bce")
    ours_loss, grads = jax.jit(jax.value_and_grad(lambda p: loss_fn(apply(p, batch), batch)))(pt.params)
    want_loss, torch_grads = _torch_bce_grads(family, torch_model, batch)
    assert abs(float(ours_loss) - want_loss) <= 1e-5, (float(ours_loss), want_loss)
    want = params_from_hf(torch_grads, pt.config, head=True).params
    assert_grads_equal(grads, want, torch_grads, family)


def test_steps_lower_the_loss_and_the_saved_model_scores_alike_in_st(trained_family, tmp_path):
    from sentence_transformers import CrossEncoder as STCrossEncoder
    family, path, _, pt, batch = trained_family
    tx = optax.adamw(1e-3)
    plan = S.make_plan("dp")
    sh = S.state_shardings(plan, tx, pt.params, S.param_shardings(plan, pt.module()))
    state = S.create_state(plan, tx, pt.params, sh)
    step = S.make_train_step(S.cross_encoder_apply(pt.module()), S.cross_encoder_loss("bce"), tx, plan, sh)
    losses = []
    for _ in range(8):
        state, metrics = step(state, plan.place_batch(batch), jax.random.key(0))
        losses.append(float(metrics["loss"]))
    # fitting one batch of 16: Adam at 1e-3 drops the loss steadily on every family's tiny model
    assert losses[-1] < 0.9 * losses[0], losses
    out = save_pretrained(tmp_path / "trained", pt.config, state.params, pt.tokenizer)
    pairs = [("a man is playing a guitar", "a man plays the guitar"), ("two dogs", "a red car in the street"),
             ("the cat", "the cat is eating food on the street in the park " * 3)]
    ours = CrossEncoder(out).predict(pairs)
    theirs = STCrossEncoder(str(out), device="cpu").predict(pairs)
    assert np.abs(ours - theirs).max() <= END_TOL
    # the trained params were saved: the untrained folder scores otherwise (scored by ST, which
    # equals us within END_TOL on it: tests/test_family_conformance.py; no second compile here)
    assert np.abs(ours - STCrossEncoder(str(path), device="cpu").predict(pairs)).max() > 1e-3


def test_saved_params_load_bit_identical_in_pytorch(saved_family, tmp_path):
    """What a trained model of these families exports: our save of the loaded params, read by
    transformers' AutoModelForSequenceClassification, holds every tensor of the original bit for
    bit (no missing or extra tensor; a tied embedding saved once), so trained params reach PyTorch
    unchanged."""
    import transformers as tf
    family, _, torch_model, pt, _ = saved_family
    out = save_pretrained(tmp_path / "saved", pt.config, pt.params, pt.tokenizer)
    again = tf.AutoModelForSequenceClassification.from_pretrained(str(out), attn_implementation="eager")
    got, want = again.state_dict(), torch_model.state_dict()
    assert type(again) is type(torch_model) and set(got) == set(want), (family, set(got) ^ set(want))
    assert all(torch.equal(got[k], want[k]) for k in want), [k for k in want if not torch.equal(got[k], want[k])]
