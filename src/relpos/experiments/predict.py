"""Trained models on inputs of your own: ``relpos predict``.

A compare folder's table says *how often* each scheme gets unseen lengths right; running the
models on one input shows *how* they go wrong. The default compare's seed-0 models (reverse,
trained on lengths 1–8) on a 12-digit input (``relpos predict runs/compare-… 123456789012``)::

    123456789012  (length 12, unseen)
      expected      210987654321
      none        ✗ 2137509846
      sinusoidal  ✗ 970254312
      learned     ✗ 7654291031
      shaw k=4    ✓ 210987654321

Absolute positions lose the thread where the training lengths end; no positions at all give a
bag of digits. :func:`predict_runs` does the work; the CLI prints its result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..training.checkpoint import CONFIG_ADVICE, read_json

__all__ = [
    "Prediction",
    "PredictionTable",
    "find_runs",
    "split_source",
    "char_level",
    "task_example",
    "task_examples",
    "predict_runs",
    "unseen_example",
]


@dataclass
class Prediction:
    """One source and what each run made of it.

    ``expected``/``length``/``seen`` are ``None`` where the task cannot say (a file task whose
    examples do not hold this source). ``outputs`` maps a run's label to its greedy output;
    ``errors`` holds, instead, why a run could not decode this source (a learned absolute table
    shorter than the source), so that one model's limit does not hide the others' outputs.
    """

    source: tuple[str, ...]
    expected: tuple[str, ...] | None
    length: int | None
    seen: bool | None
    outputs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def correct(self, label: str) -> bool | None:
        """Whether run ``label`` output the expected target (``None``: no target known; a run
        that could not decode the source is not correct)."""
        if self.expected is None:
            return None
        return self.outputs.get(label) == self.expected


@dataclass
class PredictionTable:
    """The result of :func:`predict_runs`: which runs, on which task, and one row per source."""

    task: str
    train_lengths: tuple[int, int] | None
    runs: dict[str, Path]  # label -> run folder
    rows: list[Prediction]

    def to_dict(self) -> dict:
        return {
            "task": self.task,
            "train_lengths": self.train_lengths,
            "runs": {label: str(path) for label, path in self.runs.items()},
            "predictions": [
                {
                    "source": list(row.source),
                    "expected": None if row.expected is None else list(row.expected),
                    "length": row.length,
                    "seen": row.seen,
                    "outputs": {label: list(out) for label, out in row.outputs.items()},
                    "errors": row.errors,
                    "correct": {label: row.correct(label) for label in self.runs},
                }
                for row in self.rows
            ],
        }


def _scheme_label(config) -> str:
    """The label a compare would give this run's variant (``shaw k=4``)."""
    from .compare import Variant

    return Variant(config.model.scheme, dict(config.model.scheme_options)).label


def find_runs(
    folder: str | Path,
    *,
    task: str | None = None,
    scheme: str | None = None,
    seed: int | None = None,
) -> dict[str, Path]:
    """The runs to predict with (or draw from), by label.

    ``folder`` is a training run (``config.json``): that run. Or a ``relpos compare`` folder
    (``results.json``): one run per variant of one experiment — ``task``'s, or else the first
    experiment that has a run of ``scheme`` and ``seed`` — each variant's lowest seed unless
    ``seed`` is given; ``scheme`` keeps only that scheme's variants. Runs whose files are not
    there (a stored results folder) are an error.
    """
    folder = Path(folder)
    if (folder / "config.json").is_file():
        for option, value in (("task", task), ("seed", seed)):
            if value is not None:
                raise ValueError(
                    f"{option} picks runs in a compare folder; {str(folder)!r} is one "
                    f"training run (leave {option} out)"
                )
        from ..training.loop import TrainConfig

        config = TrainConfig.from_dict(read_json(folder / "config.json", CONFIG_ADVICE))
        if scheme is not None and config.model.scheme != scheme:
            raise ValueError(
                f"{str(folder)!r} is a {config.model.scheme!r} run, not a {scheme!r} one"
            )
        return {_scheme_label(config): folder}
    if not (folder / "results.json").is_file():
        raise FileNotFoundError(
            f"{str(folder)!r} is neither a training run (config.json) nor a compare folder "
            "(results.json)"
        )
    results = read_json(folder / "results.json", "restore it, or run the compare again")
    experiments = results.get("experiments", [])
    tasks = [experiment["task"] for experiment in experiments]
    if task is not None and task not in tasks:
        raise ValueError(
            f"compare folder {str(folder)!r} has no {task!r} experiment; its tasks: "
            f"{', '.join(tasks) or 'none'}"
        )
    for experiment in experiments:
        if task is not None and experiment["task"] != task:
            continue
        chosen = _lowest_seed_runs(experiment, scheme, seed)
        if chosen:
            return {label: _run_files(folder, run) for label, run in chosen.items()}
    finished = {
        variant["scheme"]
        for experiment in experiments
        if task is None or experiment["task"] == task
        for variant in experiment["variants"]
        if any(run["variant"] == variant["label"] for run in experiment["runs"])
    }
    seeds = sorted({run["seed"] for experiment in experiments for run in experiment["runs"]})
    wanted = "".join(
        part
        for part in (
            f" {task!r}" if task is not None else "",
            " run",
            f" of scheme {scheme!r}" if scheme is not None else "",
            f" with seed {seed}" if seed is not None else "",
        )
    )
    raise ValueError(
        f"compare folder {str(folder)!r} has no finished{wanted}; its finished runs are of "
        f"{', '.join(sorted(finished)) or 'no scheme'} (seeds: "
        f"{', '.join(map(str, seeds)) or 'none'})"
    )


