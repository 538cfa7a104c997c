"""Fingerprint of each family's jitted programs (HLO text without metadata), to show that a
refactor leaves the compiled programs unchanged: run it on two checkouts and compare the lines.

    python scripts/hlo_fingerprint.py REPO_DIR [--dump DIR]

REPO_DIR is the checkout whose xenc_jax (and tests/tiny_hf.py, tests/tiny_llm.py) are imported, so
the same script fingerprints an old tree too: it only uses APIs every tree since 88ac93f has
(load_pretrained, Pretrained.module(dtype, attention_impl), models.pooling.sentence_head).
--dump writes each program's normalised HLO to DIR/<model>.<variant>.<impl>.hlo for diffing.

Models (tiny, seeded, built with transformers + torch): BERT (with and without head), RoBERTa,
MPNet, DeBERTa-v2 (v3 switches), ModernBERT, Qwen3 causal-LM reranker (LogitScore columns),
Qwen2 causal-LM reranker (q/k/v biases, untied head), Qwen3 lasttoken embedder (bare decoder +
lasttoken pooling + normalize). Variants: fp32 and bf16 compute inference, each attention
implementation ('xla_chunked' is the old name of the chunked CPU path; every tree accepts it),
and an fp32 training gradient (dropout on). Shapes: 8 rows x 32 tokens.
"""
import hashlib
import re
import sys
import tempfile
from pathlib import Path

REPO = Path(sys.argv[1]).resolve()
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import xenc_jax  # noqa: E402
from tiny_hf import make_tiny  # noqa: E402
from tiny_llm import make_tiny_llm  # noqa: E402
from xenc_jax.hf.pretrained import load_pretrained  # noqa: E402
from xenc_jax.models import pooling as P  # noqa: E402

ROWS, LENGTH = 8, 32
IMPLS = (None, "xla_chunked")


def _models(tmp: Path):
    """name -> (Pretrained, kind): kind 'score' (the model with its head) or 'embed' (bare + pooling)."""
    specs = [("bert", True), ("bert", False), ("roberta", True), ("mpnet", True), ("deberta-v2", True),
             ("modernbert", True)]
    for fam, head in specs:
        d = tmp / f"{fam}_{head}"
        make_tiny(fam, d, head=head, seed=0)
        yield f"{fam}{'' if head else '-bare'}", load_pretrained(d, head=head, with_tokenizer=False), "score"
    for kind in ("qwen3-causal", "qwen2-causal"):
        d = tmp / kind
        make_tiny_llm(kind, d, seed=0)
        yield f"{kind}-reranker", load_pretrained(d, head=True), "score"
    d = tmp / "qwen3-embed"
    make_tiny_llm("qwen3-causal", d, seed=0)
    yield "qwen3-lasttoken-embedder", load_pretrained(d, head=False), "embed"


def _programs(pt, kind):
    """(variant, impl, jitted fn, args) of one model."""
    ids = jnp.zeros((ROWS, LENGTH), jnp.int32)
    cls = jnp.zeros((ROWS, 2), jnp.int32)
    for dtype, tag in ((jnp.float32, "fp32"), (jnp.bfloat16, "bf16")):
        for impl in IMPLS if tag == "fp32" else (None,):
            m = pt.module(dtype=dtype, attention_impl=impl)
            if kind == "embed":
                def f(p, i, a, t, pos, c, m=m):
                    h = m.apply({"params": p}, i, a, t, pos)
                    return P.sentence_head("lasttoken", [("normalize", None)], [], h, a, pos, c)
                yield tag, impl, jax.jit(f), (pt.params, ids, ids, ids, ids, cls)
            else:
                f = jax.jit(lambda p, i, a, t, pos, m=m: m.apply({"params": p}, i, a, t, pos))
                yield tag, impl, f, (pt.params, ids, ids, ids, ids)
    if pt.head:   # training: dropout on, packed rows read at cls positions
        m = pt.module()

        def loss(p, i, a, t, pos, c, key):
            out = m.apply({"params": p}, i, a, t, pos, c, False, rngs={"dropout": key})
            return jnp.sum(out)
        yield "train-grad", None, jax.jit(jax.grad(loss)), (pt.params, ids, ids, ids, ids, cls, jax.random.key(0))


def _normalise(txt: str) -> str:
    txt = re.sub(r", metadata=\{[^}]*\}", "", txt)
    return re.sub(r"^HloModule \S+", "HloModule", txt)


def main():
    dump = Path(sys.argv[sys.argv.index("--dump") + 1]) if "--dump" in sys.argv else None
    if dump:
        dump.mkdir(parents=True, exist_ok=True)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, pt, kind in _models(Path(tmp)):
            for variant, impl, f, args in _programs(pt, kind):
                txt = _normalise(f.lower(*args).as_text(dialect="hlo"))
                if dump:
                    (dump / f"{name}.{variant}.{impl}.hlo").write_text(txt)
                digest = hashlib.sha1(txt.encode()).hexdigest()[:12]
                out.append(f"{name:26s} {variant:10s} impl={str(impl):12s} {digest} lines={txt.count(chr(10))}")
    print(xenc_jax.__file__)
    print("\n".join(out))


if __name__ == "__main__":
    main()
