"""One progress convention for long work (CLI commands, map building, training): a bar on a
terminal, plain lines otherwise.

``with progress("embedding", unit="images") as report: ... report(done, total)``

On a terminal (stderr is a TTY) it draws one click progress bar; in logs and pipes it prints
``label: done/total unit`` about every 10 % (and at the end), so CI output stays readable.
Always on stderr: stdout is kept for results (``--json``).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator

import click

Report = Callable[[int, "int | None"], None]


def _is_terminal() -> bool:
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def _fmt(n: float, unit: str) -> str:
    if unit != "bytes":
        return f"{int(n)}"
    for u in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or u == "GiB":
            return f"{n:.0f} {u}" if u == "B" else f"{n:.1f} {u}"
        n /= 1024
    return f"{n:.1f} GiB"


@contextlib.contextmanager
def progress(label: str, unit: str = "items", enabled: bool = True) -> Iterator[Report]:
    """A ``report(done, total_or_None)`` callback drawing the run's progress (see module doc)."""
    if not enabled:
        yield lambda done, total: None
        return
    if _is_terminal():
        with _bar(label, unit) as report:
            yield report
        return
    yield _lines(label, unit)


@contextlib.contextmanager
def _bar(label: str, unit: str) -> Iterator[Report]:
    state: dict = {"bar": None, "shown": 0}

    def report(done: int, total: int | None) -> None:
        if state["bar"] is None:
            state["bar"] = click.progressbar(
                length=total or 0,
                label=label,
                file=sys.stderr,
                show_pos=unit != "bytes",
                show_percent=bool(total),
                item_show_func=lambda _: (
                    f"{_fmt(state['shown'], unit)}" if unit == "bytes" else None
                ),
            )
            state["bar"].__enter__()
        state["shown"] = done
        state["bar"].update(done - state["bar"].pos)

    try:
        yield report
    finally:
        if state["bar"] is not None:
            state["bar"].__exit__(None, None, None)


def _lines(label: str, unit: str) -> Report:
    state = {"step": -1, "t": 0.0}
    suffix = "" if unit == "bytes" else f" {unit}"

    def report(done: int, total: int | None) -> None:
        now = time.monotonic()
        if total:
            step = done * 10 // max(total, 1)
            if step == state["step"] and done != total:
                return
            state["step"] = step
            click.echo(f"{label}: {_fmt(done, unit)}/{_fmt(total, unit)}{suffix}", err=True)
        elif now - state["t"] >= 5.0:  # unknown total: every 5 s
            state["t"] = now
            click.echo(f"{label}: {_fmt(done, unit)}{suffix}", err=True)

    return report


def reporter(label: str, unit: str = "items") -> Report:
    """A ``report(done, total)`` callback for code that cannot hold a ``with`` block; the bar
    closes itself when ``done`` reaches ``total``."""
    if not _is_terminal():
        return _lines(label, unit)
    cm = _bar(label, unit)
    report = cm.__enter__()

    def call(done: int, total: int | None) -> None:
        report(done, total)
        if total is not None and done >= total:
            cm.__exit__(None, None, None)

    return call
