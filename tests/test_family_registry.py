"""The family registry: models/ does not know HF, every registered family resolves to a config
class with modules, and an alias (CamemBERT = RoBERTa, one registry line) matches PyTorch."""
from __future__ import annotations

import ast
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import torch
import transformers as tf

from tiny_hf import make_tiny, random_batch
from xenc_jax.hf.pretrained import load_pretrained, save_pretrained
from xenc_jax.hf.registry import FAMILIES

MODELS = Path(__file__).resolve().parents[1] / "xenc_jax" / "models"


def test_models_package_does_not_import_hf():
    for path in MODELS.rglob("*.py"):
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
        assert record.table.prefix and record.architecture, name


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
