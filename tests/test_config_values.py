"""A hand-edited config.json with a value of the wrong type or range is one ConfigError line naming
the folder's config.json, the key, the bad value and what is expected (not a TypeError from deep in a
reader, nor a weights error blaming the checkpoint); other config and weights errors name the folder
too, since `search` / `mine --rerank` load two models. Configs only: nothing here compiles."""
from __future__ import annotations

import json

import pytest

from xenc_jax.hf.configs import ConfigError, load_config

# all-MiniLM-L6-v2's config.json, as the hub has it: a valid BERT config
MINILM = {
    "_name_or_path": "nreimers/MiniLM-L6-H384-uncased", "architectures": ["BertModel"],
    "attention_probs_dropout_prob": 0.1, "gradient_checkpointing": False, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "hidden_size": 384, "initializer_range": 0.02, "intermediate_size": 1536,
    "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert", "num_attention_heads": 12,
    "num_hidden_layers": 6, "pad_token_id": 0, "position_embedding_type": "absolute",
    "transformers_version": "4.8.2", "type_vocab_size": 2, "use_cache": True, "vocab_size": 30522,
}
# a DistilBERT config: the same check under that family's own key names
DISTILBERT = {"model_type": "distilbert", "vocab_size": 120, "dim": 32, "n_layers": 2, "n_heads": 4,
              "hidden_dim": 37, "max_position_embeddings": 64, "activation": "gelu", "dropout": 0.1,
              "attention_dropout": 0.1}


def _folder(tmp_path, config: dict, name: str = "model"):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _error(tmp_path, config: dict, name: str = "model") -> str:
    folder = _folder(tmp_path, config, name)
    with pytest.raises(ConfigError) as e:
        load_config(folder)
    message = str(e.value)
    assert "\n" not in message and str(folder / "config.json") in message, message
    return message


def test_a_valid_config_still_loads(tmp_path):
    cfg = load_config(_folder(tmp_path, MINILM))
    got = (cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.layer_norm_eps, cfg.num_labels)
    assert got == (384, 6, 12, 1e-12, 2)
    assert load_config(_folder(tmp_path, DISTILBERT, "distilbert")).num_layers == 2


@pytest.mark.parametrize("base, key, value, expected", [
    (MINILM, "hidden_size", None, "an integer >= 1"),            # was: unsupported operand type(s) for %
    (MINILM, "num_attention_heads", "abc", "an integer >= 1"),
    (MINILM, "hidden_size", True, "an integer >= 1"),            # JSON true is a Python int: still refused
    (MINILM, "hidden_size", 384.5, "an integer >= 1"),
    (MINILM, "layer_norm_eps", "x", "a number > 0"),             # was: could not convert string to float
    (MINILM, "layer_norm_eps", 0, "a number > 0"),
    (MINILM, "num_hidden_layers", -1, "an integer >= 1"),        # was: a list of tensors the model does not use
    (MINILM, "attention_probs_dropout_prob", 1.5, "a number from 0 to 1"),
    (MINILM, "pad_token_id", "0", "an integer"),
    (DISTILBERT, "n_layers", -1, "an integer >= 1"),
    (DISTILBERT, "dim", "32", "an integer >= 1"),
])
def test_a_bad_value_names_the_file_the_key_the_value_and_what_is_expected(tmp_path, base, key, value, expected):
    message = _error(tmp_path, {**base, key: value})
    assert f"{key}={value!r} is not valid, expected {expected}" in message, message


def test_zero_labels_is_refused_before_the_weights(tmp_path):
    """id2label {} with num_labels 0 was a weights shape error; it is the config that is wrong."""
    message = _error(tmp_path, {**MINILM, "id2label": {}, "num_labels": 0})
    assert "num_labels=0 is not valid, expected an integer >= 1" in message


def test_id2label_of_the_wrong_kind(tmp_path):
    assert "id2label=['a', 'b'] is not valid" in _error(tmp_path, {**MINILM, "id2label": ["a", "b"]})


def test_a_null_where_the_reader_needs_a_number_is_named(tmp_path):
    """ELECTRA's embedding_size is read by the family's reader, not the table: a null gets past the
    table (DeBERTa allows it) and is caught where the field becomes an int, still naming the file."""
    electra = {**MINILM, "model_type": "electra", "embedding_size": None}
    assert "the embedding size read from it is None, expected an integer" in _error(tmp_path, electra)


def test_other_config_errors_name_the_file(tmp_path):
    """The unhandled-attribute error and a family reader's own error name the folder's config.json."""
    folder = tmp_path / "model"
    message = _error(tmp_path, {**MINILM, "my_new_switch": True})
    assert f"{folder / 'config.json'} has attributes xenc_jax does not handle: ['my_new_switch']" in message
    assert "only ELECTRA projects embeddings" in _error(tmp_path, {**MINILM, "embedding_size": 128}, "b")


def test_a_checkpoint_mismatch_names_the_folder(tmp_path):
    from xenc_jax.hf.weights import WeightsError, params_from_hf
    folder = _folder(tmp_path, MINILM)
    with pytest.raises(WeightsError, match="missing from the checkpoint") as e:
        params_from_hf({}, load_config(folder), head=False, source=folder)
    assert str(e.value).startswith(f"the checkpoint in {folder} does not match the 'bert' config "
                                   f"({folder / 'config.json'}: 6 layers, hidden 384)")


def test_offline_hub_hint_names_the_option_of_each_command(monkeypatch):
    """The hub is out of reach here; the hint must fit `xenc train` (--set model=DIR) as well as the
    commands that take --model DIR."""
    import huggingface_hub

    def offline(**kwargs):
        raise OSError("offline")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    from xenc_jax.hf.hub import resolve_model_dir
    with pytest.raises(OSError) as e:
        resolve_model_dir("no-such-org/no-such-model")
    assert "--model DIR" in str(e.value) and "--set model=DIR in xenc train" in str(e.value)


def test_cli_score_prints_the_one_line(tmp_path, capsys):
    from xenc_jax.cli import main
    folder = _folder(tmp_path, {**MINILM, "hidden_size": None})
    pairs = tmp_path / "p.tsv"
    pairs.write_text("q\td\n")
    assert main(["score", str(pairs), "--model", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"xenc score: error: {folder / 'config.json'}: hidden_size=None is not valid, expected an "
                   "integer >= 1; fix the value (it must match the checkpoint the folder was saved with)")


# DeBERTa-v2's and MPNet's relative-position keys: read by the family readers with int(), so a
# wrong type was a generic "a value has the wrong type" line that did not name the key
DEBERTA = {"model_type": "deberta-v2", "vocab_size": 120, "hidden_size": 32, "num_hidden_layers": 2,
           "num_attention_heads": 4, "intermediate_size": 37, "hidden_act": "gelu", "max_position_embeddings": 64,
           "layer_norm_eps": 1e-7, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
           "relative_attention": True, "position_buckets": 8, "max_relative_positions": 16}
MPNET = {"model_type": "mpnet", "vocab_size": 120, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
         "intermediate_size": 37, "hidden_act": "gelu", "max_position_embeddings": 64, "layer_norm_eps": 1e-5,
         "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "relative_attention_num_buckets": 32}


@pytest.mark.parametrize("base, key, value, expected", [
    # HF tests position_buckets > 0 and divides by position_buckets // 2: 1 divides by zero, null
    # and a string fail in PyTorch (TypeError), so each is refused here, by name
    (DEBERTA, "position_buckets", 1, "an integer: >= 2 log buckets, or <= 0 for none"),
    (DEBERTA, "position_buckets", None, "an integer: >= 2"),
    (DEBERTA, "position_buckets", "8", "an integer: >= 2"),
    (DEBERTA, "max_relative_positions", None, "an integer (< 1: max_position_embeddings)"),
    (DEBERTA, "max_relative_positions", 1.5, "an integer (< 1"),
    # rows of nn.Embedding(num_buckets, heads) (MPNet, T5): null fails in transformers' config
    (MPNET, "relative_attention_num_buckets", None, "an integer >= 1"),
    (MPNET, "relative_attention_num_buckets", 0, "an integer >= 1"),
    (MPNET, "relative_attention_num_buckets", "32", "an integer >= 1"),
])
def test_relative_position_keys_are_in_the_table(tmp_path, base, key, value, expected):
    message = _error(tmp_path, {**base, key: value})
    assert f"{key}={value!r} is not valid, expected {expected}" in message, message


def test_relative_position_values_hf_accepts_still_load(tmp_path):
    """The table's ranges are HF's: no buckets (-1, 0), any max_relative_positions (< 1 means the
    position table's size); MPNet's own >= 32 stays its reader's check."""
    for i, changes in enumerate(({"position_buckets": -1, "max_relative_positions": -1},
                                 {"position_buckets": 0, "max_relative_positions": 0}, {"position_buckets": 2})):
        cfg = load_config(_folder(tmp_path, {**DEBERTA, **changes}, f"d{i}"))
        assert cfg.position_buckets == changes["position_buckets"]
    assert load_config(_folder(tmp_path, {**DEBERTA, "max_relative_positions": -1}, "d3")).max_relative_positions == 64
    assert load_config(_folder(tmp_path, {**MPNET, "relative_attention_num_buckets": 64}, "m")).relative_attention_num_buckets == 64
    assert "relative_attention_num_buckets=8" in _error(tmp_path, {**MPNET, "relative_attention_num_buckets": 8}, "m8")


def test_a_null_pad_token_id_loads_where_transformers_runs_it(tmp_path):
    """"pad_token_id": null is valid in transformers (nn.Embedding's padding_idx=None). BERT, ELECTRA
    and DistilBERT use it only there, so they load (the scores: test_api_consistency's parity test);
    RoBERTa-style models number positions from it and transformers fails without one, so refused."""
    for name, base in (("bert", MINILM), ("electra", {**MINILM, "model_type": "electra"}), ("distilbert", DISTILBERT)):
        cfg = load_config(_folder(tmp_path, {**base, "pad_token_id": None}, name))
        assert cfg.position_offset == 0 and '"pad_token_id": null' in cfg.raw_json   # saved as it was
    for family in ("roberta", "xlm-roberta", "camembert"):
        message = _error(tmp_path, {**MINILM, "model_type": family, "pad_token_id": None}, family)
        assert f"'{family}' config has pad_token_id=null, but {family} numbers its positions from the pad id" in message
    # no key at all is still RoBERTa's default, 1 (positions from 2)
    assert load_config(_folder(tmp_path, {k: v for k, v in MINILM.items() if k != "pad_token_id"}
                               | {"model_type": "roberta"}, "r")).position_offset == 2
