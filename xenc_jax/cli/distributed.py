"""Multi-device and multi-process flags shared by `xenc score` and `xenc encode`, and
`xenc merge-parts`. Thin: the work is in xenc_jax/multihost.py and xenc_jax/sharding.py.

Launch N processes with the same command plus --process-id (or $XENC_PROCESS_ID); each reads
the input, keeps its strided slice (records i with i % N == process id), scores it on its
devices of the global mesh, then either the results are gathered and process 0 writes the
output, or (--output-parts) each process writes OUTPUT.part-0000k-of-0000N.npy and
`xenc merge-parts OUTPUT -o FILE` merges them later. See docs/multihost.md.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np


def add_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("devices and processes")
    g.add_argument("--mesh", default=None,
                   help="device mesh: 'auto' (data parallel over all devices) or e.g. 'data=4,model=2' "
                        "(-1 = the rest); default: one device, or 'auto' with several processes")
    g.add_argument("--sharding", default="dp", choices=["dp", "fsdp", "tp", "fsdp_tp"],
                   help="param sharding over the mesh (default: %(default)s = replicated)")
    add_process_args(g)
    g.add_argument("--output-parts", action="store_true",
                   help="each process writes OUTPUT.part-0000k-of-0000N.npy (its slice, raw arrays) "
                        "instead of gathering; merge with `xenc merge-parts OUTPUT -o FILE`")


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
        self.parts = args.output_parts
        if self.parts and args.output in (None, "-"):
            raise ValueError("--output-parts needs --output PREFIX (parts are files, not stdout)")

    def local(self, items: list) -> list:
        """This process's slice of the input (all of it in a single-process run)."""
        from .. import multihost
        return multihost.process_slice(items, self.index, self.count)

    def finish(self, local: np.ndarray, n: int, prefix: str) -> np.ndarray | None:
        """Parts: write this process's part, return None. Else the full result in input order
        on process 0, None on the others (they write nothing)."""
        from .. import multihost
        if self.parts:
            path = multihost.write_part(prefix, local, self.index, self.count)
            print(f"process {self.index}: {len(local)} of {n} results -> {path}", file=sys.stderr)
            return None
        full = multihost.gather_slices(local, n) if self.count > 1 else np.asarray(local)
        return full if self.index == 0 else None


def run_merge(args) -> int:
    from .. import multihost
    from .score import write_scores
    merged = multihost.merge_parts(args.prefix)
    if args.output.endswith(".npy"):
        from ..atomic import save_npy
        save_npy(args.output, merged)
    else:
        write_scores(merged, args.output, args.output_format)
    print(f"merged {merged.shape[0]} results from {args.prefix}.part-* -> {args.output}", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("merge-parts", help="merge per-process result parts (from --output-parts) in input order")
    p.add_argument("prefix", help="the --output given to the run: merges PREFIX.part-*-of-*.npy")
    p.add_argument("--output", "-o", required=True,
                   help="FILE.npy (arrays, e.g. embeddings), or scores as JSONL/TSV like `xenc score`")
    p.add_argument("--output-format", choices=["jsonl", "tsv"], default="jsonl")
    p.set_defaults(func=run_merge)
