"""The training loop: config -> data -> model -> sharded state -> steps, logging, evaluation,
checkpoints, export. Everything that can be checked (config, data files, labels) is checked
before the model is loaded or anything is compiled.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import jax
import numpy as np

from .. import host_memory
from ..atomic import atomic_dir, recover_dir
from ..multihost import check_shared_dir, raise_together
from ..chat_format import pair_encoder
from ..hf.pretrained import load_pretrained
from ..hf.save import write_cross_encoder
from ..dtypes import as_dtype
from . import step as S
from .bi_head import BiHead, build_head, encoder_dir
from .checkpoint import Checkpointer
from .config import TrainConfig, resolve_model, to_dict
from .digest import config_digest
from .data import BatchStream, StreamConfig, check_labels, make_groups, process_allgather, read_examples
from .evaluators import Scorer, build_evaluator
from .optim import make_optimizer, make_schedule
from . import silver as silver_pairs

log = logging.getLogger(__name__)


class MetricsWriter:
    """JSON Lines (always) and TensorBoard event files (when tensorboardX is installed)."""

    def __init__(self, out_dir: Path, enabled: bool = True):
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(out_dir / "metrics.jsonl", "a", encoding="utf-8")
        try:
            from tensorboardX import SummaryWriter
            self.tb = SummaryWriter(str(out_dir / "tensorboard"))
        except ImportError:
            log.warning("tensorboardX is not installed: metrics go to metrics.jsonl only")

    def write(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"step": int(step), "time": round(time.time(), 3), **values}) + "\n")
        self.jsonl.flush()
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(k, v, int(step))
            self.tb.flush()

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            if self.tb is not None:
                self.tb.close()


def host_params(params):
    """Full params on the host. Multi-host: a collective, so every process must call it."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        return multihost_utils.process_allgather(params, tiled=True)
    return jax.device_get(params)


def export_model(path: Path, cfg: TrainConfig, model_cfg, params, tokenizer, source_dir: Path,
                 head: "BiHead | None" = None) -> Path:
    """HF directory that PyTorch sentence-transformers loads: a CrossEncoder, or for a bi-encoder
    a SentenceTransformer folder of the modules that were trained (bi_head.BiHead.export: the
    pooling modes used, the trained or frozen Dense weights, Normalize when used).
    `params`: host arrays (see host_params); `head`: the run's BiHead (default: built from
    cfg and source_dir)."""
    if cfg.task == "cross_encoder":
        act = cfg.activation or ("sigmoid" if cfg.num_labels == 1 else "identity")
        # source_dir: a causal reranker's LogitScore tokens and chat-template modality
        return write_cross_encoder(path, model_cfg, params, tokenizer, max_length=cfg.max_length, activation=act,
                                   source_dir=source_dir)
    if head is None:
        head = build_head(cfg, source_dir, model_cfg)
    return head.export(path, model_cfg, params, tokenizer, cfg.max_length)


def with_dropout(pt, rate: float):
    """`pt` whose modules train with dropout `rate` everywhere (hidden, attention, head). Only
    the training modules change: the exported config.json keeps the model's own values."""
    r = float(rate)
    return dataclasses.replace(pt, config=dataclasses.replace(
        pt.config, hidden_dropout=r, attention_dropout=r, classifier_dropout=r))


def _progress(total: int, initial: int, show):
    if show is None:
        show = sys.stderr.isatty()
    if not show:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)


