"""The STS-B cross-encoder recipe of configs/stsb_cross_encoder.py, in PyTorch sentence-transformers
(CrossEncoderTrainer), on the same data: the reference number for docs/benchmarks.md.

    python scripts/train_stsb_reference.py --out /tmp/stsb_st [--epochs 4 --lr 5e-5]

Same model (all-MiniLM-L6-v2 + a fresh 1-label head), loss (BinaryCrossEntropyLoss on score/5),
batch 16, AdamW (weight decay 0.01 except biases/LayerNorm, eps 1e-8), 10% linear warmup then
linear decay, grad-norm clip 1.0, seed 12, max_length 256. The preset's silver pairs are mined
with the same code as `xenc train` (gold rows first, then silver), so both train on the same
pairs. The preset's layer-wise lr decay, head lr scale and weight EMA (when set) are mirrored
too: one torch param group per lr (decay groups from HF's `get_decay_parameter_names`), and an
EMA updated by a TrainerCallback after each optimizer step, with the same ramp as xenc_jax.
The final model (the EMA when one is kept) is scored. Prints one JSON line with dev/test
Pearson/Spearman and the training throughput.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/stsb_st")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--max-steps", type=int, default=-1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--layer-decay", type=float, default=None, help="default: the preset's")
    ap.add_argument("--head-lr-scale", type=float, default=None, help="default: the preset's")
    ap.add_argument("--ema-decay", type=float, default=None, help="default: the preset's (0 = none)")
    ap.add_argument("--check-export", default=None, metavar="DIR",
                    help="instead of training: load a model exported by `xenc train` in PyTorch ST "
                         "CrossEncoder and in xenc_jax, score STS-B test with both, report the max "
                         "score difference and both Spearman values")
    args = ap.parse_args()
    if args.check_export:
        return check_export(args.check_export, args.threads)

    import numpy as np
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (CrossEncoder, CrossEncoderTrainer,
                                                     CrossEncoderTrainingArguments)
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    from xenc_jax.train import evaluation as M
    from xenc_jax.train.config import load_config, resolve_model
    from xenc_jax.train.data import read_examples

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(REPO / "configs" / "stsb_cross_encoder.py")
    epochs = args.epochs or cfg.epochs
    lr = args.lr or cfg.optim.learning_rate
    train = read_examples(cfg.train)
    if cfg.silver.per_text:  # the preset's silver pairs, mined as `xenc train` does (JAX teacher)
        from xenc_jax.train.silver import for_config
        silver = for_config(cfg, train)
        train.texts += silver.texts
        train.labels += silver.labels
    dev, test = read_examples(cfg.evaluator.data), read_examples(cfg.test.data)
    ds = Dataset.from_dict({"sentence1": [t[0] for t in train.texts], "sentence2": [t[1] for t in train.texts],
                            "label": [float(y) for y in train.labels]})
    torch.manual_seed(cfg.seed)
    model = CrossEncoder(resolve_model(cfg.model), num_labels=1, max_length=cfg.max_length, device="cpu")
    targs = CrossEncoderTrainingArguments(
        output_dir=args.out, num_train_epochs=epochs, per_device_train_batch_size=cfg.batch_size,
        learning_rate=lr, warmup_ratio=cfg.optim.warmup_ratio, weight_decay=cfg.optim.weight_decay,
        adam_epsilon=cfg.optim.eps, max_grad_norm=cfg.optim.max_grad_norm, lr_scheduler_type="linear",
        seed=cfg.seed, save_strategy="no", eval_strategy="no", logging_steps=50, report_to="none",
        use_cpu=True, dataloader_drop_last=False, max_steps=args.max_steps)
    layer_decay = cfg.optim.layer_decay if args.layer_decay is None else args.layer_decay
    head_scale = cfg.optim.head_lr_scale if args.head_lr_scale is None else args.head_lr_scale
    ema_decay = cfg.ema_decay if args.ema_decay is None else args.ema_decay
    optimizer = param_group_adamw(model.model, lr, cfg.optim, layer_decay, head_scale, resolve_model(cfg.model))
    ema = EmaCallback(model.model, ema_decay) if ema_decay > 0 else None
    trainer = CrossEncoderTrainer(model=model, args=targs, train_dataset=ds, loss=BinaryCrossEntropyLoss(model),
                                  optimizers=(optimizer, None), callbacks=[ema] if ema else None)
    t0 = time.time()
    out = trainer.train()
    seconds = time.time() - t0
    if ema is not None:
        ema.copy_to_model()
    result = {"framework": "sentence-transformers (PyTorch)", "epochs": epochs, "lr": lr,
              "layer_decay": layer_decay, "head_lr_scale": head_scale, "ema_decay": ema_decay,
              "train_seconds": round(seconds, 1), "steps": out.global_step,
              "train_pairs_per_s": round(len(train) * epochs / seconds, 2) if args.max_steps < 0 else None}
    for name, ex in (("dev", dev), ("test", test)):
        scores = model.predict([tuple(t) for t in ex.texts], batch_size=64, show_progress_bar=False)
        gold = np.asarray(ex.labels, np.float64)
        result[f"{name}_pearson"] = M.pearson(scores, gold)
        result[f"{name}_spearman"] = M.spearman(scores, gold)
    model.save_pretrained(str(Path(args.out) / "final"))
    print(json.dumps(result))
    return 0


def param_group_adamw(hf_model, lr: float, ocfg, layer_decay: float, head_scale: float, model_dir: str):
    """torch AdamW with one group per (lr multiplier, decay). The multipliers are xenc_jax's own
    `optim.lr_scales`, mapped to HF names through the weight-conversion table; the decay groups
    are HF's (`Trainer.get_decay_parameter_names`)."""
    from transformers import Trainer

    from xenc_jax.hf.pretrained import load_pretrained
    from xenc_jax.hf.weights import flat_paths, expected_keys
    from xenc_jax.train.optim import Depths, lr_scales
    pt = load_pretrained(model_dir, head=True, num_labels=1, with_tokenizer=False)
    ours = flat_paths(lr_scales(pt.params, Depths.of(pt.config), layer_decay, head_scale))
    hf_to_ours = {k: r.ours for k, r in expected_keys(pt.config, head=True, prefixed=True).items()}
    decay_names = set(Trainer.get_decay_parameter_names(None, hf_model))  # does not use self
    groups: dict = {}
    for n, p in hf_model.named_parameters():
        if p.requires_grad:
            key = (float(ours[hf_to_ours[n]]), ocfg.weight_decay if n in decay_names else 0.0)
            groups.setdefault(key, []).append(p)
    return torch.optim.AdamW([{"params": ps, "lr": lr * s, "weight_decay": wd} for (s, wd), ps in groups.items()],
                             lr=lr, betas=(ocfg.b1, ocfg.b2), eps=ocfg.eps)


