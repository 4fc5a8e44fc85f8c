"""``relpos show``: print the relative index matrix the seed describes.

Entry ``(i, j)`` is ``clip(j - i, -k, k) + k``: the row of the relative table that token ``i``
uses for token ``j``. The default is the seed's picture: a sentence of length 10 with ``k = 3``.
``--2d`` prints Swin's window index instead, ``--t5`` which distances share each of T5's
buckets (exact near the token, logarithmic further away, where Shaw's clipping merges them all),
and ``--deberta`` DeBERTa's row ``clamp(i - j + k, 0, 2k - 1)``: query minus key, ``2k`` rows,
so earlier keys share the last row from ``i - j = k - 1`` on, one step sooner than later keys
share row 0 (from ``j - i = k``, where Shaw clips on both sides).
"""

from __future__ import annotations

import argparse
import csv
import io
import json

import torch

from ..attention.index import relative_position_index
from .flags import MAX_K

#: the longest sequence `relpos show` prints (its L x L table has a line per token); also the most
#: patches of a --2d window, whose table is (Wh·Ww) x (Wh·Ww)
MAX_PRINTED_LENGTH = 1024
#: the largest 2k + N that --t5 accepts: t5_bucket_ranges evaluates every distance in
#: [-(2k + N), 2k + N], and k = 10**11 asked the allocator for 3 TB
MAX_T5_REACH = 2**22

__all__ = [
    "register",
    "format_index",
    "format_window_index",
    "format_t5_buckets",
    "t5_bucket_ranges",
]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "show",
        help="print the relative position index matrix",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--length", type=int, default=None, help="sequence length (default 10)")
    parser.add_argument(
        "-k", "--max-distance", type=int, default=None, help="clipping distance k (default 3)"
    )
    parser.add_argument(
        "--tokens", default=None, help='label rows/columns, e.g. "I think therefore I am"'
    )
    parser.add_argument(
        "--format",
        choices=("table", "csv", "json"),
        default="table",
        help="a labelled table for reading (default), CSV or JSON for other programs",
    )
    parser.add_argument(
        "--2d",
        dest="two_d",
        action="store_true",
        help="print Swin's 2D window index instead (see --window)",
    )
    parser.add_argument(
        "--window", default=None, help="window size HxW for --2d (default 2x2; Swin uses 7x7)"
    )
    parser.add_argument(
        "--t5",
        action="store_true",
        help="list the distances j - i in each of T5's buckets instead (see --buckets, -k, "
        "--causal; -k is then T5's max_distance, default 128)",
    )
    parser.add_argument("--buckets", type=int, default=None, help="T5's num_buckets (default 32)")
    parser.add_argument(
        "--deberta",
        action="store_true",
        help="DeBERTa's relative row clamp(i - j + k, 0, 2k - 1) instead of Shaw's (with --length, "
        "--tokens, -k)",
    )
    parser.add_argument(
        "--causal", action="store_true", help="T5's unidirectional buckets (decoder self-attention)"
    )
    parser.set_defaults(func=run)


def format_index(
    index: list[list[int]], labels: list[str], k: int, fmt: str, *, deberta: bool = False
) -> str:
    """Render the index matrix with row/column labels as a table, CSV or JSON (Shaw's index, or
    DeBERTa's rows with ``deberta=True``)."""
    num_vectors = 2 * k if deberta else 2 * k + 1
    if fmt == "json":
        return json.dumps(
            {
                "scheme": "deberta" if deberta else "shaw",
                "max_distance": k,
                "tokens": labels,
                "num_vectors": num_vectors,
                "index": index,
            },
            indent=None,
        )
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["i\\j", *labels])
        for label, row in zip(labels, index, strict=True):
            writer.writerow([label, *row])
        return buffer.getvalue().rstrip("\n")
    width = max(len(str(num_vectors - 1)), *(len(label) for label in labels))
    row_head = max(len(label) for label in labels)
    vectors = f"{num_vectors} vector{'s' if num_vectors > 1 else ''}"
    if deberta:
        title = (
            f"DeBERTa's relative row clamp(i - j + {k}, 0, {2 * k - 1}): {vectors}, entry {k} is "
            f"the token itself, rows above {k} are earlier keys"
        )
    else:
        title = (
            f"relative index clip(j - i, {-k}, {k}) + {k}: {vectors}, entry {k} is the token itself"
        )
    lines = [
        title,
        " " * (row_head + 3) + " ".join(label.rjust(width) for label in labels),
        " " * (row_head + 3) + "-" * ((width + 1) * len(labels) - 1),
    ]
    for label, row in zip(labels, index, strict=True):
        lines.append(f"{label.rjust(row_head)} | " + " ".join(str(v).rjust(width) for v in row))
    return "\n".join(lines)