PROGRESS_EVERY_S = 30.0  # plain progress lines: at most one per this many seconds


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class ProgressLines:
    """Plain progress lines on stderr where no bar is drawn (progress=None and stderr is not a
    terminal: a log file, CI, a pipe), so the console is never silent for minutes: a line after
    the first step (training started, compilation included), then at most one per `every_s`
    seconds, and at the last step. The loss is the mean over the steps since the previous line;
    the device is read only when a line is due."""

    def __init__(self, total: int, start_step: int, steps_per_epoch: int, every_s: float | None = None,
                 clock=time.monotonic):
        self.total, self.steps_per_epoch, self.clock = total, steps_per_epoch, clock
        self.every_s = PROGRESS_EVERY_S if every_s is None else every_s
        self.window, self.last_step, self.last_t, self.printed = [], start_step, clock(), False

    def step(self, step: int, metrics) -> None:
        self.window.append(metrics)
        now = self.clock()
        if self.printed and step != self.total and now - self.last_t < self.every_s:
            return
        got = jax.device_get(self.window)
        rate = (step - self.last_step) / max(now - self.last_t, 1e-9)
        print(f"train: step {step}/{self.total} (epoch {step / self.steps_per_epoch:.2f})  "
              f"loss {float(np.mean([m['loss'] for m in got])):.6g}  lr {float(got[-1].get('lr', 0.0)):.3g}  "
              f"{rate:.3g} steps/s  ETA {_duration((self.total - step) / max(rate, 1e-9))}",
              file=sys.stderr, flush=True)
        self.window, self.last_step, self.last_t, self.printed = [], step, now, True


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) training; returns a summary dict (also written to summary.json)."""
    cfg.validate()
    host_memory.tune_malloc()  # before JAX's CPU threads start: no page faults on every step
    if (why := host_memory.status()["reason"]) != "applied":
        log.info("malloc tuning: %s", why)
    pi, pc = jax.process_index(), jax.process_count()
    out = cfg.out_dir()
    check_shared_dir(out)  # several processes: all must see one output_dir, checked before any work

    # ---- data first: every file and label is checked before any model compute. Each process
    # reads its own share, so a bad row is seen by one process: raise_together makes every
    # process stop with that error, instead of the others waiting in the first collective.
    def read_data():
        train_ex = read_examples(cfg.train, process_index=pi, process_count=pc)
        check_labels(train_ex, cfg.loss, cfg.num_labels)
        evaluators = {}
        for role, ev in (("eval", cfg.evaluator), ("test", cfg.test)):
            if ev is not None:
                evaluators[role] = (build_evaluator(ev.kind, ev.data, cfg.num_labels, ev.name or role), ev)
        return train_ex, evaluators
    train_ex, evaluators = raise_together(read_data, what="reading the data")
    silver = None
    if cfg.silver.per_text:  # mined from the whole split, then sharded like the gold rows
        full = train_ex if pc == 1 else read_examples(cfg.train)
        meta = silver_pairs.meta_for(cfg, len(full))
        # A resumed run reuses the saved pairs: mined again on other hardware, a near-tie could
        # flip and shift every later row, so the checkpoint's data position would not be exact.
        silver = silver_pairs.read_jsonl(out / "silver_pairs.jsonl", meta) if cfg.resume else None
        if silver is not None:
            log.info("reusing %d silver pairs from %s", len(silver), out / "silver_pairs.jsonl")
        else:
            silver = silver_pairs.for_config(cfg, full)
            if pi == 0:
                out.mkdir(parents=True, exist_ok=True)
                silver_pairs.write_jsonl(out / "silver_pairs.jsonl", silver, meta)
        texts, labels = silver_pairs.shard(silver, len(full), pi, pc)
        train_ex.texts += texts
        train_ex.labels += labels
    # ---- model
    model_dir = Path(resolve_model(cfg.model))
    head = cfg.task == "cross_encoder"

    def load_model():
        pt = load_pretrained(model_dir if head else encoder_dir(model_dir), head=head,
                             num_labels=cfg.num_labels if head else None, seed=cfg.seed)
        if cfg.dropout is not None:
            pt = with_dropout(pt, cfg.dropout)
        if cfg.remat:   # training modules only, like dropout: nothing of it is exported
            pt = dataclasses.replace(pt, config=dataclasses.replace(pt.config, remat=True))
        bi = None if head else build_head(cfg, model_dir, pt.config)  # pooling, Dense, Normalize: trained and exported
        limit = pt.config.max_position_embeddings - pt.config.position_offset
        if cfg.max_length > limit:
            raise ValueError(f"max_length {cfg.max_length} exceeds the model's position table ({limit})")
        enc = pair_encoder(model_dir, pt.tokenizer, pt.config, cfg.max_length) if head else None
        groups = make_groups(train_ex, pt.tokenizer, cfg.max_length, task=cfg.task,
                             group_size=cfg.list_size or None, do_lower_case=bool(bi and bi.do_lower_case),
                             encode_pairs=enc)
        return pt, bi, groups, config_digest(cfg, model_dir), enc
    pt, bi, groups, digest, encode_pairs = raise_together(load_model, what="loading the model")
    mcfg, tokenizer = pt.config, pt.tokenizer
    from ..sharding import resolve_mesh
    plan = S.make_plan(cfg.sharding, resolve_mesh(cfg.mesh) if cfg.mesh else None)
    dp = plan.data_parallel_size
    if cfg.batch_size % dp:
        raise ValueError(f"batch_size {cfg.batch_size} must be a multiple of the data-parallel size {dp}")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    stream = BatchStream(groups, StreamConfig(
        batch_size=cfg.batch_size, bucket_lengths=tuple(cfg.bucket_lengths), max_length=cfg.max_length,
        pad_token_id=pad, position_offset=mcfg.position_offset, seed=cfg.seed, group_factor=cfg.group_factor),
        process_index=pi, process_count=pc, allgather=process_allgather)
    steps_per_epoch = stream.steps_per_epoch()
    total = cfg.max_steps if cfg.max_steps > 0 else cfg.epochs * steps_per_epoch
    accum = int(cfg.optim.grad_accum_steps)
    params0 = pt.params if head else bi.init_params(pt.params)
    tx = make_optimizer(cfg.optim, max(total // accum, 1), params0)
    module = pt.module(dtype=as_dtype(cfg.dtype))
    p_sh = S.param_shardings(plan, module)
    if head:
        apply_fn = S.cross_encoder_apply(module)
        loss_fn = S.cross_encoder_loss(cfg.loss, **cfg.loss_kwargs)
    else:
        apply_fn = bi.apply_fn(module)
        loss_fn = S.bi_encoder_loss(cfg.loss, **cfg.loss_kwargs)
        p_sh = bi.param_shardings(plan, p_sh)
    shardings = S.state_shardings(plan, tx, params0, p_sh, ema=cfg.ema_decay > 0)
    state = S.create_state(plan, tx, params0, shardings)
    rng = jax.random.key(cfg.seed)
    ckpt = Checkpointer(out / "checkpoints", every_steps=cfg.checkpoint_every or total,
                        keep=cfg.keep_checkpoints, async_save=cfg.async_checkpoint)
    best = {"metric": None, "value": None, "step": None}
    if cfg.resume:
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
        restored = ckpt.restore_latest(abstract, digest=digest, may_change=cfg.resume_may_change)
        if restored is not None:
            state, meta = restored
            stream.start_at(meta["data_position"])
            if meta.get("rng") != np.asarray(jax.random.key_data(rng)).tolist():
                raise ValueError("the checkpoint was written with another seed; use a new output_dir or the same seed")
            best = meta.get("best", best)
            log.info("resuming at step %d (epoch %d, batch %d)", int(state.step), *stream.position.values())
    else:
        ckpt.set_aside()  # resume=false: the old checkpoints are kept, beside, never deleted
    # GradCache (cache_chunks > 1): the loss sees the whole batch, activations one mini-batch.
    train_step = S.make_train_step(S.cached_apply(apply_fn, cfg.cache_chunks), loss_fn, tx, plan, shardings,
                                   lr_schedule=make_schedule(cfg.optim, max(total // accum, 1)),
                                   grad_accum_steps=accum, ema_decay=cfg.ema_decay)
    eval_step = S.make_eval_step(apply_fn, plan, shardings.params)
    scorer = Scorer(eval_step, plan, tokenizer, cfg.max_length, mcfg.position_offset,
                    bucket_lengths=tuple(cfg.bucket_lengths), do_lower_case=bool(bi and bi.do_lower_case),
                    encode_pairs=encode_pairs)
    writer = MetricsWriter(out, enabled=pi == 0)
    if pi == 0:
        (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2, default=str) + "\n")

    def run_eval(role: str, params, step: int) -> dict:
        evaluator, ev = evaluators[role]
        t = time.time()
        scorer.batch_size = ev.batch_size
        metrics = evaluator(scorer, params)
        values = {f"{role}/{k}": float(v) for k, v in metrics.items()}
        writer.write(step, {**values, f"{role}/seconds": round(time.time() - t, 3)})
        log.info("step %d %s: %s", step, role, {k: round(v, 4) for k, v in metrics.items()})
        return metrics

    def save(step: int, force=False):
        ckpt.save(step, state, {"data_position": stream.position, "best": best, "config_digest": digest,
                                "rng": np.asarray(jax.random.key_data(rng)).tolist()}, force=force)

    def export(name: str, host) -> Path:
        """Atomic: a kill during the export leaves the previous `name/` whole (atomic.py)."""
        with atomic_dir(out / name) as tmp:
            export_model(tmp, cfg, mcfg, host, tokenizer, model_dir, bi)
        return out / name

    step = int(jax.device_get(state.step))
    bar = _progress(total, step, cfg.progress)
    lines = ProgressLines(total, step, steps_per_epoch) if bar is None and cfg.progress is None and pi == 0 else None
    pending, t_log, rows_log = [], time.time(), 0
    t_start, step_start = time.time(), step
    while step < total:
        batch = stream.__next__()
        rows_log += int(batch["valid"].sum())
        state, metrics = train_step(state, plan.place_batch(batch), rng)
        step += 1
        pending.append(metrics)
        if lines is not None:
            lines.step(step, metrics)
        if step % cfg.log_every == 0 or step == total:
            got = jax.device_get(pending)
            now = time.time()
            values = {"train/loss": float(np.mean([m["loss"] for m in got])),
                      "train/grad_norm": float(np.mean([m["grad_norm"] for m in got])),
                      "train/lr": float(got[-1].get("lr", 0.0)),
                      "train/pairs_per_s": rows_log * pc / max(now - t_log, 1e-9),
                      "train/epoch": step / steps_per_epoch}
            writer.write(step, values)
            if bar is not None:
                bar.set_postfix(loss=f"{values['train/loss']:.4f}", pairs_s=f"{values['train/pairs_per_s']:.0f}")
            pending, t_log, rows_log = [], now, 0
        if bar is not None:
            bar.update(1)
        due = (step % cfg.eval_every == 0) if cfg.eval_every > 0 else (step % steps_per_epoch == 0)
        if "eval" in evaluators and (due or step == total):
            ev_cfg = evaluators["eval"][1]
            metrics_ev = run_eval("eval", state.eval_params(), step)
            name = ev_cfg.metric or evaluators["eval"][0].default_metric
            value = float(metrics_ev[name])
            if best["value"] is None or value > best["value"]:
                best = {"metric": name, "value": value, "step": step}
                if cfg.export_best:
                    host = host_params(state.eval_params())  # collective: all processes
                    if pi == 0:
                        export("best", host)
        save(step)
    if bar is not None:
        bar.close()
    if not ckpt.all_steps() or ckpt.all_steps()[-1] != step:
        save(step, force=True)
    ckpt.close()
    train_seconds = time.time() - t_start
    summary = {"steps": step, "steps_per_epoch": steps_per_epoch, "train_seconds": round(train_seconds, 2),
               "steps_run_now": step - step_start, "best": best, "output_dir": str(out),
               "silver_pairs": len(silver) if silver is not None else 0}
    host = host_params(state.eval_params())  # collective: all processes
    if pi == 0:
        summary["final_model"] = str(export("final", host))
    if "test" in evaluators:
        summary["test_final"] = run_eval("test", state.eval_params(), step)
        recover_dir(out / "best")  # a kill between the two renames of an export
        if best["step"] is not None and best["step"] != step and (out / "best").is_dir():
            best_params = load_pretrained(out / "best", head=head, with_tokenizer=False).params
            if bi is not None:
                best_params = bi.load_exported(out / "best", best_params)
            summary["test_best"] = run_eval("test", plan.put_params(best_params, shardings.params), step)
    writer.close()
    if pi == 0:
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    summary["state"] = state
    return summary


def evaluate_model(cfg: TrainConfig, ev) -> dict:
    """Evaluate the model at cfg.model with one EvalConfig (no training state needed)."""
    evaluator = build_evaluator(ev.kind, ev.data, cfg.num_labels, ev.name or "test")
    head = cfg.task == "cross_encoder"
    model_dir = Path(resolve_model(cfg.model))
    # a folder without a trained head is refused: its metrics would be those of a random head
    pt = load_pretrained(model_dir if head else encoder_dir(model_dir), head=head,
                         num_labels=cfg.num_labels if head else None, seed=cfg.seed, allow_new_head=False)
    module = pt.module(dtype=as_dtype(cfg.dtype))
    plan = S.make_plan("dp")
    p_sh, params = S.param_shardings(plan, module), pt.params
    bi = None if head else build_head(cfg, model_dir, pt.config)
    if head:
        apply_fn = S.cross_encoder_apply(module)
    else:
        apply_fn, params, p_sh = bi.apply_fn(module), bi.init_params(params), bi.param_shardings(plan, p_sh)
    scorer = Scorer(S.make_eval_step(apply_fn, plan, p_sh), plan, pt.tokenizer, cfg.max_length,
                    pt.config.position_offset, batch_size=ev.batch_size, bucket_lengths=tuple(cfg.bucket_lengths),
                    do_lower_case=bool(bi and bi.do_lower_case),
                    encode_pairs=pair_encoder(model_dir, pt.tokenizer, pt.config, cfg.max_length) if head else None)
    return {k: float(v) for k, v in evaluator(scorer, plan.put_params(params, p_sh)).items()}
