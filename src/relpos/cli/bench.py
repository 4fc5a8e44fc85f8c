"""``relpos bench``: time the attention backends against SDPA without positions.

Prints, per sequence length and backend, the median time of a forward + backward call, its ratio
to SDPA's, and the peak memory the call allocates; ``--json`` also writes every timing. The
defaults are issue 2's setting: float32, B = 1, H = 4, D = 64, k = 16, shared tables, key and
value terms. Other processes on the machine slow every row; the backends are timed in turns so
that the ratios stay comparable, but run it on a quiet machine for absolute numbers. On a busy
CPU, OpenMP's default wait stalls the many-op eager path far more than SDPA: there, run
``OMP_WAIT_POLICY=passive relpos bench`` or use ``--threads 1`` (see benchmarks/RESULTS.md).

``--schemes`` times the attention of position schemes instead (what each costs over SDPA):

  relpos bench --schemes all --lengths 512,1024
  relpos bench --schemes deberta,t5:num_buckets=64 --backends sdpa,flex --fwd-only
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .compare import parse_list
from .flags import (
    check_k,
    check_output,
    clipping_distance,
    non_negative_int,
    positive_int,
    probability,
)

__all__ = ["register", "run"]


#: the longest --lengths entry: an L x L score matrix is far past any memory long before this,
#: and past 2**63 torch cannot even hold the size ("Overflow when unpacking long long")
MAX_LENGTH = 2**31


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 512,1024, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one length")
    if not all(1 <= value <= MAX_LENGTH for value in values):
        raise argparse.ArgumentTypeError(
            f"expected sequence lengths in 1..2**31 like 512,1024, got {text!r}"
        )
    return values


def _schemes(items: list[str], max_distance: int) -> tuple[tuple[str, dict], ...]:
    """``--schemes`` as (name, options) pairs; ``all``: every scheme with an attention term."""
    from .. import available_schemes, get_scheme
    from .compare import CLIPPED_SCHEMES, parse_scheme

    if items == ["all"]:
        pairs = [
            (name, {})
            for name in available_schemes()
            if get_scheme(name).attention_position(1, 8, causal=False) is not None
        ]
    else:
        pairs = [parse_scheme(item) for item in items]
        for item, (name, options) in zip(items, pairs, strict=True):
            if get_scheme(name, **options).attention_position(1, 8, causal=False) is None:
                raise ValueError(
                    f"--schemes item {item!r} adds its positions to the input: its attention is "
                    "SDPA's, with nothing of its own to time"
                )
    result = []
    for name, options in pairs:
        if name in CLIPPED_SCHEMES and "max_distance" not in options:
            options = {"max_distance": max_distance, **options}
            check_k(max_distance, name, options)
        result.append((name, options))
    return tuple(result)


def _backends(text: str, schemes: bool) -> tuple[str, ...]:
    """``--backends`` as names, each one a backend of Shaw's attention (or ``sdpa``, the
    baseline), or with ``schemes`` one that a scheme's ``attend`` takes."""
    from ..attention import available_backends
    from ..attention.flex_bias import BIAS_BACKENDS
    from ..bench import BASELINE

    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:  # "," once timed every default backend, as if --backends were not given
        raise ValueError(f"--backends must name at least one backend, got {text!r}")
    if schemes:
        valid = sorted({*BIAS_BACKENDS, *available_backends()})
    else:
        valid = [BASELINE, *available_backends()]
    unknown = [name for name in names if name not in valid]
    if unknown:
        raise ValueError(
            f"--backends: unknown backend(s) {', '.join(unknown)}; valid names: {', '.join(valid)}"
        )
    return names


