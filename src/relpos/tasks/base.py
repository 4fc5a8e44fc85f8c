"""The task protocol: what a synthetic (or user) task hands to training and evaluation.

A task is any object with a ``name`` and a ``generate(seed) -> TaskData`` method. ``TaskData``
holds tokenised training and evaluation examples; every example carries the ``length`` by which
accuracy is reported (the input length for copy/reverse, the action-sequence length for SCAN).
Lengths in ``train_lengths`` were seen in training; every other evaluation length was not.

Example (copy, digits)::

    Example(source=("3", "1", "4"), target=("3", "1", "4"), length=3)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = [
    "Example",
    "TaskData",
    "Task",
    "register_task",
    "get_task",
    "available_tasks",
    "TASKS",
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
    return sorted(TASKS)


def get_task(name: str, **options) -> Task:
    """Build a registered task by name; unknown names list the valid ones."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid names: {', '.join(available_tasks())}")
    return TASKS[name](**options)


def lengths_in(examples: Sequence[Example]) -> list[int]:
    return sorted({ex.length for ex in examples})
