"""``relpos plot``: figures that explain position representations (PNG files).

  relpos plot sinusoidal                 the sinusoidal encoding as a heatmap, and PE(p)·PE(q)
  relpos plot randomized                 Ruoss et al.'s random sorted positions against 0, 1, 2, …,
                                         and how often training reaches each position
                                         (--length: the longest training length, default 8)
  relpos plot index                      the relative index matrix (the seed's: length 10, k = 3)
  relpos plot distances                  what each relative scheme makes of the distance j − i
  relpos plot window                     Swin's 2D window index, and the table rows one query
                                         patch reads (--window 4x4 --query 1,2)
  relpos plot vectors RUN_DIR            cosine similarity of a trained model's 2k+1 key vectors
  relpos plot attention RUN_DIR          a trained model's attention maps on one example
                                         (--source "123456789012": on an input of your own)
  relpos plot accuracy RUN_DIR           accuracy vs. length from a `relpos compare` folder

RUN_DIR for vectors/attention is a training run folder (config.json + checkpoint) or a compare
folder (the first run with a matching scheme is used). Each writes a PNG (--out: .png, .pdf or
.svg; default: the figure's name, in RUN_DIR when there is one, else in the current folder;
options that change a figure go into its default name, e.g. accuracy-token.png, so that the
figure `relpos compare` wrote is not replaced).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .flags import check_output, check_run_folder, clipping_distance, positive_int
from .show import parse_window

__all__ = ["register", "run"]

FIGURES = (
    "sinusoidal",
    "randomized",
    "index",
    "distances",
    "window",
    "vectors",
    "attention",
    "accuracy",
)
#: the longest training length `randomized` draws (its range is 8 times that).
MAX_RANDOMIZED_LENGTH = 64


def _parse_query(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.split(",")
    if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
        raise ValueError(f"--query must look like y,x (e.g. 1,2), got {text!r}")
    return int(parts[0]), int(parts[1])


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "plot",
        help="draw a figure (PNG): " + ", ".join(FIGURES),
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("figure", choices=FIGURES, metavar="FIGURE", help=", ".join(FIGURES))
    parser.add_argument("run_dir", nargs="?", help="run folder (vectors, attention, accuracy)")
    parser.add_argument("--out", help="file to write (.png, .pdf or .svg)")
    parser.add_argument(
        "--length",
        type=positive_int,
        help="sequence length (sinusoidal, index, attention); for distances, the largest |j − i|; "
        "for randomized, the longest training length",
    )
    parser.add_argument(
        "-k",
        "--max-distance",
        type=clipping_distance,
        default=None,
        help="k for `index` (default 3) and `distances` (default 4, at least 1)",
    )
    parser.add_argument("--tokens", help='label the index matrix, e.g. "I think therefore I am"')
    parser.add_argument(
        "--dim", type=positive_int, default=64, help="encoding size for `sinusoidal`"
    )
    parser.add_argument(
        "--metric",
        choices=("exact", "token", "tf_token"),
        default="exact",
        help="for `accuracy`: exact match, token accuracy, or token accuracy teacher-forced",
    )
    parser.add_argument("--seed", type=int, default=0, help="which example `attention` draws")
    parser.add_argument("--window", help="for `window`: its size HxW (default 4x4)")
    parser.add_argument(
        "--query", help="for `window`: the query patch y,x (default: the window's centre)"
    )
    parser.add_argument(
        "--source",
        help='for `attention`: an input of your own, not a drawn example, e.g. "123456789012"',
    )
    parser.add_argument(
        "--scheme",
        help="in a compare folder, plot the first run of this scheme (default: shaw if present)",
    )
    parser.add_argument(
        "--task",
        help="in a compare folder of several tasks, plot a run of this task (default: the first)",
    )
    parser.set_defaults(func=run)


def default_name(args: argparse.Namespace) -> str:
    """The figure's name, plus the options that change a run folder's figure: ``accuracy``
    (what ``relpos compare`` writes) and ``accuracy-token`` are different files."""
    parts = [args.figure]
    if args.figure == "accuracy" and args.metric != "exact":
        parts.append(args.metric)
    if args.figure in ("vectors", "attention") and args.task is not None:
        from ..experiments.compare import slug

        parts.append(slug(args.task))
    if args.figure in ("vectors", "attention") and args.scheme is not None:
        parts.append(args.scheme)
    if args.figure == "attention":
        if args.length is not None:
            parts.append(f"L{args.length}")
        if args.seed != 0:
            parts.append(f"seed{args.seed}")
        if args.source is not None:
            from ..experiments.compare import slug

            parts.append(slug(args.source)[:40])
    return "-".join(parts)


def run(args: argparse.Namespace) -> int:
    from ..experiments import plots

    needs_run = args.figure in ("vectors", "attention", "accuracy")
    # A flag that another figure reads would be silently ignored here: refuse it instead.
    for flag, value, figures in (
        ("--tokens", args.tokens, ("index",)),
        ("--scheme", args.scheme, ("vectors", "attention")),
        ("--length", args.length, ("sinusoidal", "randomized", "index", "distances", "attention")),
        ("-k", args.max_distance, ("index", "distances")),
        ("--source", args.source, ("attention",)),
        ("--task", args.task, ("vectors", "attention")),
        ("--window", args.window, ("window",)),
        ("--query", args.query, ("window",)),
    ):
        if value is not None and args.figure not in figures:
            only = ", ".join(figures)
            raise ValueError(f"{flag} does not apply to `{args.figure}` (only {only})")
    if needs_run and args.run_dir is None:
        what = "a `relpos train` run folder or a `relpos compare` folder"
        if args.figure == "accuracy":
            what = "a `relpos compare` folder"
        raise ValueError(f"`relpos plot {args.figure}` needs a RUN_DIR: {what}")
    if not needs_run and args.run_dir is not None:
        raise ValueError(f"`relpos plot {args.figure}` takes no RUN_DIR, got {args.run_dir!r}")
    if needs_run:
        check_run_folder(
            args.run_dir,
            f"`relpos plot {args.figure}`",
            compare_only=args.figure == "accuracy",
            picks={"--task": args.task},
        )
    # The figure functions check these too, but name their keywords (length, out), not the flags.
    if args.out is not None:
        if Path(args.out).suffix.lower() not in plots.FORMATS:
            raise ValueError(f"--out must end in .png, .pdf or .svg, got {args.out!r}")
        check_output(args.out, "--out", folder=False)
    if args.figure in ("sinusoidal", "index"):
        for flag, value in (("--length", args.length), ("--dim", args.dim)):
            if value is not None and value > plots.MAX_FIGURE_LENGTH:
                raise ValueError(
                    f"{flag} must be an int in 1..{plots.MAX_FIGURE_LENGTH}, got {value} (the "
                    "figure draws a panel of that many rows)"
                )
    if args.tokens is not None and not args.tokens.split():
        raise ValueError(f"--tokens must contain at least one token, got {args.tokens!r}")
    default_dir = Path(args.run_dir) if needs_run else Path(".")
    out = Path(args.out) if args.out else default_dir / f"{default_name(args)}.png"

    if args.figure == "sinusoidal":
        path = plots.plot_sinusoidal(out, length=args.length or 64, dim=args.dim)
    elif args.figure == "randomized":
        length = args.length or 8
        if length > MAX_RANDOMIZED_LENGTH:
            raise ValueError(
                f"--length (the longest training length) must be <= {MAX_RANDOMIZED_LENGTH} for "
                f"`randomized`, got {length}"
            )
        # The range docs/experiments.md uses: four times the test length, twice the training one.
        path = plots.plot_randomized(out, train_length=length, max_position=8 * length)
    elif args.figure == "index":
        tokens = args.tokens.split() if args.tokens is not None else None
        k = 3 if args.max_distance is None else args.max_distance
        path = plots.plot_index(out, length=args.length or 10, max_distance=k, tokens=tokens)
    elif args.figure == "distances":
        k = 4 if args.max_distance is None else args.max_distance
        if k < 1:  # DeBERTa's panel: its table has 2k rows
            raise ValueError(f"-k must be >= 1 for `distances` (DeBERTa's 2k rows), got {k}")
        span = args.length or 48
        if span > plots.MAX_FIGURE_LENGTH:  # plot_distances would name it span, not --length
            raise ValueError(
                f"--length (the largest |j − i| drawn) must be <= {plots.MAX_FIGURE_LENGTH}, "
                f"got {span}"
            )
        path = plots.plot_distances(out, span=span, max_distance=k)
    elif args.figure == "window":
        window_h, window_w = parse_window(args.window or "4x4")
        if max(window_h, window_w) > 16:
            raise ValueError(f"--window sides must be <= 16 to draw, got {window_h}x{window_w}")
        query = _parse_query(args.query)
        if query is not None and not (query[0] < window_h and query[1] < window_w):
            raise ValueError(
                f"--query {args.query} is outside the {window_h}x{window_w} window: y must be in "
                f"0..{window_h - 1} and x in 0..{window_w - 1}"
            )
        path = plots.plot_window(out, window=(window_h, window_w), query=query)
    elif args.figure == "accuracy":
        path = plots.plot_accuracy(args.run_dir, out, metric=args.metric)
    elif args.figure == "vectors":
        path = plots.plot_run_vectors(
            plots.find_run(args.run_dir, scheme=args.scheme or "shaw", task=args.task), out
        )
    else:
        run_dir = args.run_dir
        try:
            run_dir = plots.find_run(run_dir, scheme=args.scheme or "shaw", task=args.task)
        except ValueError:
            if args.scheme is not None:
                raise
            run_dir = plots.find_run(run_dir, task=args.task)  # no shaw run: the first one
        if args.source is not None and (args.length is not None or args.seed != 0):
            raise ValueError("--source is the example itself: give it without --length or --seed")
        path = plots.plot_run_attention(
            run_dir, out, length=args.length, seed=args.seed, source=args.source
        )
    print(f"wrote {path}")
    return 0
