"""ModernBERT (model_type modernbert), its own math: the exact masks HF builds, rotary tables,
layer patterns / windows / biases / rope thetas / both poolings per module (each layer run alone
on HF's own input) and end to end (fp32), a long row, packed rows with mean pooling, save ->
PyTorch with biases, bare and MaskedLM checkpoints, the 4.x config spelling, rejected switches
and its optional / fused tensors. The checks every family passes (the conformance row: 3 layers,
global every 2nd, a window of 8: per layer and end to end, num_labels 1 and 3, packed = unpacked,
save -> PyTorch, strict loading of tensors, bf16, sentence-transformers, 8 forced devices):
tests/test_family_conformance.py.

The reference runs with attn_implementation="eager" (tests/tiny_hf.py). transformers 5 has no
unpadding path in ModernBertModel (4.x unpadded only for flash attention): eager and sdpa both
run padded rows with a 4-D mask, so padding positions are compared too. Inputs are longer than
every local window; switches vary per case: layer patterns, windows (odd ones too), biases on
and off, rope thetas, both classifier_pooling values, num_labels 1 and 3.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

MODULE_TOL = 1e-5
END_TOL = 1e-4
LENGTHS = (70, 9, 41, 1, 57)
BIASES = dict(norm_bias=True, attention_bias=True, mlp_bias=True, classifier_bias=True)
ENCODER_CASES = {   # every 2nd layer global with a window of 8: the conformance row
    "every3-w17-bias": dict(num_hidden_layers=4, global_attn_every_n_layers=3, local_attention=17,
                            global_rope_theta=1000.0, local_rope_theta=500.0, **BIASES),
}
HEAD_CASES = {  # (classifier_pooling, num_labels, attention implementation, switches); cls without biases: conformance
    "cls-3-bias": ("cls", 3, "query_chunked", dict(local_attention=6, **BIASES)),
    "mean-1-bias": ("mean", 1, None, dict(num_hidden_layers=3, local_attention=10, **BIASES)),
    "mean-3": ("mean", 3, "query_chunked", dict(num_hidden_layers=3, global_attn_every_n_layers=3, local_attention=16)),
}


def _hf_trace(ref, ids, mask):
    """Run the torch model, recording the embeddings' output, each layer's input and output,
    the pooled input of the head and the logits (forward hooks)."""
    import torch
    base = getattr(ref, "model", ref)
    rec = {}
    hooks = [base.embeddings.register_forward_hook(lambda m, a, o: rec.__setitem__("emb", o)),
             base.final_norm.register_forward_hook(lambda m, a, o: rec.__setitem__("final", (a[0], o)))]
    for i, layer in enumerate(base.layers):
        def hook(m, args, kwargs, out, i=i):
            rec[i] = (args[0] if args else kwargs["hidden_states"], out)
        hooks.append(layer.register_forward_hook(hook, with_kwargs=True))
    if hasattr(ref, "head"):
        hooks.append(ref.head.register_forward_hook(lambda m, a, o: rec.__setitem__("pooled", a[0])))
    try:
        with torch.no_grad():
            out = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    finally:
        for h in hooks:
            h.remove()
    return out, {k: tuple(t.numpy() for t in v) if isinstance(v, tuple) else v.numpy() for k, v in rec.items()}


def _max(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


def _run(module, params, *args, **kwargs):
    """module.apply under jit: one compilation instead of an eager dispatch (and compilation) per
    op, which for these many small ops is most of a test's time on 2 cores."""
    import jax
    return jax.jit(lambda p, *a: module.apply({"params": p}, *a, **kwargs))(params, *args)


# ---- the pieces HF builds, compared directly ----