def parse_window(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
        raise ValueError(f"--window must look like HxW, e.g. 7x7, got {text!r}")
    window_h, window_w = (int(part) for part in parts)
    if window_h < 1 or window_w < 1:
        raise ValueError(f"--window sides must be >= 1, got {text!r}")
    return window_h, window_w


def format_window_index(index: list[list[int]], window_h: int, window_w: int, fmt: str) -> str:
    """Render Swin's window index; tokens are labelled ``y,x`` in row-major order."""
    rows = (2 * window_h - 1) * (2 * window_w - 1)
    centre = (window_h - 1) * (2 * window_w - 1) + window_w - 1
    labels = [f"{y},{x}" for y in range(window_h) for x in range(window_w)]
    if fmt == "json":
        return json.dumps(
            {"window": [window_h, window_w], "tokens": labels, "num_rows": rows, "index": index}
        )
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["i\\j", *labels])
        for label, row in zip(labels, index, strict=True):
            writer.writerow([label, *row])
        return buffer.getvalue().rstrip("\n")
    width = max(len(str(rows - 1)), *(len(label) for label in labels))
    row_head = max(len(label) for label in labels)
    lines = [
        f"Swin window index (dy + {window_h - 1})*{2 * window_w - 1} + (dx + {window_w - 1}), "
        f"dy = y_i - y_j, dx = x_i - x_j: {rows} table rows, entry {centre} is the token itself",
        " " * (row_head + 3) + " ".join(label.rjust(width) for label in labels),
        " " * (row_head + 3) + "-" * ((width + 1) * len(labels) - 1),
    ]
    for label, row in zip(labels, index, strict=True):
        lines.append(f"{label.rjust(row_head)} | " + " ".join(str(v).rjust(width) for v in row))
    return "\n".join(lines)


def t5_bucket_ranges(
    num_buckets: int, max_distance: int, bidirectional: bool
) -> list[tuple[int, int | None, int | None]]:
    """``(bucket, from, to)`` for each T5 bucket: the distances ``j - i`` in it run from ``from``
    to ``to`` (``None``: unbounded on that side; both ``None``: no distance uses the bucket)."""
    from ..schemes.t5 import t5_relative_bucket

    reach = 2 * max_distance + num_buckets  # every bucket is reached well inside this
    distances = torch.arange(-reach, reach + 1)
    buckets = t5_relative_bucket(
        distances, bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance
    )
    ranges = []
    for bucket in range(num_buckets):
        members = distances[buckets == bucket]
        if members.numel() == 0:
            ranges.append((bucket, None, None))
            continue
        low, high = int(members.min()), int(members.max())
        ranges.append((bucket, None if low == -reach else low, None if high == reach else high))
    return ranges


