"""`xenc train` and `xenc eval`: run a typed preset from configs/ with `--set key=value` overrides."""
from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

from .io import CliError


def _config(args):
    from ..train.config import apply_overrides
    cfg = apply_overrides(_preset(args.config), args.set)
    return cfg.validate()


def _preset(path: str):
    """The preset file's CONFIG. An error in the file itself (a syntax error, a failing import, a
    bad value) is one line naming the file and its line, not a traceback through runpy (-v shows it)."""
    from ..train.config import load_config
    try:
        return load_config(path)
    except SyntaxError as e:
        if e.filename is None or Path(e.filename).resolve() != Path(path).resolve():
            raise
        raise CliError(f"{path}:{e.lineno}: {e.msg} (a syntax error in the config file)") from e
    except Exception as e:
        here = Path(path).resolve()
        frames = [f for f in traceback.extract_tb(e.__traceback__) if Path(f.filename).resolve() == here]
        if not frames:
            raise  # load_config's own errors (no such file, no CONFIG) already say what is wrong
        raise CliError(f"{path}:{frames[-1].lineno}: running the config file raised {type(e).__name__}: "
                       f"{' '.join(str(e).split())}") from e


def run_train(args) -> int:
    cfg = _config(args)
    if args.print_config:
        from ..train.config import to_dict
        print(json.dumps(to_dict(cfg), indent=2, default=str))
        return 0
    from .. import multihost
    multihost.initialize(args.coordinator, args.num_processes, args.process_id, timeout_s=args.init_timeout)
    from ..train.loop import train
    _show_training_info()
    try:
        summary = train(cfg)
    except KeyboardInterrupt:  # what a rerun does: resume at the last checkpoint, or start over
        print(f"\nxenc train: interrupted; {resume_hint(cfg)}", file=sys.stderr, flush=True)
        return 130
    summary.pop("state", None)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _show_training_info() -> None:
    """Training's INFO lines on stderr without -v: each evaluation's metrics ("step 500 eval:
    {'spearman': 0.87}"), "resuming at step N", silver pairs reused. Without them a user saw the
    dev score only in the final summary (or metrics.jsonl), and nothing said a run had resumed."""
    import logging
    logger = logging.getLogger("xenc_jax.train")
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)


def resume_hint(cfg) -> str:
    """What running the same command again does after an interrupted run: resume at the newest
    finished checkpoint (the steps after it run again), or start from step 0 when none exists."""
    ckpts = cfg.out_dir() / "checkpoints"
    steps = sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) if ckpts.is_dir() else []
    if not steps:
        return (f"no checkpoint was written yet (checkpoint_every={cfg.checkpoint_every}): the same command "
                "starts again from step 0")
    if not cfg.resume:
        return f"the last checkpoint is step {steps[-1]} in {ckpts}; run with --set resume=true to resume from it"
    return (f"the last checkpoint is step {steps[-1]} in {ckpts}: run the same command again to resume "
            "from it (the steps after it run again)")


def run_eval(args) -> int:
    """Score a trained model (--model, else `--set model=DIR`, else <output_dir>/final) with the
    config's test evaluator. `--set model=` was ignored once (README's own example), which evaluated
    <output_dir>/final, another model, whenever that existed."""
    import dataclasses

    from ..train.loop import evaluate_model
    cfg = _config(args)
    which = cfg.test if args.split == "test" else cfg.evaluator
    if which is None:
        other = "eval" if args.split == "test" else "test"
        has_other = (cfg.evaluator if args.split == "test" else cfg.test) is not None
        hint = (f"; use --split {other} (its {'evaluator' if other == 'eval' else 'test'} section)" if has_other
                else f"; add one with --set {'test' if args.split == 'test' else 'evaluator'}.data.path=FILE "
                     "(and its kind, columns, label_column)")
        raise ValueError(f"the config has no {'test' if args.split == 'test' else 'evaluator'} section{hint}")
    keys = {item.split("=", 1)[0].strip() for item in args.set}
    model = args.model or (str(cfg.model) if "model" in keys else str(cfg.out_dir() / "final"))
    if not Path(model).is_dir():
        raise FileNotFoundError(f"model directory {model} does not exist (train first, or pass --model)")
    _show_training_info()   # "evaluating DIR with max_length N"
    # the model's own max_length (an export's: the one it was trained with), unless --set gives one
    metrics = evaluate_model(dataclasses.replace(cfg, model=model), which,
                             max_length=cfg.max_length if "max_length" in keys else None)
    json.dump({"model": model, "split": args.split, **metrics}, sys.stdout, indent=2)
    print()
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="train a cross-encoder or bi-encoder from a config preset")
    p.add_argument("--config", required=True, help="python preset file defining CONFIG (see configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (dotted for nested: optim.learning_rate=3e-5); repeatable")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    from .distributed import add_process_args
    add_process_args(p.add_argument_group("processes (multi-host training; see docs/multihost.md)"))
    p.set_defaults(func=run_train)

    p = sub.add_parser("eval", help="evaluate a trained model with a preset's evaluator")
    p.add_argument("--config", required=True, help="the python preset file the model was trained with "
                   "(see configs/): its evaluator and test sections are what is measured")
    p.add_argument("--model", default=None, help="model directory (default: --set model=DIR, else "
                   "<output_dir>/final)")
    p.add_argument("--split", choices=["test", "eval"], default="test",
                   help="the config's test section or its evaluator (default: %(default)s)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, as for xenc train; repeatable")
    p.set_defaults(func=run_eval)
