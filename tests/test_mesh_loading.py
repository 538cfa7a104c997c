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


if __name__ == "__main__":
    _main(sys.argv[1])
