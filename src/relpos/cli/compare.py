"""``relpos compare``: train position schemes side by side and test them on longer inputs.

With no arguments it runs the ``default`` preset (relpos.experiments.presets): an
encoder-decoder reverses digit strings of length 1-8 and is tested on 1-16, with the schemes
none, sinusoidal, learned and shaw (k = 4), 800 steps each, seeds 0, 1, 2 (about 2-5 minutes
on 2 CPU cores). It prints a table and writes results.json, table.md and accuracy.png into a
fresh run folder (runs/compare-<timestamp> unless --out is given). Flags change the default's
task, schemes, lengths and budget; see docs/experiments.md for the results and the presets.

Examples:
  relpos compare                                  # the default grid
  relpos compare --schemes none,shaw -k 2 --steps 300 --seeds 0
  relpos compare --schemes shaw,shaw:value_term=false,deberta -k 4   # options after colons
  relpos compare --task copy --train-lengths 1-8 --eval-lengths 1-16
  relpos compare --task addition --train-lengths 1-4 --eval-lengths 1-8   # lengths in digits
  relpos compare --schemes shaw,deberta -k 4 --steps 2400 --train-option lr=1e-3
  relpos compare --preset k-sweep                 # the paper's Table 2 analogue
"""

from __future__ import annotations

import argparse
import shlex
import sys

from .flags import check_k, check_output, clipping_distance, positive_int

__all__ = ["register", "run", "parse_range", "parse_list"]


def parse_range(text: str) -> tuple[int, int]:
    """``"1-8"`` → ``(1, 8)``; ``"5"`` → ``(5, 5)``."""
    parts = text.split("-")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or values[0] < 1 or values[1] < values[0]:
        raise argparse.ArgumentTypeError(
            f"expected a length range like 1-8 (two ints, 1 <= low <= high), got {text!r}"
        )
    return values[0], values[1]


def parse_list(text: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return items


def parse_scheme(text: str) -> tuple[str, dict]:
    """``"deberta:max_distance=4:p2c=false"`` → ``("deberta", {"max_distance": 4, "p2c": False})``.

    The options are checked by building the scheme, so a wrong name or value fails before any
    training, naming the item of ``--schemes`` it came from.
    """
    from .. import get_scheme
    from .train import parse_option

    name, *items = (part.strip() for part in text.split(":"))
    try:
        options = dict(map(parse_option, items))
        get_scheme(name, **options)
    except (TypeError, ValueError) as error:
        raise ValueError(f"--schemes item {text!r}: {error}") from None
    return name, options


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(item) for item in parse_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated non-negative ints like 0,1,2, got {text!r}"
        ) from None
    if any(seed < 0 for seed in seeds):
        raise argparse.ArgumentTypeError(f"seeds must be >= 0, got {text!r}")
    return seeds


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="train position schemes side by side; accuracy on seen and unseen lengths",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    grid = parser.add_argument_group("what to train (default: the built-in default experiment)")
    grid.add_argument(
        "--task",
        help="task name (relpos.tasks), or file:PATH for a TSV file; another task than the "
        "default's brings its own default lengths (add --train-lengths/--eval-lengths to set "
        "them)",
    )
    grid.add_argument(
        "--schemes",
        type=parse_list,
        help="comma-separated scheme names, e.g. none,sinusoidal,shaw; options after colons, "
        "e.g. shaw:value_term=false,deberta:c2p=false:max_distance=8",
    )
    grid.add_argument(
        "-k",
        "--max-distance",
        type=clipping_distance,
        help="clipping distance k for the schemes that clip (shaw, huang, deberta)",
    )
    grid.add_argument(
        "--train-lengths",
        type=parse_range,
        metavar="LOW-HIGH",
        help="training lengths, e.g. 1-8 (task options min/max_train_length; for addition, "
        "min/max_train_digits)",
    )
    grid.add_argument(
        "--eval-lengths",
        type=parse_range,
        metavar="LOW-HIGH",
        help="evaluation lengths, e.g. 1-16 (task option eval_lengths)",
    )
    grid.add_argument(
        "--task-option",
        dest="task_options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the task (repeatable), e.g. max_train_length=10 for file:PATH, "
        "split=length for scan, reverse_digits=true for addition",
    )
    grid.add_argument("--arch", choices=("encoder-decoder", "decoder", "encoder"))
    grid.add_argument(
        "--model-option",
        dest="model_options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a relpos.models.ModelConfig field for every run (repeatable), e.g. d_model=128, "
        "num_layers=3, dropout=0.0",
    )
    grid.add_argument(
        "--preset", help="a named experiment: default, k-sweep, kv-ablation, length-gen"
    )
    budget = parser.add_argument_group("budget and where it runs")
    budget.add_argument("--steps", type=positive_int, help="training steps per run")
    budget.add_argument("--seeds", type=_parse_seeds, help="comma-separated seeds, e.g. 0,1,2")
    budget.add_argument(
        "--train-option",
        dest="train_options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a relpos.training.TrainConfig field for every run (repeatable), e.g. lr=1e-3, "
        "batch_size=32, warmup_steps=100",
    )
    budget.add_argument("--device", help="cpu (default), cuda, cuda:1, mps, …")
    budget.add_argument(
        "--jobs",
        type=positive_int,
        help="training runs at a time, one process each (default: one per CPU core, at most 8; "
        "1 on a GPU); results do not depend on it",
    )
    output = parser.add_argument_group("output")
    output.add_argument("--out", help="run folder (default runs/compare-<timestamp>); must be new")
    output.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted or failed compare in --out (same flags: finished runs are "
        "kept, a changed setting is refused)",
    )
    output.add_argument("--quiet", action="store_true", help="no progress display, only the table")
    parser.set_defaults(func=run)


