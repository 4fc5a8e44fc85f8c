"""``relpos show``: print the relative index matrix the seed describes.

Entry ``(i, j)`` is ``clip(j - i, -k, k) + k``: the row of the relative table that token ``i``
uses for token ``j``. The default is the seed's picture: a sentence of length 10 with ``k = 3``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json

from ..attention.index import relative_position_index

__all__ = ["register", "format_index"]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "show",
        help="print the relative position index matrix",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--length", type=int, default=None, help="sequence length (default 10)")
    parser.add_argument("-k", "--max-distance", type=int, default=3, help="clipping distance k")
    parser.add_argument(
        "--tokens", default=None, help='label rows/columns, e.g. "I think therefore I am"'
    )
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    parser.set_defaults(func=run)


def format_index(index: list[list[int]], labels: list[str], k: int, fmt: str) -> str:
    """Render the index matrix with row/column labels as a table, CSV or JSON."""
    if fmt == "json":
        return json.dumps(
            {"max_distance": k, "tokens": labels, "num_vectors": 2 * k + 1, "index": index},
            indent=None,
        )
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["i\\j", *labels])
        for label, row in zip(labels, index, strict=True):
            writer.writerow([label, *row])
        return buffer.getvalue().rstrip("\n")
    width = max(len(str(2 * k)), *(len(label) for label in labels))
    row_head = max(len(label) for label in labels)
    lines = [
        f"relative index clip(j - i, -{k}, {k}) + {k}: {2 * k + 1} vectors, "
        f"entry {k} is the token itself",
        " " * (row_head + 3) + " ".join(label.rjust(width) for label in labels),
        " " * (row_head + 3) + "-" * ((width + 1) * len(labels) - 1),
    ]
    for label, row in zip(labels, index, strict=True):
        lines.append(f"{label.rjust(row_head)} | " + " ".join(str(v).rjust(width) for v in row))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    tokens = args.tokens.split() if args.tokens is not None else None
    if tokens == []:
        raise ValueError(f"--tokens must contain at least one token, got {args.tokens!r}")
    length = args.length
    if tokens is not None:
        if length is not None and length != len(tokens):
            raise ValueError(f"--length {length} does not match the {len(tokens)} --tokens given")
        length = len(tokens)
    length = 10 if length is None else length
    if length <= 0:
        raise ValueError(f"--length must be > 0, got {length}")
    if args.max_distance < 0:
        raise ValueError(f"-k must be >= 0, got {args.max_distance}")
    labels = tokens or [str(i) for i in range(length)]
    index = relative_position_index(length, length, args.max_distance).tolist()
    print(format_index(index, labels, args.max_distance, args.format))
    return 0
