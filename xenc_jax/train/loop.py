"""The training loop: train(cfg) in four stages (see "train() in stages" below): data ->
model, batches and sharded state -> steps with logging, evaluation and checkpoints -> final
checkpoint, export and test. Everything that can be checked (config, data files, labels) is
checked before the model is loaded or anything is compiled.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
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
from ..hf.st_modules import stored_activation_name
from ..hf.st_folder import default_max_length, default_max_seq_length
from ..dtypes import as_dtype
from . import step as S
from .bi_head import BiHead, build_head, load_with_head
from .checkpoint import Checkpointer
from .config import TrainConfig, resolve_model, to_dict
from .digest import config_digest
from .data import BatchStream, StreamConfig, check_labels, label_names, make_groups, process_allgather
from .evaluators import NonFiniteEvaluation, NonFiniteOutput, Scorer, build_evaluator
from .streaming import batch_stream, read_examples
from .interrupt import StopRequest
from .optim import Depths, make_optimizer, make_schedule
from . import silver as silver_pairs

log = logging.getLogger(__name__)


class NonFiniteLoss(NonFiniteOutput):
    """Training diverged: a step's loss or grad norm is NaN / inf.
    The run stops without saving that state (the message names the first bad step, the compute
    dtype and the latest checkpoint); as NonFiniteEvaluation, a kind of NonFiniteOutput."""


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
    """HF directory that PyTorch sentence-transformers loads: a CrossEncoder (with its head's
    modules when its scores are Pooling -> Dense modules), or for a bi-encoder
    a SentenceTransformer folder of the modules that were trained (bi_head.BiHead.export: the
    pooling modes used, the trained or frozen Dense weights, Normalize when used).
    `params`: host arrays (see host_params); `head`: the run's BiHead (a bi-encoder's default:
    built from cfg and source_dir)."""
    if cfg.task == "cross_encoder" and head is None and getattr(model_cfg, "raw_json", None) \
            and (names := label_names(cfg.train, cfg.num_labels)):
        # the label_map's class names as config.json's id2label (HF and ST read them): an SNLI
        # export said LABEL_0..2, leaving a user to guess which logit is "entailment"
        model_cfg = dataclasses.replace(model_cfg, raw_json=json.dumps({**model_cfg.raw_dict, "id2label": names}))
    if cfg.task == "cross_encoder":
        # ST 6.3 fine-tuning keeps the activation its source stores (CrossEncoder reads it, save writes
        # it back); only a source without one gets ST's default for the label count
        act = cfg.activation or stored_activation_name(source_dir) or ("sigmoid" if cfg.num_labels == 1 else "identity")
        if head is not None:   # Transformer -> Pooling -> Dense ... -> "scores": the same chain
            return head.export(path, model_cfg, params, tokenizer, cfg.max_length, activation=act)
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


# ----------------------------------------------------------------------------- train() in stages
#
# train(cfg) = read_training_data (every file and label checked, before any model compute)
#            -> build_run (model, batches, sharded state, resume, steps, evaluators' scorer)
#            -> run_loop (steps, logs, evaluation, best export, checkpoints)
#            -> finalize (last checkpoint, final export, test evaluation, summary.json)


@dataclasses.dataclass
class TrainingData:
    """Stage 1: this process's training rows (silver pairs added) and the evaluators by role
    ("eval", "test") as (evaluator, EvalConfig)."""
    examples: object
    evaluators: dict
    silver: list | None


def read_training_data(cfg: TrainConfig, out: Path, pi: int, pc: int) -> TrainingData:
    """Each process reads its own share, so a bad row is seen by one process: raise_together
    makes every process stop with that error, instead of the others waiting in the first
    collective."""
    def read_data():
        train_ex = read_examples(cfg.train, process_index=pi, process_count=pc)
        check_labels(train_ex, cfg.loss, cfg.num_labels)
        evaluators = {}
        for role, ev in (("eval", cfg.evaluator), ("test", cfg.test)):
            if ev is not None:
                evaluators[role] = (build_evaluator(ev.kind, ev.data, cfg.num_labels, ev.name or role), ev)
        return train_ex, evaluators
    train_ex, evaluators = raise_together(read_data, what="reading the data")
    return TrainingData(train_ex, evaluators, _add_silver(cfg, out, train_ex, pi, pc))


def _add_silver(cfg: TrainConfig, out: Path, train_ex, pi: int, pc: int) -> list | None:
    """Silver pairs (cfg.silver) appended to train_ex: mined from the whole split, then sharded
    like the gold rows. None when none are configured."""
    if not cfg.silver.per_text:
        return None
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
    return silver


def _load_model(cfg: TrainConfig, model_dir: Path, train_ex):
    """(pretrained, head after the encoder or None, tokenized groups, config digest, pair or text
    encoder). The head: a bi-encoder's BiHead, or a cross-encoder's Pooling -> Dense score modules
    (bi_head.build_score_head); None for a cross-encoder with a classification head."""
    pairs = cfg.task == "cross_encoder"
    if pairs and not cfg.activation:   # a stored activation the export could not write: an error now, not after training
        stored_activation_name(model_dir)
    pt, bi = load_with_head(cfg, model_dir)
    if cfg.dropout is not None:
        pt = with_dropout(pt, cfg.dropout)
    if cfg.remat:   # training modules only, like dropout: nothing of it is exported
        pt = dataclasses.replace(pt, config=dataclasses.replace(pt.config, remat=True))
    limit = pt.config.max_position_embeddings - pt.config.position_offset
    if cfg.max_length > limit:
        raise ValueError(f"max_length {cfg.max_length} exceeds the model's position table ({limit})")
    # the ids scoring / embedding feed this model (chat template included): one encoder for both
    enc = _pair_encoder(model_dir, pt, bi, cfg.max_length) if pairs else \
        bi.text_encoder(pt.tokenizer, pt.config, cfg.max_length)
    groups = make_groups(train_ex, pt.tokenizer, cfg.max_length, task=cfg.task,
                         group_size=cfg.list_size or None, do_lower_case=bool(bi and bi.do_lower_case),
                         encode_pairs=enc if pairs else None, encode_texts=None if pairs else enc)
    return pt, bi, groups, config_digest(cfg, model_dir), enc


def _folder_max_length(pt, head) -> int:
    """The token limit the model folder scores with, as CrossEncoder / BiEncoder read it: its
    sentence_bert_config.json max_seq_length, else the tokenizer's, capped by the position table."""
    st_cfg = head.modules.transformer if head is not None else {}
    if st_cfg.get("max_seq_length"):
        return default_max_seq_length(st_cfg, pt.tokenizer, pt.config)
    return default_max_length(pt.tokenizer, pt.config)