def _lowest_seed_runs(experiment: dict, scheme: str | None, seed: int | None) -> dict[str, dict]:
    """Label -> the run of each matching variant with the lowest (or the given) seed, in the
    order the compare's table lists the variants."""
    schemes = {variant["label"]: variant["scheme"] for variant in experiment["variants"]}
    chosen: dict[str, dict] = {}
    for run in experiment["runs"]:
        label = run["variant"]
        if scheme is not None and schemes.get(label) != scheme:
            continue
        if seed is not None and run["seed"] != seed:
            continue
        if label not in chosen or run["seed"] < chosen[label]["seed"]:
            chosen[label] = run
    return {label: chosen[label] for label in schemes if label in chosen}


def _run_files(folder: Path, run: dict) -> Path:
    path = folder / run["run_dir"]
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"compare folder {str(folder)!r} lists the run {run['run_dir']!r}, but its files "
            "(config.json, checkpoint) are not there: a stored results folder keeps "
            "results.json and table.md only; rerun the compare to use its models"
        )
    return path


def char_level(config) -> bool:
    """Whether a run's task reads its sources character by character (a file task's
    ``char_level=True``), so that a typed source is split the same way."""
    return bool(config.task_options.get("char_level", False))


def unseen_example(folder: str | Path, experiment: dict) -> PredictionTable | None:
    """The first evaluation input of the shortest unseen length of ``experiment`` (an entry of a
    compare's ``results.json``), decoded by each variant's lowest-seed run in ``folder``: what the
    compare prints under its table. ``None`` when the experiment has no unseen length or no
    runs. It is decoded as the evaluation decodes it, with room for the target and its EOS."""
    from ..tasks import get_task
    from ..training.loop import TrainConfig

    low, high = experiment["train_lengths"]
    unseen = [n for n in experiment["eval_lengths"] if not low <= n <= high]
    chosen = _lowest_seed_runs(experiment, None, None)
    if not unseen or not chosen:
        return None
    runs = {label: _run_files(Path(folder), run) for label, run in chosen.items()}
    config = TrainConfig.from_dict(
        read_json(next(iter(runs.values())) / "config.json", CONFIG_ADVICE)
    )
    data = get_task(config.task, **config.task_options).generate(config.seed)
    above = [n for n in unseen if n > high]
    length = above[0] if above else unseen[0]  # one past the training range, where there is one
    example = next((ex for ex in data.evaluation if ex.length == length), None)
    if example is None:
        return None
    # The evaluation's budget: the target and its EOS (a scheme that draws its decoder's
    # positions, randomized, draws them for that many tokens).
    return predict_runs(runs, [example.source], max_new_tokens=len(example.target) + 1)