def register(subparsers) -> None:
    from ..bench import BenchConfig

    defaults = BenchConfig()
    parser = subparsers.add_parser(
        "bench",
        help="time the attention backends against SDPA",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--device", default=defaults.device, help="cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--dtype", default=defaults.dtype, choices=("float32", "float64", "bfloat16", "float16")
    )
    parser.add_argument(
        "--lengths",
        type=_int_list,
        default=defaults.lengths,
        help="sequence lengths, e.g. 512,1024,2048 (default: %(default)s)",
    )
    parser.add_argument("-B", "--batch", type=positive_int, default=defaults.batch)
    parser.add_argument("-H", "--heads", type=positive_int, default=defaults.heads)
    parser.add_argument("-D", "--head-dim", type=positive_int, default=defaults.head_dim)
    parser.add_argument(
        "-k", "--max-distance", type=clipping_distance, default=defaults.max_distance
    )
    tables = parser.add_mutually_exclusive_group()
    tables.add_argument(
        "--shared",
        dest="shared",
        action="store_true",
        default=defaults.shared,
        help="one table for all heads (default)",
    )
    tables.add_argument("--per-head", dest="shared", action="store_false", help="a table per head")
    parser.add_argument(
        "--repeats", type=positive_int, default=defaults.repeats, help="timed calls each"
    )
    parser.add_argument(
        "--reference-repeats",
        type=positive_int,
        default=defaults.reference_repeats,
        help="timed calls of the slow paper-literal reference (default: %(default)s)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=defaults.warmup,
        help="untimed calls of each backend first, >= 1: a first call compiles and allocates "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--backends",
        default=None,
        help="comma-separated names, 'sdpa' for the baseline (default: sdpa and every backend "
        "that applies on the device)",
    )
    parser.add_argument(
        "--schemes",
        default=None,
        type=parse_list,
        help="time these position schemes' attention instead of Shaw's backends: "
        "comma-separated names with options after colons (t5:num_buckets=64), or 'all'; "
        "-k sets k of the schemes that clip unless an item gives it; --backends then names "
        "what each scheme's attend is asked for (default auto)",
    )
    parser.add_argument(
        "--fwd-only", action="store_true", help="time the forward only (under no_grad)"
    )
    parser.add_argument(
        "--dropout",
        type=probability,
        default=defaults.dropout,
        metavar="P",
        help="attention dropout for SDPA and every Shaw backend, as in training (default: "
        "%(default)s; the Triton kernels draw it themselves, eager an L x L mask)",
    )
    parser.add_argument(
        "--reference-max-length",
        type=non_negative_int,
        default=defaults.reference_max_length,
        help="skip the paper-literal reference above this length (default: %(default)s)",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory call")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write results")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..bench import (
        BenchConfig,
        check_config,
        format_table,
        name_column,
        run_benchmark,
        scheme_label,
    )
    from ..devices import available_device

    # BenchConfig's checks would name its fields (device, ...), and --json's folder would only
    # fail after the timing.
    available_device(args.device, argument="--device")
    if args.json is not None:
        check_output(args.json, "--json", folder=False)
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    backends = None
    if args.backends is not None:
        backends = _backends(args.backends, schemes=args.schemes is not None)
    if args.dropout and args.schemes is not None:
        raise ValueError("--dropout times Shaw's backends and SDPA; leave it out with --schemes")
    if args.dropout and backends is not None and "flex" in backends:
        raise ValueError(
            "--dropout: backend 'flex' has none (FlexAttention has no dropout; it would run the "
            "eager path): leave flex out of --backends, or time it without --dropout"
        )
    config = BenchConfig(
        schemes=None if args.schemes is None else _schemes(args.schemes, args.max_distance),
        lengths=args.lengths,
        batch=args.batch,
        heads=args.heads,
        head_dim=args.head_dim,
        max_distance=args.max_distance,
        shared=args.shared,
        dtype=args.dtype,
        device=args.device,
        repeats=args.repeats,
        reference_repeats=args.reference_repeats,
        warmup=args.warmup,
        backends=backends,
        backward=not args.fwd_only,
        dropout=args.dropout,
        reference_max_length=args.reference_max_length,
        memory=not args.no_memory,
    )
    if args.warmup < 1:
        raise ValueError(
            f"--warmup must be >= 1, got {args.warmup}: a backend's first call compiles and "
            "allocates, and timing it would make the ratios meaningless"
        )
    check_config(config)  # bad settings fail before the table's header is printed
    mode = "forward" if args.fwd_only else "forward+backward"
    setting = f"k={config.max_distance}, " + (
        "shared tables" if config.shared else "per-head tables"
    )
    if config.dropout:
        setting += f", dropout {config.dropout}"
    if config.schemes is not None:  # k is in each label; Shaw's tables are the scheme's option
        setting = "each scheme as a model builds it"
    print(
        f"relpos bench: {config.device} {config.dtype}, B={config.batch} H={config.heads} "
        f"D={config.head_dim}, {setting}, {mode}, "
        f"median of {config.repeats} calls, {torch.get_num_threads()} threads"
    )
    if config.schemes is not None:
        names = ", ".join(scheme_label(name, options) for name, options in config.schemes)
        print(f"schemes: {names}; attend(backend={', '.join(check_config(config)[1])})")
    print(format_table([], header=True, column=name_column(config)))
    results = run_benchmark(config, progress=lambda line: print(line, flush=True))
    load = results["load_average"]
    print(f"load average before/after: {load['before']} / {load['after']}", file=sys.stderr)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0
