"""`xenc` command line: thin parsers that call library functions (one module per command group)."""
from __future__ import annotations

import argparse
import logging
import os
import stat
import sys

from . import distributed, mine, score, search, train
from .io import CliError, check_text_args

# Each command module exposes register(subparsers); its parser sets `func(args) -> int`.
# Building the parser must not import jax, flax or transformers (import them inside `func`): `xenc --help`
# and `--version` take ~0.25 s instead of 2-3 s (tests/test_startup.py checks it).
COMMAND_MODULES = [score, search, mine, train, distributed]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xenc", description="JAX/Flax cross-encoders and bi-encoders.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and warnings")
    from .. import __version__
    parser.add_argument("--version", action="version", version=f"xenc_jax {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def _stdout_is_a_pipe() -> bool:
    try:
        return stat.S_ISFIFO(os.fstat(sys.stdout.fileno()).st_mode)
    except (OSError, ValueError):  # no file descriptor (stdout replaced in-process)
        return False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        check_text_args(args)
        return int(args.func(args) or 0)
    except (CliError, FileNotFoundError, NotADirectoryError, ValueError, TypeError, OSError) as e:
        if isinstance(e, BrokenPipeError) and _stdout_is_a_pipe():
            # `xenc search ... | head`: the reader took what it wanted and closed the pipe. Stop
            # quietly with the status a shell shows for other tools there (128 + SIGPIPE, as `yes |
            # head`), not `error: [Errno 32] Broken pipe`. stdout now points at /dev/null, so the
            # interpreter's last flush of what is still buffered does not raise again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141
        if args.verbose:
            raise
        print(f"xenc {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: say so; resume only where finished parts were kept
        again = "; run the same command again to resume" if getattr(args, "resumable", False) else ""
        print(f"\nxenc {args.command}: interrupted{again}", file=sys.stderr, flush=True)
        return 130
