"""``relpos train``: train one model on one task and print its accuracy per length.

Every field of ``TrainConfig`` and ``ModelConfig`` is a flag (``--batch-size``, ``--d-model``, …)
whose default is the dataclass's; options of the task and the scheme are ``KEY=VALUE`` pairs
(``--scheme-option max_distance=4``, or ``-k 4`` for short). Runs unchanged under torchrun::

    relpos train --task reverse --scheme shaw -k 16 --steps 2000
    torchrun --nproc_per_node=2 -m relpos train --task reverse --run-dir runs/ddp
    torchrun --nproc_per_node=2 -m relpos train --run-dir runs/ddp --resume   # after a stop

(a run resumes with the process count it was trained with: each process draws its own dropout
masks, so another count would continue as another run, and is refused).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import typing
from pathlib import Path

from .flags import check_k, check_output, clipping_distance, non_negative_int, positive_int

__all__ = ["register", "run", "config_from_args", "parse_option"]

#: dict-valued fields, set with repeatable ``KEY=VALUE`` flags instead.
_OPTION_FLAGS = {"task_options": "--task-option", "scheme_options": "--scheme-option"}

#: fields whose check speaks of None (not giving the flag), and would say "must be None or ..."
_FLAG_TYPES = {"threads": positive_int, "init_seed": non_negative_int}


def parse_option(text: str, flag: str | None = None) -> tuple[str, object]:
    """``"max_distance=4"`` → ``("max_distance", 4)``; values are JSON if they parse, else text.
    ``flag`` (``--task-option``) names where ``text`` came from in the error."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"{flag + ': ' if flag else ''}expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _flag_type(hint) -> type:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _choices() -> dict[str, tuple[str, ...]]:
    """Fields with a fixed set of values, so that ``--help`` lists them."""
    from .. import available_schemes
    from ..models import ACTIVATIONS, ARCHS
    from ..tasks import available_tasks
    from ..training.precision import PRECISIONS

    return {
        "precision": PRECISIONS,
        "arch": ARCHS,
        "activation": ACTIVATIONS,
        "scheme": tuple(available_schemes()),
        "task": (*available_tasks(), "file:PATH"),
    }


def _add_dataclass_flags(group, cls, prefix: str) -> None:
    hints = typing.get_type_hints(cls)
    choices = _choices()
    for f in dataclasses.fields(cls):
        if f.name == "model" or f.name in _OPTION_FLAGS:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = _FLAG_TYPES.get(f.name) or _flag_type(hints[f.name])
        dest = f"{prefix}{f.name}"
        if kind is bool:
            group.add_argument(
                flag,
                dest=dest,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"(default: {f.default})",
            )
        else:
            listed = f"{', '.join(choices[f.name])}; " if f.name in choices else ""
            group.add_argument(
                flag,
                dest=dest,
                type=kind,
                default=None,
                metavar=f.name.upper(),
                help=f"({listed}default: {f.default})",
            )


def register(subparsers) -> None:
    from ..models import ModelConfig
    from ..training import TrainConfig

    parser = subparsers.add_parser(
        "train",
        help="train one model on one task, evaluate accuracy per length",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run_group = parser.add_argument_group("run folder")
    run_group.add_argument(
        "--run-dir", default=None, help="default: runs/train/TASK-ARCH-SCHEME-seedSEED"
    )
    run_group.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --run-dir from its last checkpoint (a folder without one "
        "starts the run afresh), with its saved "
        "settings (flags given again may change only --device, --eval-batch-size, "
        "--checkpoint-every, --threads: the rest, --steps included, would change the run)",
    )
    run_group.add_argument(
        "--overwrite", action="store_true", help="start the run in an existing --run-dir again"
    )
    run_group.add_argument("--no-progress", action="store_true", help="no progress bar")
    run_group.add_argument("--json", action="store_true", help="print the metrics as JSON")
    train_group = parser.add_argument_group("training (TrainConfig)")
    _add_dataclass_flags(train_group, TrainConfig, "train.")
    train_group.add_argument(
        "--task-option",
        dest="task_options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="option of the task (repeatable)",
    )
    model_group = parser.add_argument_group("model (ModelConfig)")
    _add_dataclass_flags(model_group, ModelConfig, "model.")
    model_group.add_argument(
        "--scheme-option",
        dest="scheme_options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="option of the position scheme (repeatable)",
    )
    model_group.add_argument(
        "-k",
        "--max-distance",
        dest="max_distance",
        type=clipping_distance,
        default=None,
        help="shorthand for --scheme-option max_distance=K",
    )
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace, base=None):
    """A ``TrainConfig``: ``base`` (default: the dataclass defaults) with the flags given. Its
    checks' errors name the flags (``--batch-size``), not the fields (``batch_size``)."""
    from ..training import TrainConfig

    base = base if base is not None else TrainConfig()
    given = {key: value for key, value in vars(args).items() if value is not None}
    model_fields = {k.removeprefix("model."): v for k, v in given.items() if k.startswith("model.")}
    train_fields = {k.removeprefix("train."): v for k, v in given.items() if k.startswith("train.")}
    scheme_options = {
        **base.model.scheme_options,
        **dict(parse_option(item, "--scheme-option") for item in args.scheme_options),
    }
    if args.max_distance is not None:
        scheme_options["max_distance"] = args.max_distance
    task_options = {
        **base.task_options,
        **dict(parse_option(item, "--task-option") for item in args.task_options),
    }
    try:
        model = dataclasses.replace(base.model, **model_fields, scheme_options=scheme_options)
        return dataclasses.replace(base, **train_fields, task_options=task_options, model=model)
    except (TypeError, ValueError) as error:
        raise type(error)(_in_flags(str(error))) from None


