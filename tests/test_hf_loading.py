"""Loading/saving Hugging Face checkpoints: real weights, round trip, and clear errors."""
from __future__ import annotations

import json
from pathlib import Path
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers as tf
from safetensors.numpy import load_file, save_file

from tiny_hf import FAMILIES, make_tiny, random_batch
from xenc_jax.hf.configs import ConfigError
from xenc_jax.hf.pretrained import load_pretrained, save_pretrained
from xenc_jax.hf.weights import WeightsError


def _logits(pt, ids, mask, types):
    return np.asarray(pt.module().apply({"params": pt.params}, jnp.asarray(ids), jnp.asarray(mask),
                                        jnp.asarray(types)))


def test_real_minilm_with_seeded_head_matches_pytorch(minilm_dir, tmp_path):
    """all-MiniLM-L6-v2's real weights + a seeded 1-label head saved as BertForSequenceClassification."""
    torch.manual_seed(0)
    ref = tf.BertForSequenceClassification.from_pretrained(str(minilm_dir), num_labels=1).eval()
    ref.save_pretrained(str(tmp_path))
    tok = tf.AutoTokenizer.from_pretrained(str(minilm_dir))
    tok.save_pretrained(str(tmp_path))
    pt = load_pretrained(tmp_path, head=True)
    assert pt.config.num_layers == 6 and pt.config.hidden_size == 384
    pairs = [("how many people live in berlin?", "Berlin has about 3.7 million registered inhabitants."),
             ("what is jax", "JAX is Autograd and XLA, brought together for high-performance research."),
             ("a", "b " * 300)]
    enc = tok([p[0] for p in pairs], [p[1] for p in pairs], padding=True, truncation=True,
              max_length=256, return_tensors="np")
    with torch.no_grad():
        want = ref(**{k: torch.tensor(v) for k, v in enc.items()}, output_hidden_states=True)
    logits, inter = pt.module().apply({"params": pt.params}, enc["input_ids"], enc["attention_mask"],
                                      enc["token_type_ids"], capture_intermediates=True,
                                      mutable=["intermediates"])
    layers = inter["intermediates"]["encoder"]
    # Compared on real tokens: at padding positions of this real model both sides compute
    # meaningless, large-norm states that agree only to ~2e-4 (never read by any head or pooling).
    valid = enc["attention_mask"][..., None].astype(bool)
    for i in range(6):
        got = np.asarray(layers[f"layer_{i}"]["__call__"][0])
        ref_h = want.hidden_states[i + 1].numpy()
        if i == 5:  # the classifier's last layer computes only the [CLS] row its head reads
            assert got.shape == (3, 1, 384)
            ref_h, valid = ref_h[:, :1], valid[:, :1]
        diff = np.where(valid, got - ref_h, 0.0)
        assert np.abs(diff).max() <= 1e-5, (i, np.abs(diff).max())
    assert np.abs(np.asarray(logits) - want.logits.numpy()).max() <= 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_round_trip_save_then_pytorch_loads_same_logits(family, tmp_path):
    make_tiny(family, tmp_path / "orig", head=True, num_labels=3, seed=7)
    pt = load_pretrained(tmp_path / "orig", head=True, with_tokenizer=False)
    save_pretrained(tmp_path / "saved", pt.config, pt.params, head=True)
    ref = tf.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "saved")).eval()
    ids, mask, types = random_batch(family, seed=8)
    kw = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    if family != "distilbert":
        kw["token_type_ids"] = torch.tensor(types)
    with torch.no_grad():
        want = ref(**kw).logits.numpy()
    assert np.abs(_logits(pt, ids, mask, types) - want).max() <= 1e-4
    # the saved tensors are bit-identical to the originals
    a, b = load_file(str(tmp_path / "orig" / "model.safetensors")), load_file(str(tmp_path / "saved" / "model.safetensors"))
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_bare_encoder_round_trip(tmp_path):
    make_tiny("bert", tmp_path / "orig", head=False, seed=9)
    pt = load_pretrained(tmp_path / "orig", head=False, with_tokenizer=False)
    save_pretrained(tmp_path / "saved", pt.config, pt.params, head=False)
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["architectures"] == ["BertModel"]
    again = load_pretrained(tmp_path / "saved", head=False, with_tokenizer=False)
    ids, mask, types = random_batch("bert")
    a = pt.module().apply({"params": pt.params}, ids, mask, types)
    b = again.module().apply({"params": again.params}, ids, mask, types)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_sharded_safetensors_and_torch_bin(tmp_path):
    ref = make_tiny("bert", tmp_path / "one", head=True, num_labels=1, seed=10)
    ref.save_pretrained(str(tmp_path / "sharded"), max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    (tmp_path / "bin").mkdir()
    shutil.copy(tmp_path / "one" / "config.json", tmp_path / "bin")
    torch.save(ref.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    ids, mask, types = random_batch("bert")
    base = _logits(load_pretrained(tmp_path / "one", with_tokenizer=False), ids, mask, types)
    for d in ("sharded", "bin"):
        np.testing.assert_array_equal(_logits(load_pretrained(tmp_path / d, with_tokenizer=False), ids, mask, types), base)


def test_bare_checkpoint_gets_fresh_head_like_hf(tmp_path, caplog):
    make_tiny("bert", tmp_path, head=False, seed=11)
    pt = load_pretrained(tmp_path, head=True, num_labels=2, with_tokenizer=False, seed=3)
    assert pt.params["head"]["out"]["kernel"].shape == (32, 2)
    assert "no trained classification head" in caplog.text
    # the trained pooler of the checkpoint is kept, only the classifier is new
    state = load_file(str(tmp_path / "model.safetensors"))
    np.testing.assert_array_equal(np.asarray(pt.params["head"]["dense"]["kernel"]), state["pooler.dense.weight"].T)


# ---- bad input: clear errors naming the problem ----

def test_directory_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_pretrained(tmp_path, with_tokenizer=False)


def test_missing_directory_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained(str(tmp_path / "nope" / "x" / "y"), with_tokenizer=False)


def _edit_config(path, **changes):
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))


