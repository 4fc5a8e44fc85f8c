"""The ``relpos`` command line: one module per subcommand.

Each module in ``COMMANDS`` defines ``register(subparsers)`` (adds its parser, cheap: heavy imports
happen inside the command) and sets ``func`` on the parser via ``set_defaults``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main", "build_parser", "COMMANDS"]

#: subcommand modules, in the order ``relpos --help`` lists them.
COMMANDS = ["show", "train", "compare", "predict", "plot", "bench", "info"]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="relpos",
        description="Position representations for transformer attention "
        "(Shaw et al. 2018 relative positions and the family around them).",
    )
    parser.add_argument("--version", action="version", version=f"relpos {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    # TypeError: an option of the wrong type (key_term=maybe); OSError: a folder that cannot
    # be made or read; OverflowError: an int too large for a tensor. Each message names the
    # argument, so one line says it better than a traceback.
    except KeyboardInterrupt:
        # Checkpoints are written atomically: what was saved before the interrupt is intact.
        resume = {
            "train": " (--resume continues from the last checkpoint, one every "
            "--checkpoint-every steps)",
            "compare": " (--resume --out DIR continues; finished runs are kept)",
        }.get(args.command, "")
        print(f"relpos {args.command}: interrupted{resume}", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, OverflowError) as error:
        print(f"relpos {args.command}: error: {error}", file=sys.stderr)
        for note in getattr(error, "__notes__", ()):  # e.g. which run failed, how to resume
            print(note, file=sys.stderr)
        return 2