def _in_flags(message: str) -> str:
    """A ``TrainConfig``/``ModelConfig`` check's message with its field names written as the flags
    that set them: ``batch_size must be >= 1`` → ``--batch-size must be >= 1``."""
    from ..models import ModelConfig
    from ..training import TrainConfig

    fields = {f.name for cls in (TrainConfig, ModelConfig) for f in dataclasses.fields(cls)}
    fields -= {"model", *_OPTION_FLAGS}

    def flag(match: re.Match) -> str:
        name = match.group(0)
        return "--" + name.replace("_", "-") if name in fields else name

    # The first word is the field checked; elsewhere only names with an underscore (num_heads):
    # a field such as steps, seed or scheme may be a plain word of the sentence there.
    subject, space, rest = message.partition(" ")
    return re.sub(r"^\w+$", flag, subject) + space + re.sub(r"\b[a-z]+(?:_[a-z]+)+\b", flag, rest)


def _check_k(k: int, scheme: str, options: dict) -> None:
    """-k's value must suit the scheme; an error that is not -k's (an unknown scheme, another
    option's value) is left to ``train``, which words it as the library does."""
    from .. import get_scheme

    others = {key: value for key, value in options.items() if key != "max_distance"}
    try:
        get_scheme(scheme, **others)
    except (TypeError, ValueError):
        return
    check_k(k, scheme, options)


def _format_metrics(metrics: dict) -> str:
    def pct(value) -> str:
        return "   -" if value is None else f"{100 * value:5.1f}"

    lines = [" length  seen   exact%  token%  tf-token%  count"]
    for length, row in metrics["by_length"].items():
        lines.append(
            f"{length:>7}  {'yes' if row['seen'] else 'no ':>4}  {pct(row['exact'])}   "
            f"{pct(row['token'])}   {pct(row['tf_token'])}     {row['count']:>5}"
        )
    for group in ("seen", "unseen"):
        row = metrics[group]
        lines.append(
            f"{group:>7}        {pct(row['exact'])}   {pct(row['token'])}   "
            f"{pct(row['tf_token'])}     {row['count']:>5}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..devices import available_device
    from ..experiments.compare import slug
    from ..training import TrainConfig, train

    if args.resume and args.overwrite:
        raise ValueError(
            "--resume continues the run in --run-dir and --overwrite starts it again: pass one"
        )
    config = config_from_args(args)
    if given_device := getattr(args, "train.device"):
        available_device(given_device, argument="--device")  # it would say device=
    # One folder name, whatever the task is called (file:../data.tsv must not climb out).
    name = slug(f"{config.task}-{config.model.arch}-{config.model.scheme}-seed{config.seed}")
    run_dir = args.run_dir or os.path.join("runs", "train", name)
    check_output(run_dir, "--run-dir", folder=True)  # train() would say run_dir, or Errno 20
    saved = os.path.join(run_dir, "config.json")
    if args.resume and os.path.isfile(saved):
        # --resume continues the saved run; flags given again may only change what may change
        with open(saved) as handle:
            config = config_from_args(args, TrainConfig.from_dict(json.load(handle)))
    if args.max_distance is not None:
        _check_k(args.max_distance, config.model.scheme, config.model.scheme_options)
    rank0 = int(os.environ.get("RANK", "0")) == 0
    if args.resume and rank0:
        # Say where the run goes on from: a mistyped folder, or a stop before the first
        # checkpoint, would otherwise start from step 0 unnoticed. (A resume that will be
        # refused, a changed setting, says so first.)
        from ..training.checkpoint import read_checkpoint_state
        from ..training.loop import check_run_dir

        check_run_dir(Path(run_dir), config, resume=True, overwrite=args.overwrite)

        state = read_checkpoint_state(run_dir) if os.path.isfile(saved) else None
        if not os.path.isfile(saved):
            where = f"no run in {run_dir} yet: starting it"
        elif state is None:
            where = f"no checkpoint in {run_dir} yet: starting from step 0"
        else:
            where = f"resuming {run_dir} from step {state['step']} of {config.steps}"
        print(f"relpos train: {where}", file=sys.stderr)
    result = train(
        config, run_dir, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress
    )
    if not rank0:
        return 0
    if args.json:
        print(json.dumps(result.metrics, indent=2))
    else:
        print(_format_metrics(result.metrics))
        loss = result.metrics.get("final_loss")
        loss_text = "-" if loss is None else f"{loss:.4f}"
        print(f"final loss {loss_text}; {result.seconds:.1f} s; run folder: {run_dir}")
    return 0
