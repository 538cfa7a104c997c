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
    summary = train(cfg)
    summary.pop("state", None)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def run_eval(args) -> int:
    """Score a trained model (--model, else `--set model=DIR`, else <output_dir>/final) with the
    config's test evaluator. `--set model=` was ignored once (README's own example), which evaluated
    <output_dir>/final, another model, whenever that existed."""
    import dataclasses

    from ..train.loop import evaluate_model
    cfg = _config(args)
    which = cfg.test if args.split == "test" else cfg.evaluator
    if which is None:
        raise ValueError(f"the config has no {'test' if args.split == 'test' else 'evaluator'} section")
    set_model = any(item.split("=", 1)[0].strip() == "model" for item in args.set)
    model = args.model or (str(cfg.model) if set_model else str(cfg.out_dir() / "final"))
    if not Path(model).is_dir():
        raise FileNotFoundError(f"model directory {model} does not exist (train first, or pass --model)")
    metrics = evaluate_model(dataclasses.replace(cfg, model=model), which)
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
