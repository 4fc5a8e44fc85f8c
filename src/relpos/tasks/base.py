"""The task protocol: what a synthetic (or user) task hands to training and evaluation.

A task is any object with a ``name`` and a ``generate(seed) -> TaskData`` method. ``TaskData``
holds tokenised training and evaluation examples; every example carries the ``length`` by which
accuracy is reported (the input length for copy/reverse, the action-sequence length for SCAN).
Lengths in ``train_lengths`` were seen in training; every other evaluation length was not.

Example (copy, digits)::

    Example(source=("3", "1", "4"), target=("3", "1", "4"), length=3)
"""

from __future__ import annotations

import inspect
import numbers
import random
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, runtime_checkable

__all__ = [
    "Example",
    "TaskData",
    "Task",
    "register_task",
    "get_task",
    "task_options",
    "available_tasks",
    "TASKS",
    "FILE_PREFIX",
    "check_seed",
    "distinct_draws",
    "hold_out",
]


@dataclass(frozen=True)
class Example:
    """One source → target pair of tokens, and the length its accuracy is reported under."""

    source: tuple[str, ...]
    target: tuple[str, ...]
    length: int


@dataclass
class TaskData:
    """Everything a run needs from a task.

    ``train``: training examples. ``evaluation``: held-out examples at seen *and* unseen lengths.
    ``train_lengths``: ``(shortest, longest)`` length seen in training (inclusive).
    ``vocabulary``: every token that may occur in a source or target, in a fixed order.
    """

    train: list[Example]
    evaluation: list[Example]
    train_lengths: tuple[int, int]
    vocabulary: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.vocabulary:
            tokens = {t for ex in (*self.train, *self.evaluation) for t in (*ex.source, *ex.target)}
            self.vocabulary = sorted(tokens)

    def seen(self, length: int) -> bool:
        return self.train_lengths[0] <= length <= self.train_lengths[1]


@runtime_checkable
class Task(Protocol):
    """The protocol a user's own task implements (see ``relpos.tasks.files`` for a TSV loader)."""

    name: str

    def generate(self, seed: int) -> TaskData: ...


TASKS: dict[str, Callable[..., Task]] = {}


def register_task(name: str) -> Callable:
    """Decorator registering a task factory (a class or a function) under ``name``."""

    def decorate(factory: Callable[..., Task]) -> Callable[..., Task]:
        if name in TASKS and TASKS[name] is not factory:
            raise ValueError(f"a task named {name!r} is already registered")
        TASKS[name] = factory
        return factory

    return decorate


def available_tasks() -> list[str]:
    """The registered task names :func:`get_task` takes (a TSV file is ``"file:PATH"``)."""
    return sorted(TASKS)


#: ``get_task("file:PATH", **options)`` loads a user's TSV file (see ``relpos.tasks.files``).
FILE_PREFIX = "file:"


def get_task(name: str, /, **options) -> Task:
    """Build a registered task by name; unknown names list the valid ones.

    ``get_task("file:data.tsv", **options)`` is short for ``get_task("tsv", path="data.tsv", ...)``.
    Options a task does not take raise a ``ValueError`` listing the ones it does.
    """
    if not isinstance(name, str):
        raise TypeError(f"task name must be a str, got {type(name).__name__} {name!r}")
    if name.startswith(FILE_PREFIX):
        return get_task("tsv", path=name[len(FILE_PREFIX) :], **options)
    accepted = task_options(name)
    unknown = sorted(set(options) - accepted) if accepted is not None else []
    if unknown:
        raise ValueError(
            f"task {name!r} has no option(s) {', '.join(unknown)}; "
            f"its options are: {', '.join(sorted(accepted)) or '(none)'}"
        )
    return TASKS[name](**options)


def task_options(name: str) -> frozenset[str] | None:
    """The option names ``get_task(name, ...)`` accepts (``None``: any, the factory takes
    ``**options``); unknown names list the valid ones. For ``"file:PATH"``, the file task's."""
    if not isinstance(name, str):
        raise TypeError(f"task name must be a str, got {type(name).__name__} {name!r}")
    if name.startswith(FILE_PREFIX):
        return task_options("tsv") - {"path"}
    if name not in TASKS:
        raise ValueError(
            f"unknown task {name!r}; valid names: {', '.join(available_tasks())} "
            f"(or {FILE_PREFIX}PATH for a file of source<TAB>target lines)"
        )
    parameters = inspect.signature(TASKS[name]).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    return frozenset(parameters)


