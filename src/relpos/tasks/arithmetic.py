"""Integer addition on digit strings: a carry can travel the whole length of the numbers.

Ontañón et al. 2022 ("Making Transformers Solve Compositional Tasks", ACL, arXiv:2108.04378) add
operands of 1–8 digits in training and of 9–10 digits in testing, every number padded to 12
digits; Kazemnejad et al. 2023 ("The Impact of Positional Encoding on Length Generalization in
Transformers", NeurIPS) train on 8 digits and test up to 16. The data (from ``generate(0)``: the
first evaluation example of length 9, the first unseen one, in each format; tokens are single
characters, written here without spaces)::

    options                      source                      target
    (defaults)                   287345105+756044225         1043389330
    reverse_digits=True          501543782+522440657         0339833401
    pad_to=12                    000287345105+000756044225   0001043389330
    reverse_digits, pad_to=12    501543782000+522440657000   0339833401000

The source is the digits of ``a``, then ``+``, then the digits of ``b``; the target is the digits
of ``a + b``. The vocabulary is the ten digits and ``+``. ``length`` is the number of digits of
the longer operand (0 counts as one digit), so "trained on 1–8" means both operands have at most
8 digits; a source of length ``n`` has ``n + 2`` to ``2n + 1`` tokens, its target ``n`` or
``n + 1``.

Registered as ``"addition"`` (:class:`AdditionTask`; every field is an option, e.g.
``get_task("addition", max_train_digits=4, reverse_digits=True)``):

==========  ============  ==========  ========================================
name        train         evaluation  protocol
==========  ============  ==========  ========================================
addition    1–8 digits    1–12        Ontañón et al. 2022's training digits
==========  ============  ==========  ========================================

Ontañón's test lengths are 9–10; the default evaluation goes on to 12 to show the trend beyond,
and re-tests 1–8 on pairs held out of training. Kazemnejad's protocol is
``max_train_digits=8, max_eval_digits=16`` (with a decoder-only model; their prompt text is not
reproduced).

Formats:

* ``reverse_digits=True`` writes the operands *and* the sum least-significant digit first. Lee et
  al. 2023 ("Teaching Arithmetic to Small Transformers", arXiv:2307.03381) reverse the sum, so
  that a model emitting it left to right has already written every digit the next one's carry
  depends on; reversing the operands too puts the digits of one place at the same offset from
  the start of each number (place ``i`` is token ``i`` of ``a``, of ``b`` and of the sum).
* ``pad_to=P`` (``P > 0``) left-pads every operand with zeros to ``P`` digits and the sum to
  ``P + 1`` (in the reversed format the zeros come last), as Ontañón et al. pad to 12. Every
  source then has ``2P + 1`` tokens and every target ``P + 1``: no sequence is longer than one
  seen in training, and length generalisation is about the digit count alone (an unseen length
  puts digits where training only ever had padding zeros). ``P`` must be at least the longest
  training and evaluation length. Ontañón et al.'s exact layout of the padded sum is not
  reproduced; ``P + 1`` digits hold any sum of two ``P``-digit numbers.

Sampling (all from ``random.Random(seed)``, never global state):

* training: each example draws a length ``n`` uniformly from ``[min_train_digits,
  max_train_digits]``; the longer operand is uniform over the ``n``-digit numbers (no leading
  zero; the 1-digit numbers include 0), the other operand draws its own digit count uniformly
  from ``[1, n]`` and is then uniform over those numbers, and a fair coin decides which of the two
  is ``a``. The other operand's size is thus uniform from 1 to ``n`` digits, where uniform pairs
  would have two ``n``-digit operands 82% of the time (``n >= 2``). Examples are i.i.d., so
  repeats occur (there are only 100 pairs of 1-digit numbers).
* evaluation: for every length in ``eval_lengths``, ``n_eval_per_length`` *distinct* ordered pairs
  (all of them when fewer exist), drawn the same way as training pairs of that length; at seen
  lengths, from pairs absent from the training set. Where the space is small (fewer than 4×
  ``n_eval_per_length`` pairs outside the training set), it is enumerated instead: fresh pairs
  in random order (then uniform rather than as training draws them), and, if they run out, the
  remainder filled with training pairs: accuracy there measures fitting, not generalisation.
  With the defaults (20,000 training examples) that happens at length 1 only, whose 100 pairs
  all occur in training; from length 2 on (9,900 pairs), evaluation and training pairs are
  disjoint.
"""

