"""DeBERTa-v2/v3 (model_type deberta-v2), its own math: log buckets and the relative index vs
HF's, and every switch variant besides DeBERTa-v3's (which is the conformance row) per module
(each layer run alone on HF's input) and end to end (fp32), packed rows with absolute positions
and token types, save -> PyTorch, rejected switches and the tensors they ask for. The checks
every family passes on the v3 variant (per layer and end to end, num_labels 1 and 3, packed =
unpacked, save -> PyTorch, strict loading of tensors, bf16, sentence-transformers, 8 forced
devices): tests/test_family_conformance.py; training: tests/test_family_training.py.

The variants cover every switch that changes the math: share_att_key both ways, pos_att_type
c2p / p2c / both, log buckets (position_buckets 8, 16) and none (-1, 0), max_relative_positions
below the input length (distances are clamped) and -1 (= max_position_embeddings), norm_rel_ebd,
absolute positions on and off, an embedding projection, token types, and relative_attention off.
Inputs (150 tokens) are longer than every bucket and relative range.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

MODULE_TOL = 1e-5
END_TOL = 1e-4
LENGTHS = (150, 9, 40, 1, 131)
VARIANTS = {  # name -> (tiny_hf overrides on top of the DeBERTa-v3-style default, num_labels)
    "v3": (dict(), 1),
    "separate": (dict(share_att_key=False, position_buckets=16, max_relative_positions=64, norm_rel_ebd="none",
                      position_biased_input=True, embedding_size=16, type_vocab_size=2), 3),
    "c2p_exact": (dict(share_att_key=False, pos_att_type=["c2p"], position_buckets=-1,
                       max_relative_positions=20), 1),
    "p2c_zero": (dict(pos_att_type=["p2c"], position_buckets=0, max_relative_positions=-1), 3),
    # HF still scales by sqrt(3 * head_dim) here, and keeps an unused encoder.LayerNorm
    "no_relative": (dict(relative_attention=False, position_biased_input=True), 1),
}


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    from tiny_hf import make_tiny
    cache = {}

    def get(name):
        if name not in cache:
            overrides, labels = VARIANTS[name]
            path = tmp_path_factory.mktemp(f"deberta_{name}")
            ref = make_tiny("deberta-v2", path, head=True, num_labels=labels, seed=len(cache) + 1,
                            max_position_embeddings=202, **overrides)
            cache[name] = (ref, path)
        return cache[name]
    return get


def _apply(pt, *args, **kw):
    """pt's module applied under one jit (eager dispatch compiles each op separately: slower)."""
    import jax
    import jax.numpy as jnp
    fn = jax.jit(lambda params, *a: pt.module().apply({"params": params}, *a, **kw))
    return fn(pt.params, *(jnp.asarray(a) for a in args))


