"""Streaming building blocks: cut any iterable into chunks, and prepare chunk k+1 (read, tokenize,
bucket) in a background thread while the device scores chunk k.

Memory is bounded by the chunk size times the queue depth, not by the input: at most `depth`
prepared chunks wait in the queue, plus the one being scored. Errors raised while reading or
preparing reach the consumer at the chunk where they happened, with their original type.
"""
from __future__ import annotations

import itertools
import queue
import threading
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_CHUNK_SIZE = 8192  # pairs or texts per chunk: ~30 MB of host data; packing as good as whole inputs


def check_stream_input(items, what: str, example: str):
    """A stream must be an iterable of items, not one item (a str is iterable too)."""
    if isinstance(items, (str, bytes)):
        raise TypeError(f"{what} must be an iterable of items like {example}, got a single str; "
                        f"wrap it in a list: [{example}]")
    if items is None or isinstance(items, dict):
        raise TypeError(f"{what} must be an iterable like [{example}, ...], got {type(items).__name__}")
    try:
        return iter(items)
    except TypeError:
        raise TypeError(f"{what} must be an iterable like [{example}, ...], got {type(items).__name__}") from None


def check_chunk_size(chunk_size) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    return chunk_size


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


_DONE = object()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def prefetch(chunked: Iterable[T], prepare: Callable[[T], R], depth: int = 2,
             stats: dict | None = None) -> Iterator[R]:
    """prepare(chunk) for each chunk, computed ahead in one background thread, in order.

    Closing the generator (or an exception in the consumer) stops the thread at its next chunk.
    `stats`: gets "host_wait_s", the seconds the consumer waited for a prepared chunk (the
    device idle on the host, when the consumer is the device loop).
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for chunk in chunked:
                if stop.is_set() or not put(prepare(chunk)):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, re-raised there
            put(_Failure(e))
            return
        put(_DONE)

    thread = threading.Thread(target=work, name="xenc-prefetch", daemon=True)
    thread.start()
    import time
    try:
        while True:
            t = time.perf_counter()
            item = q.get()
            if stats is not None:
                stats["host_wait_s"] = stats.get("host_wait_s", 0.0) + time.perf_counter() - t
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def numbered_chunks(items: Iterable[T], size: int) -> Iterator[tuple[int, list[T]]]:
    """(index of the chunk's first item in the whole input, chunk)."""
    start = 0
    for chunk in chunks(items, size):
        yield start, chunk
        start += len(chunk)


def run_chunks(numbered: Iterable[tuple[int, list]], prepare: Callable, run: Callable, *,
               bar=None, depth: int = 2, stats: dict | None = None) -> Iterator:
    """run(prepare(start, chunk)) for each chunk, in order: prepare (tokenize, bucket) in the
    background thread, run (the device) in the caller's. `bar.update(len(chunk))` after each.

    With several processes every process must make the same device calls: each round, the
    processes agree (all-gathers of a status, no data) on whether reading failed anywhere (then
    all raise multihost.ProcessFailed with that message) and whether any of them still has a
    chunk; one that has run out scores `prepare(start, [])`, an empty chunk (its runner pads
    with empty batches), and yields nothing for it.
    """
    import jax

    from .multihost import any_process
    prepared = prefetch(numbered, lambda sc: (len(sc[1]), prepare(*sc)), depth, stats)
    multi = jax.process_count() > 1
    try:
        while True:
            if multi:  # a bad row on any process stops all of them, with its message, not a hang
                from .multihost import raise_together
                got = raise_together(next, prepared, None, what="reading the input")
            else:
                got = next(prepared, None)
            if multi and not any_process(got is not None):
                return
            if got is None:
                if not multi:
                    return
                run(prepare(0, []))
                continue
            n, prep = got
            out = run(prep)
            if bar is not None:
                bar.update(n)
            yield out
    finally:
        prepared.close()