def test_unknown_model_type(tmp_path):
    make_tiny("bert", tmp_path, seed=12)
    _edit_config(tmp_path, model_type="gpt2")
    with pytest.raises(ConfigError, match="unknown model_type 'gpt2'"):
        load_pretrained(tmp_path, with_tokenizer=False)


@pytest.mark.parametrize("key,value,match", [
    ("position_embedding_type", "relative_key", "position_embedding_type='relative_key' changes the math"),
    ("hidden_act", "mish", "hidden_act='mish' is not supported"),
    ("rope_theta", 10000.0, r"does not handle: \['rope_theta'\]"),
])
def test_unhandled_config_attribute(tmp_path, key, value, match):
    make_tiny("bert", tmp_path, seed=13)
    _edit_config(tmp_path, **{key: value})
    with pytest.raises(ConfigError, match=match):
        load_pretrained(tmp_path, with_tokenizer=False)


def test_ignore_config_keys_escape_hatch(tmp_path):
    make_tiny("bert", tmp_path, seed=13)
    _edit_config(tmp_path, my_note="harmless")
    assert load_pretrained(tmp_path, with_tokenizer=False, ignore_config_keys=("my_note",)).config.num_layers == 2


def _edit_weights(path, fn):
    state = load_file(str(path / "model.safetensors"))
    fn(state)
    save_file(state, str(path / "model.safetensors"))


def test_missing_tensor(tmp_path):
    make_tiny("bert", tmp_path, seed=14)
    _edit_weights(tmp_path, lambda s: s.pop("bert.encoder.layer.1.output.dense.weight"))
    with pytest.raises(WeightsError, match=r"missing from the checkpoint \(1\).*layer\.1\.output\.dense\.weight"):
        load_pretrained(tmp_path, with_tokenizer=False)


def test_extra_tensor(tmp_path):
    make_tiny("bert", tmp_path, seed=15)
    _edit_weights(tmp_path, lambda s: s.update({"bert.encoder.layer.5.output.dense.weight": np.zeros((2, 2), np.float32)}))
    with pytest.raises(WeightsError, match=r"not used by a 'bert' model \(1\).*layer\.5\.output"):
        load_pretrained(tmp_path, with_tokenizer=False)


def test_wrong_shape(tmp_path):
    make_tiny("bert", tmp_path, seed=16)
    _edit_weights(tmp_path, lambda s: s.update({"bert.encoder.layer.0.intermediate.dense.weight": np.zeros((36, 32), np.float32)}))
    with pytest.raises(WeightsError, match=r"wrong shapes: bert\.encoder\.layer\.0\.intermediate\.dense\.weight \(36, 32\)"):
        load_pretrained(tmp_path, with_tokenizer=False)


