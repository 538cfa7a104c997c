"""The family registry: models/ does not know HF, every registered family resolves to a config
class with modules, and an alias (CamemBERT = RoBERTa, one registry line) matches PyTorch."""
from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers as tf

from tiny_hf import make_tiny, random_batch
from xenc_jax.hf.pretrained import load_pretrained, save_pretrained
from xenc_jax.hf.family import ConfigError
from xenc_jax.hf.registry import FAMILIES, alias, register

MODELS = Path(__file__).resolve().parents[1] / "xenc_jax" / "models"


def test_models_package_does_not_import_hf():
    """Only a family's hf.py (its HF half: config reader, weight table) knows HF; its modules,
    the shared blocks and everything else in models/ import neither hf/ nor transformers."""
    for path in MODELS.rglob("*.py"):
        if path.name == "hf.py" and path.parent.parent.name == "families":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not any("hf" in n.split(".") or "transformers" in n.split(".") for n in names), (path, names)


def test_every_family_names_its_modules():
    for name, record in FAMILIES.items():
        assert record.config_cls.encoder_module is not None and record.config_cls.head_module is not None, name
        assert record.table.prefix and record.architecture and record.head_kinds, name


def test_every_family_record_lives_in_its_folder():
    """A family is one folder: each record is defined in models/families/<name>/hf.py, beside the
    modules of its config class."""
    for name, record in FAMILIES.items():
        folder = record.config_cls.__module__.rsplit(".", 1)[0]
        assert folder.startswith("xenc_jax.models.families."), (name, folder)
        assert record.read_config.__module__ == f"{folder}.hf", (name, record.read_config.__module__)


def test_register_refuses_a_taken_model_type():
    with pytest.raises(ValueError, match="already registered"):
        register("roberta", FAMILIES["bert"])
    with pytest.raises(TypeError, match="Family record"):
        register("not-a-record", object())
    assert "not-a-record" not in FAMILIES


def test_alias_family_is_one_registry_line(tmp_path):
    """docs/model_families.md's walk-through, checked: a new model_type that is RoBERTa under
    other class names needs nothing but one register() line (no folder, no table, no tokenizer
    code). A RoBERTa-shaped checkpoint saved with that model_type loads, scores like the same
    weights loaded as "roberta" (bit-identical: same record, same program) and like PyTorch
    (1e-4, the end-to-end fp32 bound of every family), and saves back under the alias's classes."""
    ref = make_tiny("roberta", tmp_path / "roberta", head=True, num_labels=2, seed=21)
    alias_dir = tmp_path / "alias"
    shutil.copytree(tmp_path / "roberta", alias_dir)
    cfg = json.loads((alias_dir / "config.json").read_text())
    cfg.update(model_type="xlm-roberta-test", architectures=["XLMRobertaTestForSequenceClassification"])
    (alias_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="unknown model_type 'xlm-roberta-test'"):
        load_pretrained(alias_dir, head=True, with_tokenizer=False)

    register("xlm-roberta-test", alias(FAMILIES["roberta"], "XLMRobertaTest"))   # the one line
    try:
        got = load_pretrained(alias_dir, head=True, with_tokenizer=False)
        base = load_pretrained(tmp_path / "roberta", head=True, with_tokenizer=False)
        assert got.config.family == "xlm-roberta-test" and got.config.position_offset == 2
        ids, mask, _ = random_batch("roberta", seed=22)
        scores = np.asarray(got.module().apply({"params": got.params}, jnp.asarray(ids), jnp.asarray(mask)))
        same = np.asarray(base.module().apply({"params": base.params}, jnp.asarray(ids), jnp.asarray(mask)))
        np.testing.assert_array_equal(scores, same)
        with torch.no_grad():
            want = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
        assert np.abs(scores - want).max() <= 1e-4
        saved = save_pretrained(tmp_path / "saved", got.config, got.params, head=True)
        back = json.loads((saved / "config.json").read_text())
        assert back["model_type"] == "xlm-roberta-test"
        assert back["architectures"] == ["XLMRobertaTestForSequenceClassification"]
        again = load_pretrained(saved, head=True, with_tokenizer=False)
        np.testing.assert_array_equal(
            np.asarray(again.module().apply({"params": again.params}, jnp.asarray(ids), jnp.asarray(mask))), scores)
    finally:
        FAMILIES.pop("xlm-roberta-test")


def test_camembert_alias_matches_pytorch_and_round_trips(tmp_path):
    ref = make_tiny("camembert", tmp_path / "orig", head=True, num_labels=3, seed=11)
    pt = load_pretrained(tmp_path / "orig", head=True, with_tokenizer=False)
    assert pt.config.family == "camembert" and pt.config.position_offset == 2
    ids, mask, types = random_batch("camembert", seed=12)
    kw = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    with torch.no_grad():
        want = ref(**kw).logits.numpy()
    got = np.asarray(pt.module().apply({"params": pt.params}, jnp.asarray(ids), jnp.asarray(mask)))
    assert np.abs(got - want).max() <= 1e-4
    save_pretrained(tmp_path / "saved", pt.config, pt.params, head=True)
    back = tf.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "saved")).eval()
    assert type(back).__name__ == "CamembertForSequenceClassification"
    with torch.no_grad():
        assert np.abs(back(**kw).logits.numpy() - want).max() <= 1e-4
