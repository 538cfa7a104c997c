"""Ctrl-C during training steps: the first one lets the running step finish, saves it as a
checkpoint and stops (a rerun of the same command resumes exactly there); a second one stops at
once (the newest finished checkpoint is kept; train() finishes a save in flight).

Before, Ctrl-C raised wherever the main thread was: often inside orbax's wait for the previous
async save, which then printed two tracebacks and left `<step>.orbax-checkpoint-tmp` behind, and
every step since the last due checkpoint was lost. Only with one process: a save is collective,
and a Ctrl-C reaches one process of several at its own step (there the default stays: stop now).
"""
from __future__ import annotations

import signal
import sys
import threading


class StopRequest:
    """Context manager: while inside, SIGINT sets `requested` (first) or raises (second). It
    changes nothing when SIGINT is not Python's default handler (ignored, as under nohup, or an
    application's own) or off the main thread, where signal handlers cannot be set."""

    def __init__(self, enabled: bool = True):
        self.requested = False
        self._old = None
        self._enabled = (enabled and threading.current_thread() is threading.main_thread()
                         and signal.getsignal(signal.SIGINT) is signal.default_int_handler)

    def __enter__(self) -> "StopRequest":
        if self._enabled:
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> bool:
        if self._enabled:
            signal.signal(signal.SIGINT, self._old)
        return False

    def _handle(self, signum, frame) -> None:
        if self.requested:
            signal.signal(signal.SIGINT, self._old)
            raise KeyboardInterrupt
        self.requested = True
        print("\nxenc train: Ctrl-C: stopping after this step, which is saved as a checkpoint "
              "(Ctrl-C again: stop now, at the last finished checkpoint)", file=sys.stderr, flush=True)