class EmaCallback(TrainerCallback):
    """EMA of the weights after each optimizer step: d = min(decay, (1 + n) / (10 + n))."""

    def __init__(self, hf_model, decay: float):
        self.params = [p for p in hf_model.parameters() if p.requires_grad]
        self.ema = [p.detach().clone() for p in self.params]
        self.decay = decay

    def on_step_end(self, args, state, control, **kw):
        n = state.global_step
        d = min(self.decay, (1 + n) / (10 + n))
        with torch.no_grad():
            for e, p in zip(self.ema, self.params):
                e.mul_(d).add_(p.detach(), alpha=1 - d)

    def copy_to_model(self):
        with torch.no_grad():
            for e, p in zip(self.ema, self.params):
                p.copy_(e)


def check_export(model_dir: str, threads: int | None) -> int:
    import numpy as np
    from sentence_transformers import CrossEncoder as STCrossEncoder

    from xenc_jax.cross_encoder import CrossEncoder
    from xenc_jax.train import evaluation as M
    from xenc_jax.train.config import load_config
    from xenc_jax.train.data import read_examples
    if threads:
        torch.set_num_threads(threads)
    cfg = load_config(REPO / "configs" / "stsb_cross_encoder.py")
    test = read_examples(cfg.test.data)
    pairs = [tuple(t) for t in test.texts]
    gold = np.asarray(test.labels, np.float64)
    st = STCrossEncoder(model_dir, device="cpu").predict(pairs, batch_size=64, show_progress_bar=False)
    ours = CrossEncoder(model_dir).predict(pairs, batch_size=64)
    print(json.dumps({"model": model_dir, "pairs": len(pairs), "max_abs_score_diff": float(np.max(np.abs(st - ours))),
                      "st_test_spearman": M.spearman(st, gold), "xenc_test_spearman": M.spearman(ours, gold),
                      "st_test_pearson": M.pearson(st, gold), "xenc_test_pearson": M.pearson(ours, gold)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