from __future__ import annotations

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

__all__ = ["AdditionTask", "DIGITS", "PLUS", "count_pairs"]

DIGITS = "0123456789"
PLUS = "+"


def _number_range(digits: int) -> range:
    """The numbers written with exactly ``digits`` digits (0 is a 1-digit number)."""
    return range(0 if digits == 1 else 10 ** (digits - 1), 10**digits)


def count_pairs(length: int) -> int:
    """How many ordered pairs ``(a, b)`` have a longer operand of ``length`` digits:
    ``10**(2·length) - 10**(2·(length - 1))`` (both below ``10**length``, not both below
    ``10**(length - 1)``; for length 1, all 100 pairs of digits)."""
    check_int("length", length, 1)
    return 10 ** (2 * length) - (10 ** (2 * (length - 1)) if length > 1 else 0)


def _draw_number(rng: random.Random, digits: int) -> int:
    numbers = _number_range(digits)
    return rng.randrange(numbers.start, numbers.stop)  # rng.choice needs len(), < 2**63


def _draw_pair(rng: random.Random, length: int) -> tuple[int, int]:
    """One ordered pair whose longer operand has ``length`` digits (see the module docstring)."""
    longer = _draw_number(rng, length)
    other = _draw_number(rng, rng.randint(1, length))
    return (longer, other) if rng.randrange(2) else (other, longer)


def _pairs_of_length(length: int) -> list[tuple[int, int]]:
    """Every ordered pair of ``length`` digits, in a fixed order (small spaces only)."""
    numbers = range(10**length)  # every number of at most `length` digits
    return [(a, b) for a in numbers for b in numbers if len(str(max(a, b))) == length]


def _distinct_pairs(
    rng: random.Random, length: int, count: int, avoid: set[tuple[int, int]]
) -> list[tuple[int, int]]:
    """``min(count, count_pairs(length))`` distinct pairs of ``length``, avoiding ``avoid`` if
    the space allows (see the module docstring). Pairs are drawn as training draws them; every
    pair of ``length`` can be drawn, which is what lets the rejection sampling finish."""
    return distinct_draws(
        rng,
        draw=lambda: _draw_pair(rng, length),
        every=lambda: _pairs_of_length(length),
        space=count_pairs(length),
        count=count,
        avoid=avoid,
    )


