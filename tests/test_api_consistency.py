"""The same option, error and name wherever a user meets them:
- `ignore_config_keys=` on BiEncoder as on CrossEncoder, and `--ignore-config-keys` on every
  command that loads a model (encode, search and its re-ranker, mine), one parser (cli/score.py);
- the errors a caller catches are importable from `xenc_jax`;
- rank() / rank_many() name a bad input by the caller's own arguments (query, documents[i],
  queries[q], documents[q][i]), never by the flattened pairs list they build (test_nonfinite: a
  NaN score, a lone surrogate; test_family_qwen: an empty pair);
- `"pad_token_id": null` (valid in transformers) loads where transformers runs it, with its scores.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from xenc_jax.cli import main

SWITCH = "my_new_switch"   # a config.json attribute xenc_jax does not know


def test_public_errors_are_exported():
    """Each exported error is the class the code raises (not a copy), and `except
    xenc_jax.ConfigError` also catches a bad training setting."""
    import xenc_jax
    from xenc_jax.hf import configs, model_folder, weights
    from xenc_jax.runner import InputError, NonFiniteOutput
    from xenc_jax.train import config as train_config, rows
    assert xenc_jax.ConfigError is configs.ConfigError and xenc_jax.WeightsError is weights.WeightsError
    assert xenc_jax.ModelFolderError is model_folder.ModelFolderError
    assert xenc_jax.MissingHeadError is model_folder.MissingHeadError
    assert xenc_jax.NonFiniteOutput is NonFiniteOutput and issubclass(NonFiniteOutput, InputError)
    assert xenc_jax.DataError is rows.DataError
    assert issubclass(train_config.ConfigError, xenc_jax.ConfigError)
    with pytest.raises(xenc_jax.ConfigError, match="unknown config key 'no_such_key'"):
        train_config.apply_overrides(train_config.TrainConfig(), ["no_such_key=1"])
    for name in ("ConfigError", "ModelFolderError", "MissingHeadError", "WeightsError", "NonFiniteOutput",
                 "DataError"):
        assert name in xenc_jax.__all__ and issubclass(getattr(xenc_jax, name), ValueError)


@pytest.mark.parametrize("family", ["bert"])   # DistilBERT's reader: test_config_values
def test_null_pad_token_id_scores_as_transformers(family, tmp_path):
    """A tiny model saved with "pad_token_id": null (transformers builds its embeddings with
    padding_idx=None and runs): same logits as transformers. 1e-4: the fp32 bound of the other
    tiny-model parity tests (test_hf_loading's round trip)."""
    import jax
    import jax.numpy as jnp
    import torch
    from tiny_hf import make_tiny, random_batch
    from xenc_jax.hf.pretrained import load_pretrained, save_pretrained
    ref = make_tiny(family, tmp_path / "m", num_labels=2, seed=11, pad_token_id=None)
    assert json.loads((tmp_path / "m" / "config.json").read_text())["pad_token_id"] is None
    pt = load_pretrained(tmp_path / "m", head=True, with_tokenizer=False)
    ids, mask, types = random_batch(family, seed=12)
    kw = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}
    if family != "distilbert":
        kw["token_type_ids"] = torch.tensor(types)
    with torch.no_grad():
        want = ref(**kw).logits.numpy()
    apply = jax.jit(pt.module().apply)   # one compile: cheaper than op-by-op dispatch
    got = np.asarray(apply({"params": pt.params}, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types)))
    assert np.abs(got - want).max() <= 1e-4
    save_pretrained(tmp_path / "saved", pt.config, pt.params, head=True)   # written back as it was read
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["pad_token_id"] is None


def test_roberta_with_a_null_pad_token_id_fails_in_transformers_too():
    """Why it is refused (test_config_values): RoBERTa's position ids come from the pad id."""
    import torch
    from tiny_hf import tiny_config
    import transformers as tf
    model = tf.AutoModel.from_config(tiny_config("roberta", pad_token_id=None)).eval()
    with pytest.raises(TypeError):
        model(input_ids=torch.tensor([[0, 5, 6, 2]]))