def _pair_encoder(model_dir: Path, pt, head, max_length: int):
    """chat_format.pair_encoder of a cross-encoder; with a Pooling -> Dense head, in the input
    format its Transformer module takes (as CrossEncoder reads it)."""
    return pair_encoder(model_dir, pt.tokenizer, pt.config, max_length,
                        fmt=None if head is None else head.input_format(pt.tokenizer, pt.config))


def _model_fns(cfg: TrainConfig, module, bi, plan):
    """(model_fn, loss_fn, param shardings): model_fn is the one batch contract's score_fn /
    embed_fn ([B, P, ...], what the evaluators run; a cross-encoder's Pooling -> Dense head's
    embed_fn gives its logits); the train step runs it per row."""
    p_sh = S.param_shardings(plan, module)
    loss = (S.cross_encoder_loss if cfg.task == "cross_encoder" else S.bi_encoder_loss)(cfg.loss, **cfg.loss_kwargs)
    if bi is None:
        return S.score_fn(module), loss, p_sh
    return bi.model_fn(module), loss, bi.param_shardings(plan, p_sh)


@dataclasses.dataclass
class Run:
    """Stage 2's result: everything the loop and the finalize stage share."""
    cfg: TrainConfig
    out: Path
    data: TrainingData
    model_dir: Path
    pt: object               # hf.pretrained.Pretrained (config, tokenizer)
    bi: BiHead | None
    digest: str
    plan: object             # sharding.ShardingPlan
    stream: BatchStream
    steps_per_epoch: int     # computed once: each call of stream.steps_per_epoch() plans epoch 0
    total: int
    shardings: S.TrainState
    state: S.TrainState
    rng: jax.Array
    ckpt: Checkpointer
    train_step: object
    scorer: Scorer
    writer: MetricsWriter
    best: dict = dataclasses.field(default_factory=lambda: {"metric": None, "value": None, "step": None})
    finite: S.FiniteSteps | None = None   # the steps whose loss is not checked yet (run_loop sets it)
    stop: StopRequest | None = None       # Ctrl-C: stop after the running step, saved (train() sets it)

    def run_eval(self, role: str, params, step: int) -> dict:
        evaluator, ev = self.data.evaluators[role]
        t = time.time()
        self.scorer.batch_size = ev.batch_size
        try:
            metrics = evaluator(self.scorer, params)
        except NonFiniteOutput as e:
            raise self._non_finite(role, ev, step, e) from None
        values = {f"{role}/{k}": float(v) for k, v in metrics.items()}
        self.writer.write(step, {**values, f"{role}/seconds": round(time.time() - t, 3)})
        log.info("step %d %s: %s", step, role, {k: round(v, 4) for k, v in metrics.items()})
        return metrics

    def _non_finite(self, role: str, ev, step: int, e: Exception) -> NonFiniteEvaluation:
        """The error that stops the run when an evaluator's model output is NaN / inf. Stopped
        before step `step` is checkpointed: its weights are most likely diverged, and saving them
        would make them the checkpoint a resume starts from and, with keep_checkpoints, delete the
        oldest good one. The checkpoints already started are finished first, so they stay whole."""
        self.ckpt.wait()
        steps = self.ckpt.all_steps()
        kept = (f"the latest checkpoint is step {steps[-1]} in {self.ckpt.directory}" if steps
                else "no checkpoint was written yet")
        saved = (f"the final checkpoint (step {step}) and export were written before this evaluation"
                 if role == "test" else f"step {step} was not checkpointed; {kept}")
        return NonFiniteEvaluation(
            f"step {step}: the {role} evaluator ({ev.kind}, {ev.data.path}) got a non-finite model output, so "
            f"training stopped ({saved}). If the run diverged, resume=true goes on from the latest checkpoint "
            "with a change that keeps it finite (a lower optim.learning_rate, dtype=float32, optim.max_grad_norm; "
            "list the keys changed in resume_may_change). Details: " + str(e))

    def check_finite(self, step: int, got: list | None = None) -> None:
        """NonFiniteLoss when a step since the last check had a NaN / inf loss or grad norm
        (S.FiniteSteps: where the loop reads the device anyway; `got`: the log line's values)."""
        if self.finite is not None and (bad := self.finite.first_bad(got)) is not None:
            bad_step, loss, norm = bad
            raise self._diverged(step, bad_step, f"the training loss is {loss} (grad norm {norm})") from None

    def _diverged(self, step: int, bad_step: int, what: str) -> NonFiniteLoss:
        """The error that stops a diverged run before its state is saved, evaluated or exported
        (see _non_finite: the same reasons); the saves already started are finished first."""
        self.ckpt.wait()
        steps = self.ckpt.all_steps()
        go_on = (f"the latest checkpoint is step {steps[-1]} in {self.ckpt.directory}; resume=true goes on from it"
                 if steps else "no checkpoint was written yet; start again (a new output_dir or resume=false)")
        dtype = np.dtype(as_dtype(self.cfg.dtype)).name
        fix = "" if dtype == "float32" else ", dtype=float32"
        upto = "" if step == bad_step else f" (stopped at step {step}, where it was read)"
        first = (" The first step already: the source model's weights or the training data are the likely cause."
                 if bad_step == 1 else "")
        return NonFiniteLoss(
            f"step {bad_step}: {what} with compute dtype {dtype}, so training stopped without saving a diverged "
            f"state{upto}; {go_on} with a change that keeps training finite (a lower optim.learning_rate, "
            f"optim.max_grad_norm{fix}; on resume, list the keys changed in resume_may_change).{first}")

    def save(self, step: int, force=False) -> None:
        """Checkpoint `step` when due (or `force`), once the losses since the last check are
        finite: a diverged state is never saved."""
        self.ckpt.save(step, self.state, {"data_position": self.stream.position, "best": self.best,
                                          "config_digest": self.digest,
                                          "rng": np.asarray(jax.random.key_data(self.rng)).tolist()},
                       force=force, before=lambda: self.check_finite(step))

    def export(self, name: str, host) -> Path:
        """Atomic: a kill during the export leaves the previous `name/` whole (atomic.py)."""
        with atomic_dir(self.out / name) as tmp:
            export_model(tmp, self.cfg, self.pt.config, host, self.pt.tokenizer, self.model_dir, self.bi)
        return self.out / name