def split_source(
    text: str, vocabulary: Sequence[str], *, char_level: bool = False
) -> tuple[str, ...]:
    """``text`` as task tokens: whitespace-separated words (``"jump twice"``, ``"3 1 4"``), or,
    for a single word that is not a token, its characters (``"314"`` for digit tasks).
    ``char_level`` (a character-level file task): every character after stripping the ends,
    spaces included, as the task file was read."""
    known = set(vocabulary)
    if char_level:
        tokens = tuple(text.strip())
        unknown = sorted(set(tokens) - known)
        if not tokens or unknown:
            what = (
                "holds no tokens"
                if not tokens
                else (
                    f"has characters outside the task vocabulary ({', '.join(map(repr, unknown))})"
                )
            )
            raise ValueError(f"source {text!r} {what}; the vocabulary: {vocabulary!r}")
        return tokens
    words = text.split()
    if not words:
        raise ValueError(f"source {text!r} holds no tokens")
    if all(word in known for word in words):
        return tuple(words)
    if len(words) == 1 and all(char in known for char in text.strip()):
        return tuple(text.strip())
    unknown = {w for w in words if w not in known} if len(words) > 1 else set(text) - known
    shown = " ".join(vocabulary[:40])
    if len(vocabulary) > 40:
        shown += f" … ({len(vocabulary)} in all)"
    raise ValueError(
        f"source {text!r} has tokens outside the task vocabulary "
        f"({', '.join(map(repr, sorted(unknown)))}); the vocabulary: {shown}"
    )


def task_example(task, known: dict, source: tuple[str, ...]):
    """The task's :class:`~relpos.tasks.Example` for ``source``, or ``None`` where it has none.

    A task that computes any source's target (``example(source)``: copy, reverse, SCAN, …)
    scores sources beyond its data; otherwise ``known`` (source -> example, from its data) does.
    """
    if task is not None and hasattr(task, "example"):
        try:
            return task.example(source)
        except ValueError:  # outside the task (not a SCAN command): no expected output
            return None
    return known.get(source)


def task_examples(data) -> dict:
    """source -> the first example with that source, over ``data``'s training and evaluation."""
    known = {}
    if data is not None:
        for example in (*data.train, *data.evaluation):
            known.setdefault(example.source, example)
    return known


def predict_runs(
    runs: dict[str, str | Path],
    sources: Sequence[str],
    *,
    device: str = "cpu",
    max_new_tokens: int | None = None,
) -> PredictionTable:
    """Every run of ``runs`` (label -> run folder, as :func:`find_runs` gives) decodes every
    source greedily, as its evaluation does; the expected target, length and seen/unseen come
    from the first run's task (the compare's runs share one task). A source is a string (split
    by :func:`split_source`) or a list/tuple of tokens."""
    from ..tasks import get_task
    from ..training import load_run

    if isinstance(sources, str) or not sources:
        raise ValueError(
            "sources must be a non-empty list of strings or token lists, e.g. ['123456789012']"
        )
    if not runs:
        raise ValueError("runs is empty: give at least one run folder")
    loaded = {label: load_run(path, device=device) for label, path in runs.items()}
    first = next(iter(loaded.values()))
    config = first.config
    vocabulary = first.tokenizer.vocabulary
    try:
        task = get_task(config.task, **config.task_options)
        data = task.generate(config.seed)
    except OSError:  # a file task whose file has moved: predict without expected outputs
        task = data = None
    known = task_examples(data)
    rows = []
    for text in sources:
        source = (
            tuple(text)
            if isinstance(text, (list, tuple))
            else split_source(text, vocabulary, char_level=char_level(config))
        )
        example = task_example(task, known, source)
        seen = None if example is None or data is None else data.seen(example.length)
        rows.append(
            Prediction(
                source=source,
                expected=None if example is None else tuple(example.target),
                length=None if example is None else example.length,
                seen=seen,
            )
        )
    for label, run in loaded.items():
        try:
            outputs = run.predict([row.source for row in rows], max_new_tokens=max_new_tokens)
        except ValueError:  # a source this model cannot take: find which, decode the rest
            outputs = []
            for row in rows:
                try:
                    (output,) = run.predict([row.source], max_new_tokens=max_new_tokens)
                except ValueError as error:
                    output, row.errors[label] = None, str(error)
                outputs.append(output)
        for row, output in zip(rows, outputs, strict=True):
            if output is not None:
                row.outputs[label] = tuple(output)
    return PredictionTable(
        task=config.task,
        train_lengths=None if data is None else tuple(data.train_lengths),
        runs={label: Path(path) for label, path in runs.items()},
        rows=rows,
    )