# ----------------------------------------------------------------------------- ignore_config_keys


@pytest.fixture(scope="module")
def with_switch(minilm_dir, tmp_path_factory):
    """A tiny 2-label BERT cross-encoder folder (MiniLM's real tokenizer) whose config.json holds
    SWITCH; as a plain HF folder it is also a bi-encoder (mean pooling, the head unused, as in ST).
    Two labels: `search --rerank` / `mine --rerank` refuse it once loaded, so those runs show that
    both models loaded with the option without compiling a re-ranker."""
    from tiny_hf import make_tiny_minilm
    root = tmp_path_factory.mktemp("switch")
    make_tiny_minilm("bert", root / "model", minilm_dir, head=True, num_labels=2, seed=3, max_position_embeddings=64)
    cfg = json.loads((root / "model" / "config.json").read_text())
    (root / "model" / "config.json").write_text(json.dumps({**cfg, SWITCH: True}))
    texts = ["a man eats food", "a dog runs in the park", "two people ride horses", "the cat sleeps"]
    (root / "texts.txt").write_text("\n".join(texts) + "\n")
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n"
                                               for i, t in enumerate(texts)))
    (root / "queries.tsv").write_text("q1\twho eats\n")
    (root / "pairs.jsonl").write_text("".join(json.dumps({"anchor": f"about {t}", "positive": t}) + "\n"
                                              for t in texts[:2]))
    return root


def test_bi_encoder_takes_ignore_config_keys(with_switch):
    from xenc_jax import BiEncoder, ConfigError
    with pytest.raises(ConfigError, match=rf"does not handle: \['{SWITCH}'\].*ignore_config_keys=\('{SWITCH}',\) "
                                          rf"\(CLI: --ignore-config-keys {SWITCH}\)"):
        BiEncoder(with_switch / "model")
    assert BiEncoder(with_switch / "model", ignore_config_keys=(SWITCH,)).get_sentence_embedding_dimension() > 0


def _err(capsys) -> str:
    return capsys.readouterr().err


def test_encode_search_and_mine_take_ignore_config_keys(with_switch, tmp_path, capsys):
    """Refused without the option (the message names it); with it, encode writes the library's
    embeddings, and search and mine load the bi-encoder AND the re-ranker (a config error from
    either would stop them first) and go on to the next check: a 2-label model cannot rank."""
    from xenc_jax import BiEncoder
    model, flag = str(with_switch / "model"), ["--ignore-config-keys", f" {SWITCH} ,"]
    encode = ["encode", str(with_switch / "texts.txt"), "--model", model, "-o", str(tmp_path / "e.npy")]
    assert main(encode) == 2 and f"--ignore-config-keys {SWITCH}" in _err(capsys)
    assert main(encode + flag) == 0
    want = BiEncoder(model, ignore_config_keys=(SWITCH,)).encode((with_switch / "texts.txt").read_text().splitlines())
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), want)

    search = ["search", "--corpus", str(with_switch / "corpus.jsonl"), "--queries", str(with_switch / "queries.tsv"),
              "--corpus-embeddings", str(tmp_path / "e.npy"), "--model", model, "--rerank", model]
    assert main(search) == 2 and SWITCH in _err(capsys)
    assert main(search + flag) == 2 and "rank() needs a model with num_labels=1, this one has 2" in _err(capsys)

    mine = ["mine", "--pairs", str(with_switch / "pairs.jsonl"), "--corpus", str(with_switch / "texts.txt"),
            "--model", model, "--rerank", model, "--num-negatives", "1", "-o", str(tmp_path / "m.jsonl")]
    assert main(mine) == 2 and SWITCH in _err(capsys)
    assert main(mine + flag) == 2 and "cross_encoder must give one score per pair (num_labels=1)" in _err(capsys)