def build_experiments(args: argparse.Namespace) -> tuple[list, str]:
    """The experiments the flags ask for, and the preset name they start from."""
    from ..experiments import presets
    from ..experiments.compare import Variant
    from ..tasks import task_options
    from .train import parse_option

    name = args.preset or presets.DEFAULT_PRESET
    given_options = dict(parse_option(item, "--task-option") for item in args.task_options)
    grid_flags = {
        "--task": args.task,
        "--task-option": given_options or None,
        "--schemes": args.schemes,
        "--train-lengths": args.train_lengths,
        "--eval-lengths": args.eval_lengths,
        "-k": args.max_distance,
    }
    experiments = presets.get_preset(name)  # an unknown name lists the valid ones
    if args.preset and args.preset != presets.DEFAULT_PRESET:
        given = [flag for flag, value in grid_flags.items() if value is not None]
        if given:
            raise ValueError(
                f"--preset {args.preset} defines its own grid; it cannot be combined with "
                f"{', '.join(given)} (only with --steps, --seeds, --train-option, "
                "--model-option, --arch, --device, --jobs, --out)"
            )
    train_options = _config_options(args.train_options, "--train-option", "TrainConfig")
    model_options = _config_options(args.model_options, "--model-option", "ModelConfig")
    for field_name, flag, options in (
        ("steps", "--steps", train_options),
        ("device", "--device", train_options),
        ("arch", "--arch", model_options),
    ):
        if getattr(args, field_name) is not None and field_name in options:
            raise ValueError(
                f"{field_name} given twice ({flag} and an option {field_name}=...); give one"
            )
    for experiment in experiments:
        experiment.train.update(train_options)
        experiment.model.update(model_options)
        if args.task is not None:
            if args.task != experiment.task:
                # A different task: its own defaults, not the default task's length options.
                experiment.task_options = {}
            experiment.task = experiment.title = args.task
        experiment.task_options.update(given_options)
        accepted = task_options(experiment.task)
        for flag, value, wanted in (
            ("--train-lengths", args.train_lengths, {high for _, high in TRAIN_LENGTH_OPTIONS}),
            ("--eval-lengths", args.eval_lengths, {"eval_lengths"}),
        ):
            if value is not None and accepted is not None and not wanted & accepted:
                raise ValueError(
                    f"{flag}: task {experiment.task!r} takes no option for these lengths (a "
                    f"task like scan fixes them by its split); its options are: "
                    f"{', '.join(sorted(accepted))}"
                )
        if args.train_lengths is not None:
            low, high = args.train_lengths
            low_option, high_option = _train_length_options(accepted)
            if low > 1 or accepted is None or low_option in accepted:
                experiment.task_options[low_option] = low  # else 1-N: nothing to set
            experiment.task_options[high_option] = high
        if args.eval_lengths is not None:
            low, high = args.eval_lengths
            experiment.task_options["eval_lengths"] = list(range(low, high + 1))
            for option in ("max_eval_length", "max_eval_digits"):  # eval_lengths replaces them
                experiment.task_options.pop(option, None)
        if args.schemes is not None:
            experiment.variants = [Variant(*parse_scheme(item)) for item in args.schemes]
        if args.max_distance is not None:
            # -k replaces a preset's k, but not one written out in --schemes.
            _apply_k(experiment, args.max_distance, keep_given=args.schemes is not None)
        if args.arch is not None:
            experiment.model["arch"] = args.arch
        if args.steps is not None:
            experiment.train["steps"] = args.steps
        if args.seeds is not None:
            experiment.seeds = list(args.seeds)
    return experiments, name