@dataclass
class AdditionTask:
    """``a + b`` on digit strings, lengths counted in digits (see the module docstring)."""

    min_train_digits: int = 1
    #: Ontañón et al.: 8; Kazemnejad et al.: 8.
    max_train_digits: int = 8
    #: evaluate every length from ``min_train_digits`` up to this (ignored if ``eval_lengths``).
    max_eval_digits: int = 12
    #: explicit evaluation lengths (digit counts), overriding ``max_eval_digits``.
    eval_lengths: Sequence[int] | None = None
    #: operands and sum least-significant digit first (carries travel left to right).
    reverse_digits: bool = False
    #: 0: no padding; P: operands zero-padded to P digits and the sum to P + 1 (Ontañón: 12).
    pad_to: int = 0
    #: Ontañón et al. trained on 200K examples; 20K keeps generation and CPU runs quick.
    n_train: int = 20_000
    #: distinct evaluation pairs per length (fewer where fewer exist: 100 at length 1).
    n_eval_per_length: int = 100
    name: str = "addition"

    def __post_init__(self) -> None:
        check_int("min_train_digits", self.min_train_digits, 1)
        check_int("max_train_digits", self.max_train_digits, self.min_train_digits)
        check_int("n_train", self.n_train, 1)
        check_int("n_eval_per_length", self.n_eval_per_length, 1)
        if self.eval_lengths is None:
            check_int("max_eval_digits", self.max_eval_digits, self.min_train_digits)
            self.eval_lengths = tuple(range(self.min_train_digits, self.max_eval_digits + 1))
        else:
            self.eval_lengths = check_lengths("eval_lengths", self.eval_lengths)
        if not isinstance(self.reverse_digits, bool):
            raise TypeError(
                "reverse_digits must be a bool (true or false), "
                f"got {type(self.reverse_digits).__name__} {self.reverse_digits!r}"
            )
        check_int("pad_to", self.pad_to, 0)
        longest = max(self.max_train_digits, *self.eval_lengths)
        if 0 < self.pad_to < longest:
            raise ValueError(
                f"pad_to must be 0 (no padding) or at least the longest training or evaluation "
                f"length ({longest} digits), got {self.pad_to}"
            )

    @property
    def vocabulary(self) -> list[str]:
        return [*DIGITS, PLUS]

    def _write(self, value: int, width: int) -> tuple[str, ...]:
        digits = str(value).zfill(width)  # zfill(0) leaves the number as it is
        return tuple(digits[::-1] if self.reverse_digits else digits)

    def pair_example(self, a: int, b: int) -> Example:
        """The example of ``a + b`` in this task's format."""
        for option, value in (("a", a), ("b", b)):
            check_int(option, value, 0)
        length = len(str(max(a, b)))
        if 0 < self.pad_to < length:
            raise ValueError(f"{max(a, b)} has {length} digits, more than pad_to={self.pad_to}")
        source = (*self._write(a, self.pad_to), PLUS, *self._write(b, self.pad_to))
        target = self._write(a + b, self.pad_to + 1 if self.pad_to else 0)
        return Example(source, target, length)

    def example(self, source: Sequence[str]) -> Example:
        """The example of a source written in this task's format (``"12+345"``, or with padding
        and ``reverse_digits``, ``"2100+5430"``); ``ValueError`` for anything else, e.g. a
        leading zero where the task writes none."""
        tokens = tuple(source)
        text = "".join(map(str, tokens))
        operands = text.split(PLUS)
        if not set(tokens) <= set(self.vocabulary) or len(operands) != 2 or not all(operands):
            raise ValueError(f"expected digits, then {PLUS!r}, then digits; got {text!r}")
        a, b = (int(o[::-1] if self.reverse_digits else o) for o in operands)
        if 0 < self.pad_to < len(str(max(a, b))):
            raise ValueError(f"{text!r} has an operand longer than pad_to={self.pad_to} digits")
        expected = self.pair_example(a, b)
        if expected.source != tokens:
            raise ValueError(
                f"{text!r} is not how this task writes {a} + {b}: expected "
                f"{''.join(expected.source)!r} (reverse_digits={self.reverse_digits}, "
                f"pad_to={self.pad_to})"
            )
        return expected

    def generate(self, seed: int) -> TaskData:
        rng = random.Random(check_seed(seed))
        train = []
        train_pairs: dict[int, set[tuple[int, int]]] = {}
        for _ in range(self.n_train):
            length = rng.randint(self.min_train_digits, self.max_train_digits)
            pair = _draw_pair(rng, length)
            train_pairs.setdefault(length, set()).add(pair)
            train.append(self.pair_example(*pair))
        evaluation = []
        for length in self.eval_lengths:
            avoid = train_pairs.get(length, set())
            for pair in _distinct_pairs(rng, length, self.n_eval_per_length, avoid):
                evaluation.append(self.pair_example(*pair))
        return TaskData(
            train=train,
            evaluation=evaluation,
            train_lengths=(self.min_train_digits, self.max_train_digits),
            vocabulary=self.vocabulary,
        )


register_task("addition")(AdditionTask)