def _batch(pt, lengths=LENGTHS, seed=0):
    from tiny_hf import random_batch
    ids, mask, types = random_batch("deberta-v2", lengths=lengths, seed=seed)
    if pt.config.type_vocab_size:
        for r, n in enumerate(lengths):
            types[r, n // 2:n] = 1
    return ids, mask, types


@pytest.mark.parametrize("bucket,max_position", [(8, 32), (16, 64), (256, 512), (32, 20), (6, 512)])
def test_log_buckets_equal_torch(bucket, max_position):
    import torch
    from transformers.models.deberta_v2.modeling_deberta_v2 import make_log_bucket_position

    from xenc_jax.models.families.deberta_v2 import log_bucket_position
    rel = torch.arange(-4100, 4101)
    want = make_log_bucket_position(rel, bucket, max_position).to(torch.long).numpy()
    np.testing.assert_array_equal(log_bucket_position(rel.numpy(), bucket, max_position), want)


@pytest.mark.parametrize("name", ["v3", "c2p_exact", "p2c_zero"])
def test_relative_index_equals_torch_gather_index(name, variants):
    """Our table row per distance == HF's clamp(build_relative_position + span, 0, 2 span - 1)."""
    import torch
    from transformers.models.deberta_v2.modeling_deberta_v2 import build_relative_position

    from xenc_jax.hf.pretrained import load_pretrained
    from xenc_jax.models.families.deberta_v2 import relative_index_table
    _, path = variants(name)
    cfg = load_pretrained(path, head=False, with_tokenizer=False).config
    n = 300
    x = torch.zeros(1, n, 1)
    rel = build_relative_position(x, x, bucket_size=cfg.position_buckets, max_position=cfg.max_relative_positions)[0]
    span = cfg.att_span
    want = torch.clamp(rel + span, 0, 2 * span - 1).numpy()
    ours = relative_index_table(cfg, n - 1)[np.arange(n)[:, None] - np.arange(n)[None, :] + n - 1]
    np.testing.assert_array_equal(ours, want)


def _layer_alone(pt, i, x, mask, rel_table):
    import jax.numpy as jnp

    from xenc_jax.models.blocks import pair_mask_4d
    from xenc_jax.models.families.deberta_v2 import DebertaV2Layer, relative_index_table
    n = x.shape[1]
    index = relative_index_table(pt.config, n - 1)[np.arange(n)[:, None] - np.arange(n)[None, :] + n - 1]
    index = jnp.broadcast_to(jnp.asarray(index), (x.shape[0], n, n))
    layer = DebertaV2Layer(pt.config, jnp.float32, jnp.float32)
    return layer.apply({"params": pt.params["encoder"][f"layer_{i}"]}, jnp.asarray(x), pair_mask_4d(jnp.asarray(mask)),
                       index, rel_table, True)


@pytest.mark.parametrize("name", [v for v in VARIANTS if v != "v3"])   # v3: the conformance row
def test_parity_per_module_and_end_to_end(name, variants):
    import jax.numpy as jnp
    import torch

    from xenc_jax.hf.pretrained import load_pretrained
    ref, path = variants(name)
    bare = load_pretrained(path, head=False, with_tokenizer=False)
    full = load_pretrained(path, head=True, with_tokenizer=False)
    cfg = bare.config
    overrides, labels = VARIANTS[name]
    assert cfg.share_att_key == overrides.get("share_att_key", True) and full.config.num_labels == labels
    ids, mask, types = _batch(bare, seed=len(name))
    with torch.no_grad():
        t = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), token_type_ids=torch.tensor(types))
        out = ref(**t, output_hidden_states=True)
        rel_table = ref.deberta.encoder.get_rel_embedding()
        rel_table = None if rel_table is None else jnp.asarray(rel_table.numpy())
    # eager here: the variants share shapes, so op-by-op dispatch reuses its compilations
    hidden, inter = bare.module().apply({"params": bare.params}, jnp.asarray(ids), jnp.asarray(mask),
                                        jnp.asarray(types), capture_intermediates=True, mutable=["intermediates"])
    emb = np.asarray(inter["intermediates"]["encoder"]["embeddings"]["__call__"][0])
    assert np.abs(emb - out.hidden_states[0].numpy()).max() <= MODULE_TOL
    for i in range(cfg.num_layers):   # each layer alone on HF's input (HF's relative table too)
        got = np.asarray(_layer_alone(bare, i, out.hidden_states[i].numpy(), mask, rel_table))
        diff = np.abs(got - out.hidden_states[i + 1].numpy()).max()
        assert diff <= MODULE_TOL, (i, diff)
    # the whole last hidden state, padding positions included (they attend uniformly, as in HF)
    assert np.abs(np.asarray(hidden) - out.hidden_states[-1].numpy()).max() <= END_TOL
    logits = full.module().apply({"params": full.params}, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types))
    assert logits.shape == (len(LENGTHS), labels) and logits.dtype == jnp.float32
    assert np.abs(np.asarray(logits) - out.logits.numpy()).max() <= END_TOL
    if name == "no_relative":   # CPU scoring's row-group attention: same math (v3: the conformance row)
        chunked = full.module(attention_impl="query_chunked").apply(
            {"params": full.params}, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types))
        assert np.abs(np.asarray(chunked) - out.logits.numpy()).max() <= END_TOL


@pytest.mark.parametrize("name", ["separate"])   # v3-style packing: the ST tests below
def test_packed_rows_equal_unpacked(name, variants):
    """Two texts in one row, positions restarting: relative distances stay inside each segment,
    absolute positions and token types restart too."""
    import jax.numpy as jnp

    from xenc_jax.hf.pretrained import load_pretrained
    _, path = variants(name)
    pt = load_pretrained(path, head=True, with_tokenizer=False)
    bare = load_pretrained(path, head=False, with_tokenizer=False)
    ids, mask, types = _batch(pt, lengths=(70, 45), seed=5)
    alone = np.asarray(_apply(bare, ids, mask, types))
    alone_logits = np.asarray(_apply(pt, ids, mask, types))
    cat = lambda a: jnp.asarray(np.concatenate([a[0, :70], a[1, :45], np.zeros(5, a.dtype)])[None])
    row, row_types = cat(ids), cat(types)
    seg = jnp.asarray([[1] * 70 + [2] * 45 + [0] * 5])
    pos = jnp.asarray(np.concatenate([np.arange(70), np.arange(45), np.zeros(5, int)])[None])
    packed = np.asarray(_apply(bare, row, seg, row_types, pos))
    assert np.abs(packed[0, :70] - alone[0, :70]).max() <= MODULE_TOL
    assert np.abs(packed[0, 70:115] - alone[1, :45]).max() <= MODULE_TOL
    logits = np.asarray(_apply(pt, row, seg, row_types, pos, np.asarray([[0, 70]])))
    assert np.abs(logits[0] - alone_logits).max() <= MODULE_TOL


