"""Copy, reverse and duplicate strings of digits: algorithmic tests of length generalisation.

Ontañón et al. 2022 ("Making Transformers Solve Compositional Tasks", ACL, arXiv:2108.04378)
reverse and duplicate digit strings, training on lengths 1–16 and testing on 17–24; ``copy`` is
not one of their tasks, but runs on the same lengths as the simplest of the three. Kazemnejad et
al. 2023 ("The Impact of Positional Encoding on Length Generalization in Transformers", NeurIPS)
train a decoder-only model on lengths ≤ 20 and test up to 40, with a small vocabulary. The data
(from ``generate(0)``: the first evaluation example of length 3, and of length 5 for
``copy-kz``)::

    task        source       target
    copy        8 9 4        8 9 4
    reverse     8 9 4        4 9 8
    duplicate   8 9 4        8 9 4 8 9 4
    copy-kz     1 4 9 2 5    1 4 9 2 5

``length`` is the *input* length for all three, so "trained on 1–16" means inputs of 1–16 symbols
(a duplicate target is twice as long).

Registered names (all are :class:`StringTask` with different defaults; every field is an option,
e.g. ``get_task("reverse", max_eval_length=48, vocab_size=4)``):

============  ==========  ============  ==================  =========================
name          operation   train         evaluation          protocol
============  ==========  ============  ==================  =========================
copy          copy        1–16          1–32                Ontañón's length protocol
reverse       reverse     1–16          1–32                Ontañón et al. 2022
duplicate     duplicate   1–16          1–32                Ontañón et al. 2022
copy-kz       copy        1–20          1–40                Kazemnejad et al. 2023
reverse-kz    reverse     1–20          1–40                Kazemnejad et al. 2023
============  ==========  ============  ==================  =========================

Ontañón's test range is 17–24; the default evaluation goes on to 32 to show the trend "beyond",
and re-tests 1–16 on held-out strings to give the seen-length baseline. The ``-kz`` names are
Kazemnejad's "copy random tokens" and "reverse" length ranges on the same 10 symbols; their
prompt text ("Copy: …") and tokenizer are not reproduced: a decoder-only model joins source and
target with its own separator.

Sampling (all from ``random.Random(seed)``, never global state):

* training: each example draws a length uniformly from ``[min_train_length, max_train_length]``,
  then each symbol uniformly; examples are i.i.d., so repeats occur (there are only 10 strings of
  length 1);
* evaluation: for every length in ``eval_lengths``, ``n_eval_per_length`` *distinct* strings (all
  of them when fewer exist). At seen lengths they are drawn from strings absent from the training
  set. Where training has used the space up, the remainder is filled with training strings: every
  string of that length is then a seen one, so accuracy there measures fitting, not
  generalisation. With the defaults (10 symbols, 20,000 training examples) that happens at
  lengths 1 and 2 only (all 10 and 100 strings are in training); from length 3 on, evaluation
  and training strings are disjoint.
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass

from .base import (
    Example,
    TaskData,
    check_int,
    check_lengths,
    check_seed,
    distinct_draws,
    register_task,
)

__all__ = ["StringTask", "OPERATIONS", "SYMBOLS", "apply_operation"]

#: the symbol alphabet, in order: ``vocab_size = 10`` gives the digits.
SYMBOLS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _copy(source: tuple[str, ...]) -> tuple[str, ...]:
    return source


def _reverse(source: tuple[str, ...]) -> tuple[str, ...]:
    return source[::-1]


def _duplicate(source: tuple[str, ...]) -> tuple[str, ...]:
    return source + source


OPERATIONS = {"copy": _copy, "reverse": _reverse, "duplicate": _duplicate}


def apply_operation(operation: str, source: Sequence[str]) -> tuple[str, ...]:
    """The target of ``operation`` ("copy", "reverse" or "duplicate") for ``source``."""
    if operation not in OPERATIONS:
        raise ValueError(f"operation must be one of {', '.join(OPERATIONS)}, got {operation!r}")
    return OPERATIONS[operation](tuple(source))


def _distinct_strings(
    rng: random.Random,
    symbols: Sequence[str],
    length: int,
    count: int,
    avoid: set[tuple[str, ...]],
) -> list[tuple[str, ...]]:
    """``min(count, |symbols|**length)`` distinct strings of ``length``, avoiding ``avoid`` if
    the space allows (see the module docstring)."""
    return distinct_draws(
        rng,
        draw=lambda: tuple(rng.choices(symbols, k=length)),
        every=lambda: itertools.product(symbols, repeat=length),
        space=len(symbols) ** length,
        count=count,
        avoid=avoid,
    )


@dataclass
class StringTask:
    """Copy, reverse or duplicate strings of ``vocab_size`` symbols (see the module docstring)."""

    #: "copy", "reverse" or "duplicate".
    operation: str = "copy"
    min_train_length: int = 1
    #: Ontañón et al.: 16; Kazemnejad et al.: 20.
    max_train_length: int = 16
    #: evaluate every length from ``min_train_length`` up to this (ignored if ``eval_lengths``).
    max_eval_length: int = 32
    #: explicit evaluation lengths, overriding ``max_eval_length``.
    eval_lengths: Sequence[int] | None = None
    #: the first ``vocab_size`` characters of :data:`SYMBOLS` (10: the digits).
    vocab_size: int = 10
    #: Ontañón et al. trained on 200K examples; 20K keeps generation and CPU runs quick.
    n_train: int = 20_000
    #: distinct evaluation strings per length (fewer where fewer exist).
    n_eval_per_length: int = 100
    #: registry name; defaults to ``operation``.
    name: str = ""

    def __post_init__(self) -> None:
        if self.operation not in OPERATIONS:
            raise ValueError(
                f"operation must be one of {', '.join(OPERATIONS)}, got {self.operation!r}"
            )
        check_int("min_train_length", self.min_train_length, 1)
        check_int("max_train_length", self.max_train_length, self.min_train_length)
        check_int("vocab_size", self.vocab_size, 2, len(SYMBOLS))
        check_int("n_train", self.n_train, 1)
        check_int("n_eval_per_length", self.n_eval_per_length, 1)
        if self.eval_lengths is None:
            check_int("max_eval_length", self.max_eval_length, self.min_train_length)
            self.eval_lengths = tuple(range(self.min_train_length, self.max_eval_length + 1))
        else:
            self.eval_lengths = check_lengths("eval_lengths", self.eval_lengths)
        if not self.name:
            self.name = self.operation

    @property
    def vocabulary(self) -> list[str]:
        return list(SYMBOLS[: self.vocab_size])

    def example(self, source: Sequence[str]) -> Example:
        """The example of one source: its target under ``operation``, its length."""
        source = tuple(source)
        return Example(source, apply_operation(self.operation, source), len(source))

    def generate(self, seed: int) -> TaskData:
        rng = random.Random(check_seed(seed))
        symbols = self.vocabulary
        train = []
        train_strings: dict[int, set[tuple[str, ...]]] = {}
        for _ in range(self.n_train):
            length = rng.randint(self.min_train_length, self.max_train_length)
            source = tuple(rng.choices(symbols, k=length))
            train_strings.setdefault(length, set()).add(source)
            train.append(self.example(source))
        evaluation = []
        for length in self.eval_lengths:
            avoid = train_strings.get(length, set())
            for source in _distinct_strings(rng, symbols, length, self.n_eval_per_length, avoid):
                evaluation.append(self.example(source))
        return TaskData(
            train=train,
            evaluation=evaluation,
            train_lengths=(self.min_train_length, self.max_train_length),
            vocabulary=symbols,
        )


# Ontañón et al. 2022's lengths (reverse and duplicate are their tasks, copy is ours): train
# 1–16, test 17–24 (and beyond, to 32).
for _operation in OPERATIONS:
    register_task(_operation)(functools.partial(StringTask, _operation, name=_operation))

# Kazemnejad et al. 2023, decoder-only: train <= 20, test 21–40.
for _operation in ("copy", "reverse"):
    register_task(f"{_operation}-kz")(
        functools.partial(
            StringTask,
            _operation,
            name=f"{_operation}-kz",
            max_train_length=20,
            max_eval_length=40,
        )
    )
