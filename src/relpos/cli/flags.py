"""Argument types and checks that several ``relpos`` subcommands share.

The library's own checks name Python arguments (``max_distance``, ``run_dir``), as they should for
a caller of the library; a shell user typed ``-k`` or ``--run-dir``. These name the flag, and
run before any work starts. Parse-time types raise ``argparse.ArgumentTypeError`` (argparse adds
the flag and the usage line); checks of a command's values raise ``ValueError`` or ``OSError``,
which ``relpos.cli.main`` prints as one line.
"""

from __future__ import annotations

import argparse

__all__ = [
    "MAX_K",
    "positive_int",
    "non_negative_int",
    "clipping_distance",
]

#: the largest -k any command takes: k indexes a table of 2k + 1 rows, and far past this an int
#: no longer fits the tensors (-k 10**20 was a page of C++ stack frames from torch.empty)
MAX_K = 2**31


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an int >= 0, got {text!r}")
    return value


def clipping_distance(text: str) -> int:
    """``-k``: a clipping distance, ``0 <= k <= MAX_K``."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_K:
        raise argparse.ArgumentTypeError(
            f"expected a clipping distance k, an int in 0..2**31, got {text!r}"
        )
    return value
