"""Progress bars for the long commands (demo, import, retrieve, send, catalog compact).

A bar is drawn only for a person watching: by default when stdout and stderr are
both terminals, or when ``--progress`` asks. It goes to stderr, so what a command
prints on stdout (the one-line results scripts parse) is the same with or without it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich.console import Console

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


def add_option(parser: argparse.ArgumentParser) -> None:
    """``--progress/--no-progress`` on a command that takes long."""
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar on stderr (default: when run in a terminal)",
    )


def wanted(choice: bool | None) -> bool:
    """The user's ``--progress`` choice, else whether someone watches a terminal."""
    if choice is not None:
        return choice
    return sys.stdout.isatty() and sys.stderr.isatty()


class Bar:
    """One bar: set how far it got, or count one more step; nothing at all when hidden."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task

    def update(
        self, completed: int | None = None, total: int | None = None, text: str | None = None
    ) -> None:
        self._progress.update(self._task, completed=completed, total=total, description=text)

    def advance(self, steps: int = 1) -> None:
        self._progress.advance(self._task, steps)


def _stream_handlers() -> list[logging.StreamHandler[Any]]:
    """Every stream handler of every logger there is (ours, Prefect's console handler)."""
    loggers: list[Any] = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    found: dict[int, logging.StreamHandler[Any]] = {}
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            if isinstance(handler, logging.StreamHandler):
                found[id(handler)] = handler
    return list(found.values())


@contextmanager
def _logs_above_the_bar(console: Console) -> Iterator[None]:
    """While rich redirects stderr, log handlers holding the real stderr write through the
    bar's `console` instead, so their lines are printed above the bar, not glued onto it.

    Prefect's console handler prints with a rich console of its own: it gets the bar's for
    the time being (a console unwraps a redirected stream and would write past the bar).
    """
    proxy = sys.stderr
    original = getattr(proxy, "rich_proxied_file", None)
    if original is None:  # not redirected (no bar drawn)
        yield
        return
    moved = [h for h in _stream_handlers() if h.stream is original]
    consoles = {
        id(h): getattr(h, "console", None)
        for h in moved
        if isinstance(getattr(h, "console", None), Console)
    }
    for handler in moved:
        handler.setStream(proxy)
        if id(handler) in consoles:
            handler.console = console  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for handler in moved:
            handler.setStream(original)
            if id(handler) in consoles:
                handler.console = consoles[id(handler)]  # type: ignore[attr-defined]


@contextmanager
def bar(text: str, total: int | None, shown: bool, counted: bool = True) -> Iterator[Bar]:
    """A bar of `total` steps (None: not known yet, it pulses) for the ``with`` block.

    Not `counted`: a step that reports nothing until it ends (an autoload run) gets
    a spinner and the time it has taken, no bar.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    counts = (BarColumn(), MofNCompleteColumn()) if counted else ()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), *counts, TimeElapsedColumn())
    # Forced on, it draws even where stderr is no terminal: the user asked for it.
    console = Console(stderr=True, force_terminal=shown)
    # Never redirect stdout: results printed meanwhile must reach it untouched. What goes
    # to stderr (log lines) is printed above the bar.
    with (
        Progress(
            *columns,
            console=console,
            disable=not shown,
            redirect_stdout=False,
            redirect_stderr=shown,
        ) as progress,
        _logs_above_the_bar(console),
    ):
        yield Bar(progress, progress.add_task(text, total=total))