def check_seed(seed: int) -> int:
    """The seed as a plain ``int``; tasks draw from ``random.Random(seed)``, never global state."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    return int(seed)


Item = TypeVar("Item", bound=Hashable)


def distinct_draws(
    rng: random.Random,
    draw: Callable[[], Item],
    every: Callable[[], Iterable[Item]],
    space: int,
    count: int,
    avoid: set[Item],
) -> list[Item]:
    """``min(count, space)`` distinct items of one length, none in ``avoid`` if the space allows.

    ``draw()`` samples one item (from ``rng``, as training does), ``every()`` lists all ``space``
    of them in a fixed order. Where at least ``4 * count`` items lie outside ``avoid``, items
    are drawn and repeats and avoided ones rejected (each draw is new with probability >= 3/4);
    otherwise the space is listed and shuffled, its fresh items first, then avoided ones if too
    few are fresh (evaluation at a length training has used up; see ``tasks.strings``).
    """
    count = min(count, space)
    if space - len(avoid) >= 4 * count:
        chosen: dict[Item, None] = {}  # a dict keeps draw order (determinism)
        while len(chosen) < count:
            item = draw()
            if item not in avoid and item not in chosen:
                chosen[item] = None
        return list(chosen)
    listed = list(every())
    fresh = [item for item in listed if item not in avoid]
    rng.shuffle(fresh)
    if len(fresh) >= count:
        return fresh[:count]
    seen = [item for item in listed if item in avoid]
    rng.shuffle(seen)
    return fresh + seen[: count - len(fresh)]


def hold_out(
    examples: list[Example], count: int, rng: random.Random, *, option: str = "count"
) -> tuple[list[Example], list[Example]]:
    """Split ``count`` randomly chosen *distinct* examples off ``examples``: ``(kept, held_out)``.

    Used to measure accuracy at *seen* lengths on examples the model was not trained on, for
    tasks whose evaluation set holds only unseen lengths (SCAN's length split, a file split by a
    length threshold). Examples are distinct by ``(source, target)``: each held-out example
    appears once in ``held_out`` and none of its copies stays in ``kept``, so a file with
    repeated lines cannot evaluate on training examples. Both parts keep the input order.

    Without repeats (SCAN) the draw is one ``rng.sample`` over the examples' positions, as it
    always was, so the same seed holds out the same examples.
    """
    if isinstance(count, bool) or not isinstance(count, int):
        raise TypeError(f"{option} must be an int, got {type(count).__name__} {count!r}")
    if count == 0:
        return list(examples), []
    # dict.fromkeys keeps first-occurrence order, so the draw is deterministic.
    distinct = list(dict.fromkeys((ex.source, ex.target) for ex in examples))
    if not 0 < count < len(distinct):  # training must keep at least one example
        repeats = f", {len(examples)} with repeats" if len(distinct) < len(examples) else ""
        raise ValueError(
            f"{option} (examples held out of training) must be an int in [0, {len(distinct)}) "
            f"({len(distinct)} distinct examples{repeats}), got {count!r}"
        )
    chosen = {distinct[i] for i in rng.sample(range(len(distinct)), count)}
    kept = [ex for ex in examples if (ex.source, ex.target) not in chosen]
    held: dict[tuple[tuple[str, ...], tuple[str, ...]], Example] = {}
    for ex in examples:
        if (ex.source, ex.target) in chosen:
            held.setdefault((ex.source, ex.target), ex)
    return kept, list(held.values())


def check_int(option: str, value: object, minimum: int, maximum: int | None = None) -> int:
    """``value`` if it is an int in ``[minimum, maximum]``: a ``TypeError`` for another type, a
    ``ValueError`` out of range, each naming ``option`` and what was expected."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{option} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        expected = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{option} must be {expected}, got {value}")
    return value


def check_lengths(option: str, lengths: object) -> tuple[int, ...]:
    """``lengths`` (a sequence of ints >= 1, e.g. ``range(1, 33)``) sorted, without repeats."""
    if isinstance(lengths, (str, bytes)) or not isinstance(lengths, Sequence):
        raise TypeError(
            f"{option} must be a sequence of ints, e.g. range(1, 33), "
            f"got {type(lengths).__name__} {lengths!r}"
        )
    if len(lengths) == 0:
        raise ValueError(f"{option} must name at least one length, got none")
    for length in lengths:
        check_int(f"every entry of {option}", length, 1)
    return tuple(sorted(set(lengths)))


def lengths_in(examples: Sequence[Example]) -> list[int]:
    return sorted({ex.length for ex in examples})
