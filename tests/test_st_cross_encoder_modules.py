"""sentence-transformers CrossEncoder folders whose scores come from modules after the Transformer
(hf/st_modules.py): Transformer (feature extraction) -> Pooling -> Dense / Normalize ... -> Dense
writing "scores" (the ettin-reranker layout, ST >= 5.5), built with sentence-transformers 6.3's own
modules around tiny random encoders, scored on real MS MARCO text.

Before: CrossEncoder refused these folders (issue 29) and an older load put a random head on the
Transformer (max difference to ST 8.7e-2). Now each module is computed as ST computes it.

END_TOL 1e-4 is the project's fp32 end-to-end bound against PyTorch (DESIGN.md, principle 6).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

END_TOL = 1e-4
MAX_LEN = 128      # every long passage is cut: truncation is part of what is compared
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")


def _pairs(data_dir) -> list[tuple[str, str]]:
    """Real queries x the shortest, middle and longest passages, plus an empty pair."""
    root = data_dir / "msmarco-dl19-subset"
    queries = [json.loads(line)["text"] for line in open(root / "queries.jsonl")][:3]
    passages = sorted((json.loads(line)["text"] for line in open(root / "corpus.jsonl")), key=len)[:300]
    docs = passages[:2] + passages[150:152] + passages[-2:]
    return [(q, d) for q in queries for d in docs] + [(queries[0], ""), ("", "")]


@pytest.fixture(scope="module")
def folders(tmp_path_factory, minilm_dir):
    """Two chains saved by ST 6.3's CrossEncoder:
    ettin: ModernBERT -> Pooling(cls) -> Dense(32 -> 1, identity, "scores"); default sigmoid.
    modes: BERT -> Pooling(all six modes, 192) -> Dense(192 -> 16, GELU, projected residual)
           -> Normalize -> Dense(16 -> 3, "scores"), activation_fn Tanh stored in its config."""
    import tiny_hf
    import torch
    from sentence_transformers import CrossEncoder as STCrossEncoder
    from sentence_transformers.cross_encoder.modules import Dense, Transformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling
    root = tmp_path_factory.mktemp("st_ce_chains")
    tok = tiny_hf.modernbert_tokenizer(minilm_dir)
    tiny_hf.make_tiny("modernbert", root / "modernbert", head=False, seed=5, vocab_size=len(tok),
                      max_position_embeddings=512, intermediate_size=64, local_attention=16, num_hidden_layers=3,
                      pad_token_id=tok.pad_token_id, cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id,
                      bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
    tok.save_pretrained(str(root / "modernbert"))
    tiny_hf.make_tiny_minilm("bert", root / "bert", minilm_dir, head=False, seed=6, max_position_embeddings=512)
    eager = {"attn_implementation": "eager"}
    torch.manual_seed(7)
    t = Transformer(str(root / "modernbert"), transformer_task="feature-extraction", max_seq_length=MAX_LEN,
                    model_kwargs=eager)
    STCrossEncoder(modules=[t, Pooling(32, pooling_mode="cls"),
                            Dense(32, 1, activation_function=None, module_output_name="scores")]).save(str(root / "ettin"))
    t = Transformer(str(root / "bert"), transformer_task="feature-extraction", max_seq_length=MAX_LEN,
                    model_kwargs=eager)
    STCrossEncoder(modules=[t, Pooling(32, pooling_mode=POOLING_MODES),
                            Dense(192, 16, activation_function=torch.nn.GELU(), use_residual=True), Normalize(),
                            Dense(16, 3, activation_function=torch.nn.Identity(), module_output_name="scores")],
                   activation_fn=torch.nn.Tanh()).save(str(root / "modes"))
    return root


def _st_predict(folder, pairs, **kw):
    from sentence_transformers import CrossEncoder as STCrossEncoder
    return STCrossEncoder(str(folder), device="cpu", model_kwargs={"attn_implementation": "eager"}).predict(pairs, **kw)


@pytest.mark.parametrize("name", ["ettin", "modes"])
def test_chain_scores_like_sentence_transformers(folders, data_dir, name):
    """Packed and unpacked, equal to ST's CrossEncoder.predict (its stored activation applied:
    sigmoid by default for one label, Tanh from config_sentence_transformers.json for three)."""
    from xenc_jax.batching import BucketConfig
    from xenc_jax.cross_encoder import CrossEncoder
    pairs = _pairs(data_dir)
    want = _st_predict(folders / name, pairs)
    assert want.shape == ((len(pairs),) if name == "ettin" else (len(pairs), 3))
    for buckets in (BucketConfig(pack=False, lengths=(MAX_LEN,)), BucketConfig(pack=True, lengths=(MAX_LEN,),
                                                                              max_segments=8)):
        ce = CrossEncoder(folders / name, buckets=buckets)
        assert ce.max_length == MAX_LEN and ce.num_labels == want.reshape(len(pairs), -1).shape[1]
        assert ce.activation_name == ("sigmoid" if name == "ettin" else "tanh")
        got = ce.predict(pairs)
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= END_TOL, (name, buckets)


def test_a_trained_head_is_never_replaced_by_a_random_one(folders, data_dir):
    """allow_new_head=True (a new head where a folder has none) changes nothing here: the folder's
    Dense is its head."""
    from xenc_jax.cross_encoder import CrossEncoder
    pairs = _pairs(data_dir)[:6]
    got = CrossEncoder(folders / "ettin", allow_new_head=True).predict(pairs)
    assert np.abs(got - _st_predict(folders / "ettin", pairs)).max() <= END_TOL


def test_save_writes_the_chain_and_st_loads_the_same_scores(folders, data_dir, tmp_path):
    from xenc_jax.cross_encoder import CrossEncoder
    pairs = _pairs(data_dir)
    for name in ("ettin", "modes"):
        ours = CrossEncoder(folders / name)
        ours.save(tmp_path / name)
        saved = [m["type"].rsplit(".", 1)[-1] for m in json.loads((tmp_path / name / "modules.json").read_text())]
        source = [m["type"].rsplit(".", 1)[-1] for m in json.loads((folders / name / "modules.json").read_text())]
        assert saved == source
        want = _st_predict(folders / name, pairs)
        again = _st_predict(tmp_path / name, pairs)
        assert np.abs(again - want).max() <= END_TOL, name
        assert np.abs(CrossEncoder(tmp_path / name).predict(pairs) - want).max() <= END_TOL, name


def _copy(folders, name, tmp_path) -> Path:
    dst = tmp_path / name
    shutil.copytree(folders / name, dst)
    return dst


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    data = edit(data) or data
    path.write_text(json.dumps(data))


def test_what_is_not_computed_exactly_is_an_error_naming_it(folders, tmp_path):
    """A module we do not compute, a module reading another feature than the one before it wrote,
    a chain that writes no "scores", an activation we do not apply: each an error naming the
    module (or setting) and the file, before any score."""
    from xenc_jax.cross_encoder import CrossEncoder
    from xenc_jax.hf.model_folder import ModelFolderError

    bad = _copy(folders, "ettin", tmp_path)
    _edit_json(bad / "modules.json", lambda m: m.insert(2, {"idx": 9, "name": "9", "path": "9_LayerNorm",
                                                              "type": "sentence_transformers.sentence_transformer."
                                                                      "modules.layer_norm.LayerNorm"}))
    with pytest.raises(ModelFolderError, match=r"modules\.json: entry 2 is a .*LayerNorm module, which xenc_jax "
                                                r"does not compute"):
        CrossEncoder(bad)

    flow = _copy(folders, "modes", tmp_path)
    _edit_json(flow / "4_Dense" / "config.json", lambda c: c.update(module_input_name="token_embeddings"))
    with pytest.raises(ModelFolderError, match=r"the Dense module in 4_Dense reads 'token_embeddings', but the "
                                               r"module before it wrote 'sentence_embedding'"):
        CrossEncoder(flow)

    no_scores = _copy(folders, "ettin", tmp_path / "x")
    _edit_json(no_scores / "2_Dense" / "config.json", lambda c: c.update(module_output_name="sentence_embedding"))
    with pytest.raises(ModelFolderError, match=r"the last module writes 'sentence_embedding', not 'scores'"):
        CrossEncoder(no_scores)

    relu = _copy(folders, "ettin", tmp_path / "y")
    _edit_json(relu / "config_sentence_transformers.json",
               lambda c: c.update(activation_fn="torch.nn.modules.activation.ReLU"))
    with pytest.raises(ModelFolderError, match=r"stored activation_fn 'torch\.nn\.modules\.activation\.ReLU' is "
                                               r"not one xenc_jax applies"):
        CrossEncoder(relu)


def test_a_classification_head_load_refuses_the_chain(folders):
    """load_pretrained(head=True) builds a classification head on the Transformer: a Pooling -> Dense
    chain is refused there by name rather than given a new random head (training computes the
    chain instead: tests/test_train_pooled_ce.py)."""
    from xenc_jax.hf.model_folder import ModelFolderError
    from xenc_jax.hf.pretrained import load_pretrained
    with pytest.raises(ModelFolderError, match=r"lists a Pooling module \(1_Pooling\) after the Transformer.*"
                                               r"CrossEncoder scores the folder, and `xenc train` / `xenc eval` train"):
        load_pretrained(folders / "ettin", head=True)


def test_decoder_feature_extractor_chain_with_chat_template(tmp_path, data_dir):
    """A Qwen3Model feature extractor -> Pooling(lasttoken) -> Dense(32 -> 2, Tanh, "scores"),
    its tokenizer carrying the Qwen3-Reranker-style template: ST 6.3 saves the Transformer with
    the "message" modality, so pairs go through the template (chat_format.py) before the chain."""
    import tiny_hf
    import tiny_llm
    import torch
    import transformers as tf
    from sentence_transformers import CrossEncoder as STCrossEncoder
    from sentence_transformers.cross_encoder.modules import Dense, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    from xenc_jax.cross_encoder import CrossEncoder
    tok = tiny_llm.llm_tokenizer(tmp_path / "q3", template="reranker", padding_side="left")
    model = tf.Qwen3Model._from_config(tiny_llm.tiny_llm_config("qwen3-causal", pad_token_id=tok.pad_token_id),
                                      attn_implementation="eager")
    tiny_hf.randomize_(model, 2)
    model.eval().save_pretrained(str(tmp_path / "q3"), safe_serialization=True)
    torch.manual_seed(2)
    t = Transformer(str(tmp_path / "q3"), transformer_task="feature-extraction", max_seq_length=96,
                    model_kwargs={"attn_implementation": "eager"})
    STCrossEncoder(modules=[t, Pooling(32, pooling_mode="lasttoken"),
                            Dense(32, 2, activation_function=torch.nn.Tanh(), module_output_name="scores")]
                   ).save(str(tmp_path / "ce"))
    pairs = tiny_llm.PAIRS + _pairs(data_dir)[:4]   # the last PAIRS entry is cut at 96 tokens
    want = _st_predict(tmp_path / "ce", pairs)
    ours = CrossEncoder(tmp_path / "ce")
    assert ours._input_format.message and want.shape == (len(pairs), 2)
    assert np.abs(ours.predict(pairs) - want).max() <= END_TOL