def test_head_of_other_size_is_an_error(tmp_path):
    make_tiny("bert", tmp_path, num_labels=3, seed=17)
    with pytest.raises(WeightsError, match=r"classifier\.weight \(3, 32\)"):
        load_pretrained(tmp_path, num_labels=1, with_tokenizer=False)


def test_no_weights_file(tmp_path):
    make_tiny("bert", tmp_path, seed=18)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no weights in"):
        load_pretrained(tmp_path, with_tokenizer=False)


def test_known_harmless_extras_are_ignored_by_name(tmp_path):
    make_tiny("bert", tmp_path, seed=19)
    _edit_weights(tmp_path, lambda s: s.update({"bert.embeddings.position_ids": np.arange(64)[None],
                                                "cls.predictions.bias": np.zeros(120, np.float32)}))
    load_pretrained(tmp_path, with_tokenizer=False)


def test_direct_tokenizer_table_is_what_autotokenizer_registers():
    """load_tokenizer skips AutoTokenizer (and the torch import it brings) only where the folder
    names the class AutoTokenizer registers for its model_type; the table must follow transformers."""
    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES
    from xenc_jax.hf.pretrained import direct_tokenizers
    table = direct_tokenizers()
    assert {"bert", "xlm-roberta", "qwen3"} <= set(table)   # read from the family records
    for model_type, name in table.items():
        assert (TOKENIZER_MAPPING_NAMES[model_type] or "").removesuffix("Fast") == name, model_type


def test_load_tokenizer_gives_autotokenizers_tokenizer(minilm_dir, tmp_path):
    """Same class and same ids as AutoTokenizer: the real MiniLM folder (direct path), an MPNet
    folder (direct), a DeBERTa stand-in whose class is not its model_type's (AutoTokenizer path),
    and a decoder's PreTrainedTokenizerFast (AutoTokenizer path)."""
    from tiny_hf import deberta_tokenizer, mpnet_tokenizer
    from tiny_llm import make_tiny_llm
    from xenc_jax.hf.pretrained import _direct_tokenizer_class, load_tokenizer
    mpnet = tmp_path / "mpnet"
    mpnet_tokenizer(minilm_dir).save_pretrained(str(mpnet))
    (mpnet / "config.json").write_text(json.dumps({"model_type": "mpnet"}))
    deberta = tmp_path / "deberta"
    deberta_tokenizer(minilm_dir).save_pretrained(str(deberta))
    (deberta / "config.json").write_text(json.dumps({"model_type": "deberta-v2"}))
    llm = tmp_path / "llm"
    make_tiny_llm("qwen3-causal", llm)
    folders = {minilm_dir: True, mpnet: True, deberta: False, llm: False}
    texts = ["How many people live in Berlin?", "Berlin has 3.7 million inhabitants, and Paris 2.1 million."]
    for folder, direct in folders.items():
        assert (_direct_tokenizer_class(Path(folder)) is not None) == direct, folder
        ours, auto = load_tokenizer(Path(folder)), tf.AutoTokenizer.from_pretrained(str(folder))
        assert type(ours) is type(auto), folder
        assert ours(texts[0], texts[1], truncation="longest_first", max_length=24) == \
            auto(texts[0], texts[1], truncation="longest_first", max_length=24)
        assert ours.model_max_length == auto.model_max_length and ours.all_special_ids == auto.all_special_ids


def test_loading_a_cross_encoder_does_not_import_torch(minilm_dir, tmp_path):
    """A fresh process: CrossEncoder on a BERT folder never imports torch (a second or two of
    start-up where torch is installed, e.g. beside sentence-transformers)."""
    import subprocess
    import sys
    from test_train_utils import REPO
    code = ("import sys; from xenc_jax import CrossEncoder; ce = CrossEncoder(sys.argv[1], allow_new_head=True); "
            "ce.predict([('a query', 'a passage')]); print('torch' in sys.modules)")
    got = subprocess.run([sys.executable, "-c", code, str(minilm_dir)], capture_output=True, text=True,
                         env={**__import__("os").environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)})
    assert got.returncode == 0, got.stderr[-2000:]
    assert got.stdout.strip().splitlines()[-1] == "False"
