"""Multi-device and multi-process flags shared by `xenc score` and `xenc encode`, and
`xenc merge-parts`. Thin: the work is in xenc_jax/multihost.py and xenc_jax/sharding.py.

Launch N processes with the same command plus --process-id (or $XENC_PROCESS_ID); each reads
only its share of the input file (a contiguous byte range or row groups, shares.py), scores it
on its devices of the global mesh and writes its own resumable parts of the output (jobs.py);
then process 0 assembles them in input order, or (--output-parts) they are kept and
`xenc merge-parts OUTPUT` assembles them later. One process is the same scheme with N = 1.
See docs/multihost.md.
"""
from __future__ import annotations

import argparse
import sys


def add_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("devices and processes")
    g.add_argument("--mesh", default=None,
                   help="device mesh: 'auto' (data parallel over all devices) or e.g. 'data=4,model=2' "
                        "(-1 = the rest); default: one device, or 'auto' with several processes")
    g.add_argument("--sharding", default="dp", choices=["dp", "fsdp", "tp", "fsdp_tp"],
                   help="param sharding over the mesh (default: %(default)s = replicated)")
    add_process_args(g)
    g.add_argument("--output-parts", action="store_true",
                   help="keep the finished parts in OUTPUT.parts/ instead of assembling OUTPUT (e.g. to "
                        "assemble elsewhere); then `xenc merge-parts OUTPUT` writes OUTPUT")


def add_process_args(g) -> None:
    """The flags that join a multi-process run (also used by `xenc train`)."""
    g.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="process 0's address for a multi-process run (or $XENC_COORDINATOR)")
    g.add_argument("--num-processes", type=int, default=None, help="processes in the run (or $XENC_NUM_PROCESSES)")
    g.add_argument("--process-id", type=int, default=None, help="this process, 0..N-1 (or $XENC_PROCESS_ID)")
    g.add_argument("--init-timeout", type=int, default=300, metavar="SECONDS",
                   help="give up when not all processes joined within this time (default: %(default)s)")


class Run:
    """What a command needs to know about the device/process layout of this run."""

    def __init__(self, args):
        from .. import multihost
        self.multi = multihost.initialize(args.coordinator, args.num_processes, args.process_id,
                                          timeout_s=args.init_timeout)
        import jax
        self.index, self.count = jax.process_index(), jax.process_count()
        self.mesh = args.mesh or ("auto" if self.count > 1 else None)
        self.sharding = args.sharding


def run_merge(args) -> int:
    from .jobs import merge
    target, items = merge(args.output, args.to)
    print(f"merged {items} results from {args.output}.parts/ -> {target}", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("merge-parts", help="assemble the parts kept by --output-parts into the output, in input order")
    p.add_argument("output", help="the --output given to the run (its parts are in OUTPUT.parts/)")
    p.add_argument("--to", "-o", default=None, metavar="FILE",
                   help="write the assembled output here instead of OUTPUT (same format)")
    p.set_defaults(func=run_merge)