@pytest.mark.parametrize("name", ["separate"])   # v3: tests/test_family_conformance.py
def test_round_trip_save_then_pytorch_loads_same_logits(name, variants, tmp_path):
    import torch
    import transformers as tf
    from safetensors.numpy import load_file

    from xenc_jax.hf.pretrained import load_pretrained, save_pretrained
    _, path = variants(name)
    pt = load_pretrained(path, head=True, with_tokenizer=False)
    save_pretrained(tmp_path / "saved", pt.config, pt.params, head=True)
    ref = tf.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "saved")).eval()
    assert type(ref).__name__ == "DebertaV2ForSequenceClassification"
    ids, mask, types = _batch(pt, lengths=(30, 7, 1), seed=8)
    with torch.no_grad():
        want = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                   token_type_ids=torch.tensor(types)).logits.numpy()
    got = np.asarray(_apply(pt, ids, mask, types))
    assert np.abs(got - want).max() <= END_TOL
    a, b = load_file(str(path / "model.safetensors")), load_file(str(tmp_path / "saved" / "model.safetensors"))
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    bare = load_pretrained(path, head=False, with_tokenizer=False)
    save_pretrained(tmp_path / "bare", bare.config, bare.params, head=False)
    assert json.loads((tmp_path / "bare" / "config.json").read_text())["architectures"] == ["DebertaV2Model"]
    c = load_file(str(tmp_path / "bare" / "model.safetensors"))
    assert {"deberta." + k for k in c} == {k for k in a if k.startswith("deberta.")}


def test_strict_loading_names_the_problem(variants, tmp_path):
    import shutil

    from safetensors.numpy import load_file, save_file

    from xenc_jax.hf.configs import ConfigError, load_config
    from xenc_jax.hf.pretrained import load_pretrained
    from xenc_jax.hf.weights import WeightsError, params_from_hf
    _, orig = variants("v3")
    shutil.copytree(orig, tmp_path, dirs_exist_ok=True)
    cfg_path, w_path = tmp_path / "config.json", tmp_path / "model.safetensors"
    cfg, tensors = json.loads(cfg_path.read_text()), load_file(str(w_path))

    def with_config(**changes):
        cfg_path.write_text(json.dumps({**cfg, **changes}))

    def with_tensors(t):
        save_file(t, str(w_path))

    for changes, error, message in (
            (dict(conv_kernel_size=3), ConfigError, "conv_kernel_size=3"),
            (dict(attention_head_size=4), ConfigError, "attention_head_size=4"),
            (dict(pooler_hidden_size=16), ConfigError, "pooler_hidden_size=16"),
            (dict(pos_att_type="p2c|p2p"), ConfigError, r"pos_att_type=.*p2p"),
            (dict(norm_rel_ebd="batch_norm"), ConfigError, "norm_rel_ebd='batch_norm'"),
            (dict(pooler_hidden_act="mish"), ConfigError, "pooler_hidden_act='mish'"),
            (dict(position_buckets=1), ConfigError, "position_buckets=1"),
            (dict(is_decoder=True), ConfigError, "is_decoder=True"),
            (dict(some_new_switch=True), ConfigError, "some_new_switch"),
            # the config asks for tensors this checkpoint lacks: named by the table's `needs`
            (dict(share_att_key=False), WeightsError, r"missing.*pos_key_proj"),
            (dict(position_biased_input=True), WeightsError, r"missing.*position_embeddings"),
            (dict(embedding_size=16), WeightsError, r"missing.*embed_proj")):
        with_config(**changes)
        with pytest.raises(error, match=message):
            load_pretrained(tmp_path, with_tokenizer=False)
    with_config()
    # a missing, unused or wrongly shaped rel_embeddings tensor: tests/test_family_conformance.py
    # absolute positions in a checkpoint whose config does not use them are dropped, as HF does
    extra = "deberta.embeddings.position_embeddings.weight"
    with_tensors({**tensors, extra: np.zeros((202, 32), np.float32)})
    assert extra in params_from_hf(load_file(str(w_path)), load_config(tmp_path), head=True).ignored

