"""``relpos predict``: run trained models on inputs of your own.

  relpos predict RUN_DIR 123456789012            a training run, or every scheme of a compare
  relpos predict runs/compare-X 1234 12345678901234 --scheme shaw
  relpos predict runs/kz-scan "jump twice after walk around left" --task scan

RUN_DIR is a training run folder (config.json + checkpoint) or a `relpos compare` folder: one run
per scheme variant (its lowest seed, or --seed), of --task's experiment or else the first one
with a run of --scheme (a scheme name such as shaw, not a label such as "shaw k=4"). A source is
whitespace-separated tokens ("jump twice", "3 1 4") or, for one word that is not a token, its
characters ("314" on the digit tasks); a character-level file task takes every character,
spaces included. Each source prints its expected output (where the task can compute one), its
length against the training range, and every model's greedy output marked ✓ or ✗ (on screen cut
at 120 tokens; --json has all).
"""

from __future__ import annotations

import argparse
import json

from .flags import check_run_folder

__all__ = ["register", "run", "format_predictions"]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="run trained models (a run or a compare folder) on inputs of your own",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="training run or compare folder")
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help="input(s) to decode")
    parser.add_argument(
        "--task", help="in a compare folder: which experiment (default: the first with --scheme)"
    )
    parser.add_argument("--scheme", help="only runs of this scheme (a name: shaw, t5, …)")
    parser.add_argument("--seed", type=int, help="in a compare folder: runs of this seed")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, mps")
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        help="decoding budget (default: the model's max_len; decoder-only: what it leaves after "
        "the source). A randomized model draws its decoder's positions for this many tokens, as "
        "its training drew them for the target and EOS: give it the expected output length + 1",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


#: tokens of one output shown on screen; --json has them all (a runaway output can be max_len).
SHOWN_TOKENS = 120


def _joined(tokens) -> str:
    """Digits as ``3141``, words as ``jump twice``: join with spaces unless every token is one
    character (a space token, from a character-level task, shows as ``␣``); at most
    :data:`SHOWN_TOKENS`, then how many more."""
    shown = [("␣" if t == " " else t) for t in tokens[:SHOWN_TOKENS]]
    text = "".join(shown) if all(len(t) == 1 for t in shown) else " ".join(shown)
    more = len(tokens) - SHOWN_TOKENS
    return text + (f" … (+{more} tokens)" if more > 0 else "")


def format_predictions(table, *, header: bool = True) -> str:
    """The plain-text report of a :class:`~relpos.experiments.predict.PredictionTable`
    (``header``: the task, its training lengths and the run folders first)."""
    lines = []
    if header:
        if table.train_lengths is not None:
            low, high = table.train_lengths
            trained = f"trained on lengths {low}–{high}"
        else:
            trained = "training lengths unknown"
        lines.append(f"task {table.task}, {trained}; runs:")
        for label, path in table.runs.items():
            lines.append(f"  {label}: {path}")
    width = max(len("expected"), *(len(label) for label in table.runs))
    for row in table.rows:
        if row.length is None:
            where = "the task gives no expected output for it"
        else:
            where = f"length {row.length}, {'seen' if row.seen else 'unseen'}"
        if lines:
            lines.append("")
        lines.append(f"{_joined(row.source)}  ({where})")
        if row.expected is not None:
            lines.append(f"  {'expected':<{width}}    {_joined(row.expected)}")
        for label in table.runs:
            if label in row.errors:
                lines.append(f"  {label:<{width}}  ! cannot decode it: {row.errors[label]}")
                continue
            # The mark before the output: a runaway output (SCAN's can run to hundreds of
            # tokens) would push a mark after it off the screen.
            mark = {True: "✓ ", False: "✗ ", None: ""}[row.correct(label)]
            output = row.outputs[label]
            text = _joined(output) if output else "(empty)"
            lines.append(f"  {label:<{width}}  {mark}{text}")
    scored = [row for row in table.rows if row.expected is not None]
    if len(scored) > 1:
        lines.append("")
        for label in table.runs:
            right = sum(bool(row.correct(label)) for row in scored)
            lines.append(f"{label}: {right} of {len(scored)} right")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..devices import available_device
    from ..experiments.predict import find_runs, predict_runs

    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    available_device(args.device, argument="--device")
    check_run_folder(
        args.run_dir, "`relpos predict`", picks={"--task": args.task, "--seed": args.seed}
    )
    runs = find_runs(args.run_dir, task=args.task, scheme=args.scheme, seed=args.seed)
    table = predict_runs(runs, args.sources, device=args.device, max_new_tokens=args.max_new_tokens)
    if args.json:
        print(json.dumps(table.to_dict(), indent=1, ensure_ascii=False))
    else:
        print(format_predictions(table))
    return 0