def test_rotary_tables_equal_torch():
    """inv_freq: torch computes base ** (2i/d) with its float32 pow (CPU: within 1 ulp of the
    correctly rounded value; CUDA's powf differs again); ours is the correctly rounded value, so
    it may differ from torch's by 1 ulp. Angles and cos/sin otherwise follow torch's order."""
    import jax.numpy as jnp
    import torch
    import transformers as tf
    from transformers.models.modernbert.modeling_modernbert import ModernBertRotaryEmbedding

    from xenc_jax.models.blocks import RotaryPositions
    cfg = tf.ModernBertConfig(hidden_size=768, num_attention_heads=12, num_hidden_layers=3, pad_token_id=0,
                              global_rope_theta=160_000.0, local_rope_theta=10_000.0)
    rope = ModernBertRotaryEmbedding(cfg)
    pos = torch.arange(512)[None]
    for kind, theta in (("full_attention", 160_000.0), ("sliding_attention", 10_000.0)):
        want = getattr(rope, f"{kind}_inv_freq").numpy()
        got = RotaryPositions(64, theta).inv_freq()
        assert np.all(np.abs(got - want) <= np.spacing(want)), kind
        cos, sin = rope(torch.zeros(1), pos, kind)
        ours = RotaryPositions(64, theta).cos_sin(jnp.asarray(pos.numpy()))
        # 1-ulp inv_freq differences grow with the position: <= 512 * 2^-24 * angle scale
        assert _max(ours[0][:, :, 0], cos) <= MODULE_TOL and _max(ours[1][:, :, 0], sin) <= MODULE_TOL