def format_t5_buckets(ranges, num_buckets: int, max_distance: int, causal: bool, fmt: str) -> str:
    """Render :func:`t5_bucket_ranges` as a table, CSV or JSON."""
    if fmt == "json":
        return json.dumps(
            {
                "num_buckets": num_buckets,
                "max_distance": max_distance,
                "bidirectional": not causal,
                "buckets": [{"bucket": b, "from": lo, "to": hi} for b, lo, hi in ranges],
            }
        )
    if fmt == "csv":
        lines = ["bucket,from,to"]
        lines += [
            f"{b},{'' if lo is None else lo},{'' if hi is None else hi}" for b, lo, hi in ranges
        ]
        return "\n".join(lines)

    def span(low, high) -> str:
        if low is None and high is None:
            return "(no distance: never used)"
        if low is None:
            return f"<= {high}"
        if high is None:
            return f">= {low}"
        return str(low) if low == high else f"{low} … {high}"

    kind = "causal" if causal else "bidirectional"
    lines = [
        f"T5 buckets ({kind}, {num_buckets} buckets, max_distance {max_distance}): the distances "
        "j - i each bucket holds; one learned scalar per head and bucket",
        " bucket  j - i",
    ]
    lines += [f"{b:>7}  {span(lo, hi)}" for b, lo, hi in ranges]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    # Flags of another picture would be silently ignored: refuse them instead.
    one_d = {"--tokens": args.tokens, "--length": args.length}
    pictures = [
        flag
        for flag, on in (("--2d", args.two_d), ("--t5", args.t5), ("--deberta", args.deberta))
        if on
    ]
    if len(pictures) > 1:
        raise ValueError(f"{' and '.join(pictures)} are different pictures: choose one")
    if args.two_d or args.t5:
        given = {**one_d, "-k": None if args.t5 else args.max_distance}
        given = [flag for flag, value in given.items() if value is not None]
        if given:
            mode = "--2d" if args.two_d else "--t5"
            verb = "does" if len(given) == 1 else "do"
            raise ValueError(f"{', '.join(given)} {verb} not apply with {mode}")
    if not args.two_d and args.window is not None:
        raise ValueError("--window sizes the 2D index: add --2d")
    if not args.t5 and (args.buckets is not None or args.causal):
        raise ValueError("--buckets and --causal describe T5's buckets: add --t5")
    if args.t5:
        num_buckets = 32 if args.buckets is None else args.buckets
        max_distance = 128 if args.max_distance is None else args.max_distance
        # T5RelativeBias's checks, in the words of these flags (it says num_buckets and
        # bidirectional): N/4 distances each way keep a bucket of their own (N/2 with --causal),
        # and the logarithmic buckets need at least one of them below where they start.
        exact = num_buckets // 2 if args.causal else num_buckets // 4
        if exact < 1:
            least = "2 with --causal" if args.causal else "4"
            raise ValueError(
                f"--buckets must be >= {least}: T5 keeps N/4 distances each way exact (N/2 with "
                f"--causal) and needs at least one, got {num_buckets}"
            )
        if max_distance <= exact:
            raise ValueError(
                f"-k (T5's max_distance, where its log buckets end) must be > {exact}, the "
                f"exact distances of --buckets {num_buckets}, got {max_distance}"
            )
        if 2 * max_distance + num_buckets > MAX_T5_REACH:
            raise ValueError(
                f"--t5 lists the buckets of every distance up to 2k + N: -k and --buckets must "
                f"keep 2k + N <= {MAX_T5_REACH}, got -k {max_distance}, --buckets {num_buckets}"
            )
        ranges = t5_bucket_ranges(num_buckets, max_distance, bidirectional=not args.causal)
        print(format_t5_buckets(ranges, num_buckets, max_distance, args.causal, args.format))
        return 0
    if args.two_d:
        from ..schemes.swin import swin_relative_position_index

        window_h, window_w = parse_window(args.window or "2x2")
        if window_h * window_w > MAX_PRINTED_LENGTH:
            raise ValueError(
                f"--window must hold at most {MAX_PRINTED_LENGTH} patches (the (Wh*Ww) x (Wh*Ww) "
                f"table is printed), got {args.window!r}"
            )
        index = swin_relative_position_index(window_h, window_w).tolist()
        print(format_window_index(index, window_h, window_w, args.format))
        return 0
    tokens = args.tokens.split() if args.tokens is not None else None
    if tokens == []:
        raise ValueError(f"--tokens must contain at least one token, got {args.tokens!r}")
    length = args.length
    if tokens is not None:
        if length is not None and length != len(tokens):
            raise ValueError(f"--length {length} does not match the {len(tokens)} --tokens given")
        length = len(tokens)
    length = 10 if length is None else length
    if not 0 < length <= MAX_PRINTED_LENGTH:
        raise ValueError(
            f"--length must be in 1..{MAX_PRINTED_LENGTH} (the L x L table is printed), "
            f"got {length}"
        )
    k = 3 if args.max_distance is None else args.max_distance
    if k > MAX_K:
        raise ValueError(f"-k must be <= 2**31 (it indexes a table of 2k + 1 rows), got {k}")
    labels = tokens or [str(i) for i in range(length)]
    if args.deberta:
        from ..schemes.deberta import deberta_relative_rows

        if k < 1:
            raise ValueError(f"-k must be >= 1 for --deberta (its table has 2k rows), got {k}")
        index = deberta_relative_rows(length, length, max_distance=k).tolist()
    else:
        if k < 0:
            raise ValueError(f"-k must be >= 0, got {k}")
        index = relative_position_index(length, length, k).tolist()
    print(format_index(index, labels, k, args.format, deberta=args.deberta))
    return 0
