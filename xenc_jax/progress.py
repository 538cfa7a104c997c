"""Progress bars: tqdm when asked, or by default only on an interactive terminal."""
from __future__ import annotations

import sys


def progress(iterable, total: int | None, desc: str, show: bool | None, unit: str = "batch"):
    """tqdm when asked, or by default only on an interactive terminal. With iterable=None, a
    bar to `update()` by hand (a no-op stand-in when hidden). total None: unknown (a stream)."""
    if show is None:
        show = sys.stderr.isatty() and (total is None or total > 1)
    if not show:
        return iterable if iterable is not None else _NoBar()
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, unit=unit, unit_scale=unit != "batch")


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass
