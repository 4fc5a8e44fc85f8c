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
    "check_run_folder",
]

#: the largest -k any command takes: k indexes a table of 2k + 1 rows, and far past this an int
#: no longer fits the tensors (-k 10**20 was a page of C++ stack frames from torch.empty)
MAX_K = 2**31


def _int_in(text: str, low: int, high: int | None, expected: str) -> int:
    """``text`` as an int in ``low..high`` (``None``: no upper bound), else argparse's error."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _int_in(text, 1, None, "a positive int")


def non_negative_int(text: str) -> int:
    return _int_in(text, 0, None, "an int >= 0")


def clipping_distance(text: str) -> int:
    """``-k``: a clipping distance, ``0 <= k <= MAX_K``."""
    return _int_in(text, 0, MAX_K, "a clipping distance k, an int in 0..2**31")


def probability(text: str) -> float:
    """A dropout probability, ``0 <= p < 1`` (NaN and 1 refused: 1 would drop every weight)."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0.0 <= value < 1.0:  # NaN fails both comparisons
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1), got {text!r}")
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


#: what a run folder holds, for the messages about a RUN_DIR that is not one
TRAIN_RUN = "a `relpos train` run folder (config.json and checkpoint/)"
COMPARE_RUN = "a `relpos compare` folder (results.json)"


def check_run_folder(
    run_dir: str, command: str, *, compare_only: bool = False, picks: dict | None = None
) -> None:
    """``RUN_DIR`` must be a training run or a compare folder (``compare_only``: the latter, whose
    files the command's own message then names); ``picks`` (``{"--task": args.task}``), flags
    that choose among a compare folder's runs, must not be given with one training run.
    ``command`` (``relpos predict``) starts the clause that says what it reads."""
    folder = Path(run_dir)
    wanted = f"{command} reads {COMPARE_RUN if compare_only else f'{TRAIN_RUN} or {COMPARE_RUN}'}"
    if not folder.exists():
        raise FileNotFoundError(f"RUN_DIR {run_dir!r} does not exist; {wanted}")
    if not folder.is_dir():
        raise NotADirectoryError(f"RUN_DIR {run_dir!r} is a file, not a folder; {wanted}")
    if compare_only:
        return
    if (folder / "config.json").is_file():
        for flag, value in (picks or {}).items():
            if value is not None:  # find_runs would name its keyword: "seed picks runs ..."
                raise ValueError(
                    f"{flag} picks runs in a compare folder; RUN_DIR {run_dir!r} is one "
                    f"training run (leave {flag} out)"
                )
    elif not (folder / "results.json").is_file():
        raise FileNotFoundError(
            f"RUN_DIR {run_dir!r} holds neither config.json nor results.json; {wanted}"
        )
