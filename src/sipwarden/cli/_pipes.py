"""Behave like a Unix filter when the reader of stdout goes away (``sipwarden analyze … | head``).

Python ignores SIGPIPE and raises BrokenPipeError, which click turns into exit status 1 - the
status ``--fail-on`` and ``parse`` give their own meaning to. The batch commands restore the
default action instead: the process ends quietly on SIGPIPE, as ``cat`` or ``grep`` do (the
shell reports 141). Only for commands that own no sockets: a long-running server must never
die because one peer went away.
"""

from __future__ import annotations

import signal

__all__ = ["end_quietly_on_broken_pipe"]


def end_quietly_on_broken_pipe() -> None:
    if hasattr(signal, "SIGPIPE"):  # not on Windows
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
