"""A trained CrossEncoder's export keeps the activation its source folder stores, as
sentence-transformers 6.3 does when it fine-tunes one: CrossEncoder(model) reads the stored
activation_fn and save() writes it back. Before, the export wrote ST's default for the label count
(sigmoid for one label), so a source that stores Identity (raw logits, e.g. a reranker whose
scores feed a margin) came back from `xenc train` scoring sigmoid(logit): other numbers for every
pair, in ours and in ST alike. `activation` in the training config still overrides it.

No training is needed to check the export: export_model on the source's own weights, read back by
ST 6.3 and by ours (the activation is config, the weights are not the point).
"""
from __future__ import annotations

import json

import pytest
import torch

from test_train_utils import minilm_path, tiny_config, write_pairs


@pytest.fixture(scope="module")
def identity_ce(tmp_path_factory):
    import tiny_hf
    from sentence_transformers import CrossEncoder as STCrossEncoder
    root = tmp_path_factory.mktemp("identity_ce")
    tiny_hf.make_tiny_minilm("bert", root / "bert", minilm_path(), head=True, num_labels=1, seed=4)
    STCrossEncoder(str(root / "bert"), device="cpu", activation_fn=torch.nn.Identity()).save(str(root / "ce"))
    return root / "ce"


def _export(folder, tmp_path, **kw):
    import jax

    from xenc_jax.hf.pretrained import load_pretrained
    from xenc_jax.train.loop import export_model
    cfg = tiny_config(folder, write_pairs(tmp_path / "p.tsv", n=8), tmp_path / "run", **kw)
    pt = load_pretrained(folder, head=True, num_labels=1)
    return export_model(tmp_path / "export", cfg, pt.config, jax.device_get(pt.params), pt.tokenizer, folder)


def _st_activation(path) -> str:
    from sentence_transformers import CrossEncoder as STCrossEncoder
    return type(STCrossEncoder(str(path), device="cpu").activation_fn).__name__


def test_export_keeps_the_stored_activation(identity_ce, tmp_path):
    from xenc_jax import CrossEncoder
    assert _st_activation(identity_ce) == "Identity"   # the source, as ST 6.3 reads it
    out = _export(identity_ce, tmp_path)
    assert _st_activation(out) == "Identity"
    assert CrossEncoder(str(out)).activation_name == "identity"


def test_the_config_activation_overrides_it(identity_ce, tmp_path):
    from xenc_jax import CrossEncoder
    out = _export(identity_ce, tmp_path, activation="sigmoid")
    assert _st_activation(out) == "Sigmoid"
    assert CrossEncoder(str(out)).activation_name == "sigmoid"
    saved = json.loads((out / "config_sentence_transformers.json").read_text())
    assert saved["activation_fn"] == "torch.nn.modules.activation.Sigmoid"
