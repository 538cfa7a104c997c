"""Loading a sharded safetensors checkpoint straight into a mesh (hf/pretrained.py, plan=):
tensors are read one at a time and each param is put into its sharding as soon as it is
converted, so the host never holds the whole model next to the devices' copies.

Measured on 8 forced CPU devices in a child process (device buffers live in host memory there,
so what the devices keep counts in RSS too): a ~190 MB fp32 Qwen3-shaped random checkpoint in 3
safetensors shards, loaded by CrossEncoder(mesh="fsdp=8", sharding="fsdp"). The bound: the peak
RSS growth during loading stays below 1.5x the model's size, i.e. the devices' shards (1x in
all under fsdp) plus a few tensors in flight; replicating it on 8 devices would take 8x, and
the earlier host-then-split path held ~3x (the numpy tree, the jnp tree, the shards). Each
device holds 1/8 of every matrix (only the 64-wide q/k norm scales are whole on each).

The newer families, tiny and in several safetensors files each (one child for all): a Llama
seq-cls (GQA, kv heads fewer than tp's model axis), a Gemma 3 causal-LM reranker (fsdp) and a
T5 sentence-transformers bi-encoder (fsdp) load straight into the mesh, every param in its own
sharding, and score / embed as the one-device load does.
"""
from __future__ import annotations

import sys

from forced_devices import run_on_devices

LAYERS, HIDDEN, MLP, VOCAB = 12, 512, 2048, 8192


def _write_checkpoint(path):
    import json
    import numpy as np
    from safetensors.numpy import save_file
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from tiny_llm import llm_tokenizer
    rng = np.random.default_rng(0)
    heads, kv, hd = 8, 4, 64
    t = {"model.embed_tokens.weight": (VOCAB, HIDDEN), "model.norm.weight": (HIDDEN,)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        t.update({p + "input_layernorm.weight": (HIDDEN,), p + "post_attention_layernorm.weight": (HIDDEN,),
                  p + "self_attn.q_proj.weight": (heads * hd, HIDDEN), p + "self_attn.k_proj.weight": (kv * hd, HIDDEN),
                  p + "self_attn.v_proj.weight": (kv * hd, HIDDEN), p + "self_attn.o_proj.weight": (HIDDEN, heads * hd),
                  p + "self_attn.q_norm.weight": (hd,), p + "self_attn.k_norm.weight": (hd,),
                  p + "mlp.gate_proj.weight": (MLP, HIDDEN), p + "mlp.up_proj.weight": (MLP, HIDDEN),
                  p + "mlp.down_proj.weight": (HIDDEN, MLP)})
    names = sorted(t)
    shards = [names[k::3] for k in range(3)]
    weight_map, total = {}, 0
    for k, keys in enumerate(shards):
        fname = f"model-0000{k + 1}-of-00003.safetensors"
        arrays = {n: (rng.standard_normal(t[n], dtype=np.float32) * 0.02) for n in keys}
        total += sum(a.nbytes for a in arrays.values())
        save_file(arrays, str(path / fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in keys})
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                    "weight_map": weight_map}))
    (path / "config.json").write_text(json.dumps({
        "model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "vocab_size": VOCAB, "hidden_size": HIDDEN,
        "intermediate_size": MLP, "num_hidden_layers": LAYERS, "num_attention_heads": heads,
        "num_key_value_heads": kv, "head_dim": hd, "max_position_embeddings": 512, "rms_norm_eps": 1e-6,
        "rope_theta": 1e6, "tie_word_embeddings": True, "pad_token_id": 0, "hidden_act": "silu"}))
    llm_tokenizer(path)
    return total