def build_run(cfg: TrainConfig, out: Path, data: TrainingData, pi: int, pc: int) -> Run:
    """Stage 2: the model, the batch stream, the optimizer and sharded state (restored from the
    latest checkpoint when resuming), the jitted train step and the evaluators' scorer."""
    model_dir = Path(resolve_model(cfg.model))
    pt, bi, groups, digest, encode = raise_together(lambda: _load_model(cfg, model_dir, data.examples),
                                                          what="loading the model")
    from ..sharding import resolve_mesh
    plan = S.make_plan(cfg.sharding, resolve_mesh(cfg.mesh) if cfg.mesh else None)
    dp = plan.data_parallel_size
    if cfg.batch_size % dp:
        raise ValueError(f"batch_size {cfg.batch_size} must be a multiple of the data-parallel size {dp}")
    pad = pt.tokenizer.pad_token_id if pt.tokenizer.pad_token_id is not None else 0
    stream = batch_stream(groups, StreamConfig(
        batch_size=cfg.batch_size, bucket_lengths=tuple(cfg.bucket_lengths), max_length=cfg.max_length,
        pad_token_id=pad, seed=cfg.seed, group_factor=cfg.group_factor),
        process_index=pi, process_count=pc, allgather=process_allgather)
    steps_per_epoch = stream.steps_per_epoch()
    total = cfg.max_steps if cfg.max_steps > 0 else cfg.epochs * steps_per_epoch
    accum = int(cfg.optim.grad_accum_steps)
    params0 = pt.params if bi is None else bi.init_params(pt.params)
    tx = make_optimizer(cfg.optim, max(total // accum, 1), params0, Depths.of(pt.config))
    model_fn, loss_fn, p_sh = _model_fns(cfg, pt.module(dtype=as_dtype(cfg.dtype)), bi, plan)
    shardings = S.state_shardings(plan, tx, params0, p_sh, ema=cfg.ema_decay > 0)
    # GradCache (cache_chunks > 1): the loss sees the whole batch, activations one mini-batch.
    train_step = S.make_train_step(S.cached_apply(S.per_row(model_fn), cfg.cache_chunks), loss_fn, tx, plan,
                                   shardings, lr_schedule=make_schedule(cfg.optim, max(total // accum, 1)),
                                   grad_accum_steps=accum, ema_decay=cfg.ema_decay)
    scorer = Scorer(S.make_eval_step(model_fn, plan, shardings.params), plan, pt.tokenizer, cfg.max_length,
                    bucket_lengths=tuple(cfg.bucket_lengths), do_lower_case=bool(bi and bi.do_lower_case),
                    dtype=as_dtype(cfg.dtype),
                    encode_pairs=encode if cfg.task == "cross_encoder" else None,
                    encode_texts=encode if cfg.task != "cross_encoder" else None)
    run = Run(cfg, out, data, model_dir, pt, bi, digest, plan, stream, steps_per_epoch, total, shardings,
              S.create_state(plan, tx, params0, shardings), jax.random.key(cfg.seed),
              Checkpointer(out / "checkpoints", every_steps=cfg.checkpoint_every or total,
                           keep=cfg.keep_checkpoints, async_save=cfg.async_checkpoint),
              train_step, scorer, None)
    _resume(run)
    run.writer = MetricsWriter(out, enabled=pi == 0)
    if pi == 0:
        (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2, default=str) + "\n")
    return run


def _resume(run: Run) -> None:
    """cfg.resume: the latest checkpoint's state, data position and best metric (same seed and
    config digest required); otherwise the old checkpoints are set aside."""
    if not run.cfg.resume:
        run.ckpt.set_aside()  # resume=false: the old checkpoints are kept, beside, never deleted
        return
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), run.state)
    restored = run.ckpt.restore_latest(abstract, digest=run.digest, may_change=run.cfg.resume_may_change)
    if restored is None:
        return
    run.state, meta = restored
    run.stream.start_at(meta["data_position"])
    if meta.get("rng") != np.asarray(jax.random.key_data(run.rng)).tolist():
        raise ValueError("the checkpoint was written with another seed; use a new output_dir or the same seed")
    run.best = meta.get("best", run.best)
    log.info("resuming at step %d (epoch %d, batch %d)", int(run.state.step), *run.stream.position.values())


def run_loop(run: Run, pi: int, pc: int) -> int:
    """Stage 3: train steps up to run.total, with logs, evaluation (and the best export) and
    checkpoints; returns the last step."""
    cfg, total, steps_per_epoch = run.cfg, run.total, run.steps_per_epoch
    step = int(jax.device_get(run.state.step))
    bar = _progress(total, step, cfg.progress)
    lines = ProgressLines(total, step, steps_per_epoch) if bar is None and cfg.progress is None and pi == 0 else None
    pending, t_log, rows_log = [], time.time(), 0
    run.finite = S.FiniteSteps(step)
    while step < total:
        batch = next(run.stream)
        rows_log += batch.num_examples
        run.state, metrics = run.train_step(run.state, run.plan.place_batch(batch.arrays()), run.rng)
        step += 1
        pending.append(metrics)
        run.finite.add(metrics)
        if lines is not None:
            lines.step(step, metrics)
        if step % cfg.log_every == 0 or step == total:
            got = jax.device_get(pending)
            values = _train_values(got, rows_log * pc, t_log, step / steps_per_epoch)
            run.writer.write(step, values)
            run.check_finite(step, got)   # after the line is written: metrics.jsonl shows the NaN
            if bar is not None:
                bar.set_postfix(loss=f"{values['train/loss']:.4f}", pairs_s=f"{values['train/pairs_per_s']:.0f}")
            pending, t_log, rows_log = [], time.time(), 0
        if bar is not None:
            bar.update(1)
        due = (step % cfg.eval_every == 0) if cfg.eval_every > 0 else (step % steps_per_epoch == 0)
        if "eval" in run.data.evaluators and (due or step == total):
            run.check_finite(step)   # a diverged state is not evaluated (nor exported as best)
            _evaluate_and_keep_best(run, step, pi)
        run.save(step)
        if run.stop is not None and run.stop.requested:
            _save_and_stop(run, step)
    if bar is not None:
        bar.close()
    return step


def _save_and_stop(run: Run, step: int) -> None:
    """The first Ctrl-C (interrupt.py): checkpoint this finished step, unless it just was, wait
    for the save, and stop as an interrupt does: a rerun resumes exactly here."""
    run.ckpt.wait()
    if step not in run.ckpt.all_steps():
        run.save(step, force=True)
        run.ckpt.wait()
    raise KeyboardInterrupt


def _train_values(got: list, pairs: int, since: float, epoch: float) -> dict:
    """The logged train/* values over the steps since the last log (`got`: read from the device
    just before). The clock is read after the device read: steps are dispatched asynchronously,
    so before it the rate would count steps handed to the device, not steps computed."""
    seconds = max(time.time() - since, 1e-9)
    # step_seconds: what a user sizes a run by (metrics.jsonl had only pairs/s); the mean over the
    # steps since the last log, so an evaluation or a save in between counts in it, as in pairs/s
    return {"train/loss": float(np.mean([m["loss"] for m in got])),
            "train/grad_norm": float(np.mean([m["grad_norm"] for m in got])),
            "train/lr": float(got[-1].get("lr", 0.0)),
            "train/pairs_per_s": pairs / seconds, "train/step_seconds": seconds / len(got), "train/epoch": epoch}


def _evaluate_and_keep_best(run: Run, step: int, pi: int) -> None:
    evaluator, ev_cfg = run.data.evaluators["eval"]
    metrics_ev = run.run_eval("eval", run.state.eval_params(), step)
    name = ev_cfg.metric or evaluator.default_metric
    value = float(metrics_ev[name])
    if not math.isfinite(value):   # e.g. pearson of constant scores: no model is "best" on it
        log.warning("step %d: eval metric %s is %s (constant scores?); the best model is not changed", step, name, value)
        return
    best = run.best["value"]
    if best is None or not math.isfinite(best) or value > best:
        run.best = {"metric": name, "value": value, "step": step}
        if run.cfg.export_best:
            host = host_params(run.state.eval_params())  # collective: all processes
            if pi == 0:
                run.export("best", host)


def finalize(run: Run, step: int, step_start: int, t_start: float, pi: int) -> dict:
    """Stage 4: the last checkpoint, the final export, the test evaluation (final, and best
    when it differs), summary.json."""
    run.check_finite(step)   # none left unchecked normally: the loop's log line at the last step read them
    if not run.ckpt.all_steps() or run.ckpt.all_steps()[-1] != step:
        run.save(step, force=True)
    run.ckpt.close()
    silver = run.data.silver
    summary = {"steps": step, "steps_per_epoch": run.steps_per_epoch, "train_seconds": round(time.time() - t_start, 2),
               "steps_run_now": step - step_start, "best": run.best, "output_dir": str(run.out),
               "silver_pairs": len(silver) if silver is not None else 0}
    host = host_params(run.state.eval_params())  # collective: all processes
    if pi == 0:
        summary["final_model"] = str(run.export("final", host))
    if "test" in run.data.evaluators:
        summary["test_final"] = run.run_eval("test", run.state.eval_params(), step)
        recover_dir(run.out / "best")  # a kill between the two renames of an export
        best_step = run.best["step"]
        if best_step is not None and best_step != step and (run.out / "best").is_dir():
            best_params = load_pretrained(run.out / "best", head=run.bi is None, with_tokenizer=False).params
            if run.bi is not None:
                best_params = run.bi.load_exported(run.out / "best", best_params)
            summary["test_best"] = run.run_eval("test", run.plan.put_params(best_params, run.shardings.params), step)
    run.writer.close()
    if pi == 0:
        (run.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    summary["state"] = run.state
    return summary


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) training; returns a summary dict (also written to summary.json).
    Everything that can be checked (config, data files, labels) is checked before the model is
    loaded or anything is compiled."""
    cfg.validate()
    host_memory.tune_malloc()  # before JAX's CPU threads start: no page faults on every step
    if (why := host_memory.status()["reason"]) != "applied":
        log.info("malloc tuning: %s", why)
    pi, pc = jax.process_index(), jax.process_count()
    out = cfg.out_dir()
    check_shared_dir(out)  # several processes: all must see one output_dir, checked before any work
    data = read_training_data(cfg, out, pi, pc)
    run = build_run(cfg, out, data, pi, pc)
    t_start, step_start = time.time(), int(jax.device_get(run.state.step))
    try:
        with StopRequest(enabled=pc == 1) as run.stop:
            step = run_loop(run, pi, pc)
    except KeyboardInterrupt:
        # Ctrl-C while an async save was in flight left it half-written (<step>.orbax-checkpoint-tmp)
        # and printed two orbax tracebacks: the interpreter shut down under the saving thread.
        # Finish it (a second Ctrl-C stops waiting), so a rerun resumes from that step.
        run.ckpt.wait()
        raise
    return finalize(run, step, step_start, t_start, pi)


def evaluate_model(cfg: TrainConfig, ev, *, max_length: int | str | None = "config") -> dict:
    """Evaluate the model at cfg.model with one EvalConfig (no training state needed).
    max_length: "config" = cfg.max_length; None = the model folder's own, the limit CrossEncoder /
    SentenceTransformer score it with (an export keeps the one it was trained with: `xenc eval`
    of a run trained with --set max_length=32 measured it at the preset's 256, not as it scores)."""
    evaluator = build_evaluator(ev.kind, ev.data, cfg.num_labels, ev.name or "test")
    pairs = cfg.task == "cross_encoder"
    model_dir = Path(resolve_model(cfg.model))
    # a folder without a trained head is refused: its metrics would be those of a random head
    pt, bi = load_with_head(cfg, model_dir, allow_new_head=False)
    if max_length != "config":
        cfg = dataclasses.replace(cfg, max_length=max_length or _folder_max_length(pt, bi))
        log.info("evaluating %s with max_length %d", model_dir, cfg.max_length)
    plan = S.make_plan("dp")
    model_fn, _, p_sh = _model_fns(cfg, pt.module(dtype=as_dtype(cfg.dtype)), bi, plan)
    params = pt.params if bi is None else bi.init_params(pt.params)
    scorer = Scorer(S.make_eval_step(model_fn, plan, p_sh), plan, pt.tokenizer, cfg.max_length,
                    batch_size=ev.batch_size, bucket_lengths=tuple(cfg.bucket_lengths),
                    do_lower_case=bool(bi and bi.do_lower_case), dtype=as_dtype(cfg.dtype),
                    encode_pairs=_pair_encoder(model_dir, pt, bi, cfg.max_length) if pairs else None,
                    encode_texts=None if pairs else bi.text_encoder(pt.tokenizer, pt.config, cfg.max_length))
    return {k: float(v) for k, v in evaluator(scorer, plan.put_params(params, p_sh)).items()}