@pytest.mark.parametrize("local_attention", [8, 9, 17])
def test_masks_equal_the_masks_hf_builds(local_attention):
    """Global and sliding-window masks, padding rows included, against masking_utils (eager)."""
    import jax.numpy as jnp
    import torch
    import transformers as tf
    from tiny_hf import random_batch
    from transformers.masking_utils import create_bidirectional_mask, create_bidirectional_sliding_window_mask

    from xenc_jax.models.blocks import attention_mask_4d, sliding_window_mask
    cfg = tf.ModernBertConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, pad_token_id=0,
                              local_attention=local_attention)
    cfg._attn_implementation = "eager"
    _, mask, _ = random_batch("modernbert", lengths=LENGTHS, seed=0)
    kw = dict(config=cfg, inputs_embeds=torch.zeros(*mask.shape, 32), attention_mask=torch.tensor(mask))
    full = create_bidirectional_mask(**kw).numpy() == 0
    local = create_bidirectional_sliding_window_mask(**kw).numpy() == 0
    pos = jnp.broadcast_to(jnp.arange(mask.shape[1]), mask.shape)
    ours_full = np.asarray(attention_mask_4d(jnp.asarray(mask)))
    ours_local = ours_full & np.asarray(sliding_window_mask(pos, pos, local_attention // 2))
    np.testing.assert_array_equal(ours_full, np.broadcast_to(full, ours_full.shape))
    np.testing.assert_array_equal(ours_local, np.broadcast_to(local, ours_local.shape))


# ---- per module and end to end ----

@pytest.mark.parametrize("case", ENCODER_CASES)
def test_encoder_parity_per_layer(case, tmp_path):
    import jax
    import jax.numpy as jnp
    from tiny_hf import make_tiny, random_batch

    from xenc_jax.hf.pretrained import load_pretrained
    from xenc_jax.models.families.modernbert import layer_inputs, make_layer
    from xenc_jax.models.blocks import layer_norm
    ref = make_tiny("modernbert", tmp_path, head=False, seed=1, **ENCODER_CASES[case])
    pt = load_pretrained(tmp_path, head=False, with_tokenizer=False)
    cfg = pt.config
    assert list(cfg.layer_types) == list(ref.config.layer_types)
    assert cfg.local_attention == ref.config.local_attention
    ids, mask, _ = random_batch("modernbert", lengths=LENGTHS, seed=7)
    out, rec = _hf_trace(ref, ids, mask)
    enc = pt.params["encoder"]
    pos = jnp.broadcast_to(jnp.arange(ids.shape[1]), ids.shape)
    # per layer with the CPU default (chunked) attention; the whole model with both
    for impl in ("query_chunked", None):
        hidden, inter = _run(pt.module(attention_impl=impl), pt.params, jnp.asarray(ids), jnp.asarray(mask),
                             capture_intermediates=True, mutable=["intermediates"])
        assert _max(hidden, out.last_hidden_state) <= END_TOL, impl   # padding positions included
        if impl is None:
            continue
        emb = inter["intermediates"]["encoder"]["embeddings"]["__call__"][0]
        assert _max(emb, rec["emb"]) <= MODULE_TOL
        for i, kind in enumerate(cfg.layer_types):
            hf_in, hf_out = rec[i]

            def alone(p, x, m, i=i, kind=kind):   # layer i on HF's input, with its own mask and rotary
                mask4, rotate = layer_inputs(cfg, kind, m, pos)
                return make_layer(cfg, i, jnp.float32, jnp.float32, impl).apply({"params": p}, x, mask4, True, None,
                                                                                rotate)
            got = jax.jit(alone)(enc[f"layer_{i}"], jnp.asarray(hf_in), jnp.asarray(mask))
            assert _max(got, hf_out) <= MODULE_TOL, (impl, i, kind, _max(got, hf_out))
    final = layer_norm(cfg.layer_norm_eps, "final_norm", jnp.float32, use_bias=cfg.norm_bias)
    assert _max(_run(final, enc["final_norm"], jnp.asarray(rec["final"][0])), rec["final"][1]) <= MODULE_TOL


@pytest.mark.parametrize("case", HEAD_CASES)
def test_classifier_parity(case, tmp_path):
    import jax.numpy as jnp
    from tiny_hf import make_tiny, random_batch

    from xenc_jax.hf.pretrained import load_pretrained
    pooling, num_labels, impl, switches = HEAD_CASES[case]
    ref = make_tiny("modernbert", tmp_path, head=True, num_labels=num_labels, seed=2,
                    classifier_pooling=pooling, **switches)
    pt = load_pretrained(tmp_path, head=True, with_tokenizer=False)
    assert pt.config.num_labels == num_labels and pt.config.classifier_pooling == pooling
    ids, mask, _ = random_batch("modernbert", lengths=LENGTHS, seed=3)
    out, rec = _hf_trace(ref, ids, mask)
    want = out.logits.numpy()
    # the head alone on HF's pooled input
    head = pt.config.head_module(pt.config)
    assert _max(_run(head, pt.params["head"], jnp.asarray(rec["pooled"])), want) <= MODULE_TOL
    logits = _run(pt.module(attention_impl=impl), pt.params, jnp.asarray(ids), jnp.asarray(mask))
    assert logits.shape == (len(LENGTHS), num_labels) and logits.dtype == jnp.float32
    assert _max(logits, want) <= END_TOL, (impl, _max(logits, want))


def test_long_input_end_to_end(tmp_path):
    """A row far past every window and the tiny tables' usual lengths (positions to 2047)."""
    import jax.numpy as jnp
    from tiny_hf import make_tiny, random_batch

    from xenc_jax.hf.pretrained import load_pretrained
    ref = make_tiny("modernbert", tmp_path, head=True, num_labels=1, seed=5, classifier_pooling="mean",
                    max_position_embeddings=8192, local_attention=128, global_attn_every_n_layers=3,
                    num_hidden_layers=3)
    pt = load_pretrained(tmp_path, head=True, with_tokenizer=False)
    ids, mask, _ = random_batch("modernbert", lengths=(2048, 1500), seed=6)
    out, _ = _hf_trace(ref, ids, mask)
    logits = _run(pt.module(), pt.params, jnp.asarray(ids), jnp.asarray(mask))
    assert _max(logits, out.logits) <= END_TOL, _max(logits, out.logits)


@pytest.mark.parametrize("pooling", ["mean"])   # cls: tests/test_family_conformance.py
def test_packed_segments_equal_alone(pooling, tmp_path):
    """Two texts in one row, positions restarting: rotary angles and the local window follow the
    position ids, so each segment's hidden states and logits equal its unpacked ones."""
    import jax.numpy as jnp
    from tiny_hf import make_tiny, random_batch

    from xenc_jax.hf.pretrained import load_pretrained
    make_tiny("modernbert", tmp_path, head=True, num_labels=3, seed=4, classifier_pooling=pooling, local_attention=10)
    pt = load_pretrained(tmp_path, head=True, with_tokenizer=False)
    ids, mask, _ = random_batch("modernbert", lengths=(40, 23), seed=5)
    row = jnp.asarray(np.concatenate([ids[0, :40], ids[1, :23], [0, 0]])[None])
    seg = jnp.asarray([[1] * 40 + [2] * 23 + [0, 0]])
    pos = jnp.asarray(np.concatenate([np.arange(40), np.arange(23), [0, 0]])[None])
    alone = _run(pt.module(), pt.params, jnp.asarray(ids), jnp.asarray(mask))
    packed = _run(pt.module(), pt.params, row, seg, None, pos, jnp.asarray([[0, 40]]))
    assert _max(packed[0], alone) <= MODULE_TOL
    bare = load_pretrained(tmp_path, head=False, with_tokenizer=False)
    h_alone = np.asarray(_run(bare.module(), bare.params, jnp.asarray(ids), jnp.asarray(mask)))
    h_packed = np.asarray(_run(bare.module(), bare.params, row, seg, None, pos))
    assert _max(h_packed[0, :40], h_alone[0, :40]) <= MODULE_TOL
    assert _max(h_packed[0, 40:63], h_alone[1, :23]) <= MODULE_TOL


def test_round_trip_save_then_pytorch_loads_same_logits(tmp_path):
    import jax.numpy as jnp
    import torch
    import transformers as tf
    from safetensors.numpy import load_file
    from tiny_hf import make_tiny, random_batch, randomize_, tiny_config

    from xenc_jax.hf.pretrained import load_pretrained, save_pretrained
    for name, switches in (("bias", dict(classifier_pooling="mean", **BIASES)),):   # plain: conformance
        orig, saved = tmp_path / f"{name}_orig", tmp_path / f"{name}_saved"
        make_tiny("modernbert", orig, head=True, num_labels=3, seed=7, **switches)
        pt = load_pretrained(orig, head=True, with_tokenizer=False)
        save_pretrained(saved, pt.config, pt.params, head=True)
        ref = tf.AutoModelForSequenceClassification.from_pretrained(str(saved), attn_implementation="eager").eval()
        assert type(ref).__name__ == "ModernBertForSequenceClassification"
        ids, mask, _ = random_batch("modernbert", lengths=LENGTHS, seed=8)
        with torch.no_grad():
            want = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
        got = _run(pt.module(), pt.params, jnp.asarray(ids), jnp.asarray(mask))
        assert _max(got, want) <= END_TOL, name
        a, b = load_file(str(orig / "model.safetensors")), load_file(str(saved / "model.safetensors"))
        assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a), name   # Wqkv / Wi re-joined
    bare, bare_saved = tmp_path / "bare", tmp_path / "bare_saved"
    make_tiny("modernbert", bare, head=False, seed=9)
    enc = load_pretrained(bare, head=False, with_tokenizer=False)
    save_pretrained(bare_saved, enc.config, enc.params, head=False)
    assert json.loads((bare_saved / "config.json").read_text())["architectures"] == ["ModernBertModel"]
    a, b = load_file(str(bare / "model.safetensors")), load_file(str(bare_saved / "model.safetensors"))
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    # a ModernBertForMaskedLM checkpoint (how the hub's base models come) loads as a bare encoder:
    # its prediction head and decoder are dropped by name
    mlm = tf.AutoModelForMaskedLM.from_config(tiny_config("modernbert"), attn_implementation="eager")
    randomize_(mlm, 11)
    mlm.eval().save_pretrained(str(tmp_path / "mlm"))
    enc = load_pretrained(tmp_path / "mlm", head=False, with_tokenizer=False)
    ids, mask, _ = random_batch("modernbert", lengths=LENGTHS, seed=12)
    with torch.no_grad():
        want = mlm.model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state
    assert _max(_run(enc.module(), enc.params, jnp.asarray(ids), jnp.asarray(mask)), want) <= END_TOL


def test_hub_4x_config_spelling_reads_the_same(tmp_path):
    """A 4.x-saved config (global_attn_every_n_layers, global/local_rope_theta, no layer_types or
    rope_parameters, leftover layer_norm_eps / position_embedding_type) reads as 5.x does."""
    import transformers as tf
    from tiny_hf import make_tiny

    from xenc_jax.hf.configs import config_from_dict
    make_tiny("modernbert", tmp_path, head=False, seed=1, num_hidden_layers=4, global_attn_every_n_layers=3,
              global_rope_theta=2000.0, local_rope_theta=300.0)
    new = json.loads((tmp_path / "config.json").read_text())
    old = {k: v for k, v in new.items() if k not in ("layer_types", "rope_parameters")}
    old.update(global_rope_theta=2000.0, local_rope_theta=300.0, layer_norm_eps=1e-5, reference_compile=None,
               position_embedding_type="absolute", transformers_version="4.48.0")
    a, b = config_from_dict(new), config_from_dict(old)
    assert a.layer_types == b.layer_types == ("full_attention", "sliding_attention", "sliding_attention",
                                              "full_attention")
    assert (a.global_rope_theta, a.local_rope_theta) == (b.global_rope_theta, b.local_rope_theta) == (2000.0, 300.0)
    hf = tf.ModernBertConfig.from_dict(old)
    assert list(hf.layer_types) == list(b.layer_types)
    assert hf.rope_parameters["sliding_attention"]["rope_theta"] == 300.0


def test_strict_loading_names_the_problem(tmp_path):
    from safetensors.numpy import load_file, save_file
    from tiny_hf import make_tiny

    from xenc_jax.hf.configs import ConfigError
    from xenc_jax.hf.pretrained import load_pretrained
    from xenc_jax.hf.weights import WeightsError
    make_tiny("modernbert", tmp_path, head=True, num_labels=1, seed=10)
    cfg_path, w_path = tmp_path / "config.json", tmp_path / "model.safetensors"
    cfg, tensors = json.loads(cfg_path.read_text()), load_file(str(w_path))

    def with_config(**changes):
        cfg_path.write_text(json.dumps({**cfg, **changes}))

    def with_tensors(t):
        save_file(t, str(w_path))

    # linear over half the head: HF fails (partial_rotary_factor only works with rope_type proportional)
    scaled = {"full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4, "partial_rotary_factor": 0.5},
              "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}
    for changes, message in ((dict(rope_parameters=scaled), "rope_parameters"),
                             (dict(rope_scaling={"rope_type": "dynamic", "factor": 2.0}), "rope_scaling"),
                             (dict(classifier_pooling="max"), "classifier_pooling='max'"),
                             (dict(layer_types=["full_attention"]), "layer_types"),
                             (dict(head_dim=4), "head_dim=4"),
                             (dict(classifier_activation="mish"), "classifier_activation='mish'"),
                             (dict(hidden_activation="mish"), "hidden_act='mish'"),
                             (dict(is_decoder=True), "is_decoder=True"),
                             (dict(some_new_switch=1), "some_new_switch")):
        with_config(**changes)
        with pytest.raises(ConfigError, match=message):
            load_pretrained(tmp_path, with_tokenizer=False)
    with_config()
    key = "model.layers.1.attn.Wqkv.weight"   # missing: tests/test_family_conformance.py
    # a bias the config says is absent (attention_bias=false) is unused, not silently dropped
    with_tensors({**tensors, "model.layers.0.attn.Wo.bias": np.zeros(32, np.float32)})
    with pytest.raises(WeightsError, match=r"not used by a 'modernbert' model.*layers\.0\.attn\.Wo\.bias"):
        load_pretrained(tmp_path, with_tokenizer=False)
    with_tensors({**tensors, key: np.zeros((95, 32), np.float32)})
    with pytest.raises(WeightsError, match=r"wrong shapes: model\.layers\.1\.attn\.Wqkv\.weight \(95, 32\)"):
        load_pretrained(tmp_path, with_tokenizer=False)
    with_tensors({**tensors, "model.layers.0.mlp.Wi.weight": np.zeros((72, 32), np.float32)})
    with pytest.raises(WeightsError, match=r"wrong shapes: model\.layers\.0\.mlp\.Wi\.weight \(72, 32\) -> "
                                           r"encoder/layer_0/mlp/input/kernel \(32, 36\)"):
        load_pretrained(tmp_path, with_tokenizer=False)