#: the task options ``--train-lengths LOW-HIGH`` sets, by what a task's lengths count: symbols
#: (copy, reverse, a file) or digits (addition, whose length is its longer operand's digit count).
TRAIN_LENGTH_OPTIONS = (
    ("min_train_length", "max_train_length"),
    ("min_train_digits", "max_train_digits"),
)


def _train_length_options(accepted: frozenset[str] | None) -> tuple[str, str]:
    """The (min, max) option names of ``TRAIN_LENGTH_OPTIONS`` a task with options ``accepted``
    takes; the first pair when it takes none (then building the task names the unknown option)."""
    for low_option, high_option in TRAIN_LENGTH_OPTIONS:
        if accepted is not None and high_option in accepted:
            return low_option, high_option
    return TRAIN_LENGTH_OPTIONS[0]


#: what compare sets per run (or by its own flags), so a --train-option/--model-option may not.
_PER_RUN = {
    "task": "--task", "task_options": "--task-option", "seed": "--seeds", "model": "--model-option",
    "scheme": "--schemes", "scheme_options": "--schemes (options after colons)",
}  # fmt: skip


def _config_options(items: list[str], flag: str, config: str) -> dict:
    """``KEY=VALUE`` items of ``flag`` as a dict, each key a field of ``config``."""
    import dataclasses

    from ..models import ModelConfig
    from ..training import TrainConfig
    from .train import parse_option

    fields = {
        f.name for f in dataclasses.fields(TrainConfig if config == "TrainConfig" else ModelConfig)
    }
    options = {}
    for item in items:
        key, value = parse_option(item, flag)
        if key in _PER_RUN:
            raise ValueError(f"{flag} {item!r}: compare sets {key} per run; use {_PER_RUN[key]}")
        if key not in fields:
            valid = ", ".join(sorted(fields - set(_PER_RUN)))
            raise ValueError(f"{flag} {item!r}: {config} has no field {key!r}; its fields: {valid}")
        options[key] = value
    return options


#: schemes whose ``max_distance`` is a clipping distance k (T5's is where its log buckets end).
CLIPPED_SCHEMES = ("shaw", "huang", "deberta")


