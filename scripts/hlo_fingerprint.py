"""Fingerprint of the jitted forward (HLO without metadata) for tiny BERT/RoBERTa, to show a refactor
leaves the hot path unchanged: run with two checkouts and compare.  python scripts/hlo_fingerprint.py REPO_DIR"""
import sys, re, hashlib
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[1] + "/tests")
import jax, jax.numpy as jnp, numpy as np
import xenc_jax
from tiny_hf import make_tiny
from xenc_jax.hf.pretrained import load_pretrained
out = []
for fam, head in (("bert", True), ("bert", False), ("roberta", True)):
    d = f"/tmp/fam_hlo_{fam}_{head}"
    make_tiny(fam, d, head=head, seed=0)
    pt = load_pretrained(d, head=head, with_tokenizer=False)
    for impl in (None, "xla_chunked"):
        m = pt.module(attention_impl=impl)
        ids = jnp.zeros((8, 32), jnp.int32)
        f = jax.jit(lambda p, i, a, t, pos: m.apply({"params": p}, i, a, t, pos))
        txt = f.lower(pt.params, ids, ids, ids, ids).as_text(dialect="hlo")
        txt = re.sub(r", metadata=\{[^}]*\}", "", txt)
        txt = re.sub(r"^HloModule \S+", "HloModule", txt)
        out.append(f"{fam} head={head} impl={impl} {hashlib.sha1(txt.encode()).hexdigest()[:12]} lines={txt.count(chr(10))}")
print(xenc_jax.__file__)
print("\n".join(out))