def _main(path: str) -> None:
    import os
    import threading
    import time
    from pathlib import Path

    import jax
    import numpy as np
    from safetensors import safe_open

    from xenc_jax import CrossEncoder
    assert len(jax.devices()) == 8
    total = _write_checkpoint(Path(path))
    page = os.sysconf("SC_PAGE_SIZE")
    rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page
    jax.numpy.zeros(1).block_until_ready()
    base, peak, done = rss(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    ce = CrossEncoder(path, mesh="fsdp=8", sharding="fsdp", max_length=128)
    done.set()
    thread.join()
    growth = max(peak[0], rss()) - base
    print(f"model {total / 2**20:.0f} MiB, peak RSS growth while loading {growth / 2**20:.0f} MiB "
          f"= {growth / total:.2f}x the model (8 devices)")
    assert growth < 1.5 * total, growth / total
    leaves = jax.tree.leaves(ce.params)
    assert sum(x.nbytes for x in leaves) == total
    dev0 = jax.devices()[0]
    on0 = sum(s.data.nbytes for x in leaves for s in x.addressable_shards if s.device == dev0)
    # every matrix is split 8 ways; only the per-head q/k norm scales (64 values) are replicated
    for x in leaves:
        if x.ndim >= 2:
            assert x.addressable_shards[0].data.nbytes * 8 == x.nbytes, x.shape
    assert total // 8 <= on0 < 1.001 * total / 8, (on0, total)
    with safe_open(str(next(Path(path).glob("model-*.safetensors"))), framework="numpy") as f:
        key = next(k for k in f.keys() if k.endswith("mlp.down_proj.weight"))
        i = int(key.split(".")[2])
        want = f.get_tensor(key).T
    got = np.asarray(ce.params["encoder"][f"layer_{i}"]["mlp"]["out"]["kernel"])
    assert np.array_equal(got, want)
    assert np.isfinite(ce.predict([("is the cat here?", "yes, the cat sees the red ball.")]))
    print("ALL OK")


def test_sharded_checkpoint_loads_into_the_mesh_without_a_host_copy(tmp_path):
    run_on_devices([__file__, str(tmp_path)], devices=8)


# ---- the decoder and T5 families: tiny models in several safetensors shards ----

# name -> (what loads it, mesh, strategy). Llama: 8 query heads (head_dim 8 != 32 / 8) over 2 kv
# heads on model=4, so the query heads split 2 per device and the kv heads (fewer than the model
# axis) stay whole; Gemma 3
# (a causal-LM reranker: tied embeddings as its LM head, q/k norms, sliding layers) and the T5
# bi-encoder (GTR-shaped ST folder: mean Pooling, Dense without bias, Normalize) split 8 ways by fsdp.
NEW_FAMILIES = {"llama": ("cross", "data=2,model=4", "tp"), "gemma3_text": ("cross", "fsdp=8", "fsdp"),
                "t5": ("bi", "fsdp=8", "fsdp")}
SHARD = "40KB"   # each tiny checkpoint (~150-200 KB) in several files with an index


def _resave_sharded(model, folder) -> int:
    """Replace folder's model.safetensors by model's save_pretrained in SHARD-sized files."""
    from pathlib import Path
    (Path(folder) / "model.safetensors").unlink()
    model.save_pretrained(str(folder), max_shard_size=SHARD)
    return len(list(Path(folder).glob("model-*.safetensors")))


def _write_new_families(root) -> dict:
    """{name: folder}: a Llama seq-cls cross-encoder, a Gemma 3 causal-LM reranker (the yes/no
    tokens of tiny_llm's tokenizer) and a T5 ST bi-encoder, each saved sharded by transformers."""
    import torch
    import transformers as tf
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
    from tiny_hf import randomize_, tiny_config
    from tiny_llm import llm_tokenizer, make_tiny_llm
    out = {"llama": root / "llama", "gemma3_text": root / "gemma3", "t5": root / "t5"}
    models = {"llama": make_tiny_llm("llama-seqcls", out["llama"], seed=1, template=None, hidden_size=32,
                                     num_attention_heads=8, num_key_value_heads=2),
              "gemma3_text": make_tiny_llm("gemma3_text-causal", out["gemma3_text"], seed=2, template=None)}
    hf = root / "t5_hf"
    llm_tokenizer(hf, template=None)
    torch.manual_seed(3)
    t5 = tf.T5EncoderModel._from_config(tiny_config("t5", vocab_size=544, d_ff=40), attn_implementation="eager")
    randomize_(t5, 3)
    t5.save_pretrained(str(hf))
    transformer = Transformer(str(hf), max_seq_length=64, model_kwargs={"attn_implementation": "eager"})
    SentenceTransformer(modules=[transformer, Pooling(32, pooling_mode="mean"),
                                 Dense(32, 24, bias=False, activation_function=torch.nn.Identity()), Normalize()],
                        device="cpu").save(str(out["t5"]))
    models["t5"] = t5.eval()
    for name, model in models.items():
        assert _resave_sharded(model, out[name]) >= 3, name
    return out


def _new_families_main(folders: list[str]) -> int:
    """In the child: each folder loaded straight into its mesh (load_pretrained(plan=)) holds every
    param in the sharding the compute module declares for it (none left replicated by a name the
    placement missed) with the checkpoint's exact values, and scores / embeds within 1e-5 of the
    one-device load (fp32 sums regrouped across devices)."""
    from pathlib import Path

    import jax
    import numpy as np

    from forced_devices import report
    from xenc_jax.batching import BucketConfig
    from xenc_jax.bi_encoder import BiEncoder
    from xenc_jax.cross_encoder import CrossEncoder
    from xenc_jax.encoders import load_model
    from xenc_jax.hf.weights import flat_paths
    assert jax.device_count() == 8
    pairs = [("is the cat here?", "yes, the cat sees the red ball."), ("does a dog know the way?", "no."),
             ("can my friend see it?", "my friend reads a long book near the sea. " * 4), ("no", "x")]
    texts = [t for p in pairs for t in p]
    buckets = BucketConfig(lengths=(64,), batch_size=8)
    failures = []
    for name, folder in zip(NEW_FAMILIES, folders):
        kind, mesh, strategy = NEW_FAMILIES[name]
        cls = CrossEncoder if kind == "cross" else BiEncoder
        run = (lambda m: m.predict(pairs)) if kind == "cross" else (lambda m: m.encode(texts))
        one = cls(folder, buckets=buckets)
        pt = load_model(Path(folder), mesh, strategy, param_dtype="float32", head=kind == "cross")
        sharded = cls(folder, buckets=buckets, mesh=mesh, sharding=strategy)
        ids = np.zeros((1, 2), np.int32)
        want_sh = flat_paths(sharded.plan.module_param_shardings(pt.module(), ids, ids))
        got = flat_paths(pt.params)
        wrong = [p for p, x in got.items() if not x.sharding.is_equivalent_to(want_sh[p], x.ndim)]
        split = [p for p, x in got.items() if x.addressable_shards[0].data.size < x.size]
        ref = flat_paths(one.params)
        values = all(np.array_equal(np.asarray(x), np.asarray(ref[p])) for p, x in got.items())
        diff = float(np.abs(run(sharded) - run(one)).max())
        print(f"{name} {mesh} {strategy}: {len(split)} of {len(got)} params split, max diff {diff:.2e}")
        if wrong or not values or diff > 1e-5 or len(split) < len(got) // 3:
            failures.append(f"{name}: shardings differ at {wrong}, values equal {values}, diff {diff}, "
                            f"split {len(split)}/{len(got)}")
        if name == "llama":   # query heads split over model=4, the 2 kv heads whole on every device
            q, k = got["encoder/layer_0/attention/query/kernel"], got["encoder/layer_0/attention/key/kernel"]
            if q.addressable_shards[0].data.shape[1] * 4 != q.shape[1] or k.addressable_shards[0].data.size != k.size:
                failures.append(f"llama q {q.sharding.spec} k {k.sharding.spec}")
    return report(failures)


def test_llama_gemma3_t5_load_into_the_mesh_from_sharded_safetensors(tmp_path):
    folders = _write_new_families(tmp_path)
    run_on_devices([__file__, "--new-families", *map(str, folders.values())], devices=8)


if __name__ == "__main__":
    if sys.argv[1] == "--new-families":
        sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
        sys.exit(_new_families_main(sys.argv[2:]))
    _main(sys.argv[1])