def _apply_k(experiment, k: int, *, keep_given: bool = False) -> None:
    from .. import get_scheme
    from ..experiments.compare import Variant

    for variant in experiment.variants:
        get_scheme(variant.scheme)  # an unknown name raises, listing the valid ones
    if not any(v.scheme in CLIPPED_SCHEMES for v in experiment.variants):
        raise ValueError(
            f"-k {k} given, but none of the schemes "
            f"({', '.join(v.scheme for v in experiment.variants)}) has a clipping distance "
            f"(those that do: {', '.join(CLIPPED_SCHEMES)})"
        )
    variants = []
    for v in experiment.variants:
        if v.scheme in CLIPPED_SCHEMES and not (keep_given and "max_distance" in v.options):
            v = Variant(v.scheme, {**v.options, "max_distance": k})
            check_k(k, v.scheme, v.options)  # DeBERTa's k >= 1: before any run starts
        variants.append(v)
    experiment.variants = variants


def _command_line(args: argparse.Namespace) -> str:
    """The flags as given (recorded in results.json so a run can be repeated)."""
    flags = {
        "--preset": args.preset,
        "--task": args.task,
        "--schemes": args.schemes,
        "-k": args.max_distance,
        "--train-lengths": args.train_lengths,
        "--eval-lengths": args.eval_lengths,
        "--arch": args.arch,
        "--steps": args.steps,
        "--seeds": args.seeds,
        "--device": args.device,
        "--jobs": args.jobs,
        "--out": args.out,
    }
    words = ["relpos", "compare"]
    for flag, value in flags.items():
        if value is None:
            continue
        if flag.endswith("lengths"):
            value = f"{value[0]}-{value[1]}"
        elif isinstance(value, list):
            value = ",".join(map(str, value))
        words += [flag, str(value)]
    for flag, options in (
        ("--task-option", args.task_options),
        ("--train-option", args.train_options),
        ("--model-option", args.model_options),
    ):
        for option in options:
            words += [flag, option]
    words += [flag for flag in ("--resume", "--quiet") if getattr(args, flag[2:])]
    return shlex.join(words)


def _print_unseen_examples(console, results: dict) -> None:
    """Under the table, one input of an unseen length per experiment and what each variant's
    first model made of it: the table's numbers as one concrete case."""
    from ..experiments.predict import unseen_example
    from .predict import format_predictions

    for experiment in results["experiments"]:
        try:
            table = unseen_example(results["out"], experiment)
        except (ValueError, FileNotFoundError):  # an unfinished or unloadable run: no example
            continue
        if table is None:
            continue
        seeds = sorted({run["seed"] for run in experiment["runs"]})
        console.print(
            f"{experiment['task']}: one input of the shortest unseen length, each variant's seed-"
            f"{seeds[0]} model (relpos predict {results['out']} SOURCE tries yours):",
            highlight=False,
            soft_wrap=True,
        )
        console.print(
            format_predictions(table, header=False), highlight=False, soft_wrap=True, markup=False
        )


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..devices import available_device
    from ..experiments.compare import format_table, run_compare

    if args.device is not None:
        available_device(args.device, argument="--device")  # run_compare would say device=
    if args.out is not None:
        check_output(args.out, "--out", folder=True)
    experiments, preset = build_experiments(args)
    # Piped into a file or `tee`, rich would wrap the table at 80 columns, splitting names.
    console = Console(width=None if sys.stdout.isatty() else 160)
    command = _command_line(args)
    if args.resume and args.out is None:
        raise ValueError("--resume needs --out: the run folder to continue")
    log = None if args.quiet else (lambda message: console.print(message, highlight=False))
    results = run_compare(
        experiments,
        args.out,
        device=args.device,
        progress=not args.quiet,
        resume=args.resume,
        command=command,
        preset=preset,
        log=log,
        jobs=args.jobs,
    )
    for table in format_table(results):
        console.print(table)
    out = results["out"]
    _print_unseen_examples(console, results)
    console.print(
        f"{results['seconds']:.0f} s in all. Wrote {out}/results.json, table.md, accuracy.png "
        f"(relpos plot accuracy {out} redraws it; relpos predict {out} SOURCE runs its "
        "models on an input of yours)",
        highlight=False,
        soft_wrap=True,  # never break a path in two: it is meant to be copied
    )
    return 0
