"""Argument types and checks that several ``relpos`` subcommands share.

The library's own checks name Python arguments (``max_distance``, ``run_dir``), as they should for
a caller of the library; a shell user typed ``-k`` or ``--run-dir``. These name the flag, and
run before any work starts. Parse-time types raise ``argparse.ArgumentTypeError`` (argparse adds
the flag and the usage line); checks of a command's values raise ``ValueError`` or ``OSError``,
which ``relpos.cli.main`` prints as one line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = [
    "MAX_K",
    "positive_int",
    "non_negative_int",
    "clipping_distance",
    "check_output",
    "check_k",
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


def check_output(path: str | Path, flag: str, *, folder: bool) -> None:
    """Refuse an output ``path`` (a ``folder``, else a file) that cannot be made, before any work:
    a file where the folder should be, or a file among its parents (``mkdir`` would say only
    ``[Errno 20] Not a directory``, after the training or timing)."""
    path = Path(path)
    if path.exists():
        if folder and not path.is_dir():
            raise FileExistsError(f"{flag} {str(path)!r} exists and is not a folder")
        if not folder and path.is_dir():
            raise IsADirectoryError(f"{flag} {str(path)!r} is a folder: give a file name")
        return
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(
                    f"{flag} {str(path)!r}: {str(parent)!r} is not a folder, so nothing can be "
                    "made in it"
                )
            return


def check_k(k: int, scheme: str, options: dict) -> None:
    """Build ``scheme`` with ``options``, whose ``max_distance`` is ``-k``'s value: a scheme that
    refuses it is an error that names -k, which the user typed (DeBERTa wants k >= 1, and a
    scheme without a clipping distance has no max_distance option)."""
    from .. import get_scheme

    try:
        get_scheme(scheme, **options)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"-k {k} does not suit scheme {scheme!r} (-k sets its max_distance): {error}"
        ) from None
