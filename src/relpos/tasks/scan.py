"""SCAN, generated from its grammar: navigation commands → action sequences.

Lake & Baroni, "Generalization without Systematicity: On the Compositional Skills of
Sequence-to-Sequence Recurrent Networks", ICML 2018 (arXiv:1711.00350). The data::

    source                                  target                                   length
    jump twice                              I_JUMP I_JUMP                            2
    walk opposite left                      I_TURN_LEFT I_TURN_LEFT I_WALK           3
    look after jump                         I_JUMP I_LOOK                            2
    run around right                        I_TURN_RIGHT I_RUN (4 times)             8

The grammar (their Fig. 6, with their ``D[1] opposite D[2]`` written out), ``U`` a primitive verb
and ``X`` a verb or ``turn``::

    C   -> S and S | S after S | S
    S   -> V twice | V thrice | V
    V   -> X opposite Dir | X around Dir | X Dir | U
    X   -> U | turn
    Dir -> left | right
    U   -> walk | look | run | jump

and its interpretation, ``T = I_TURN_LEFT`` or ``I_TURN_RIGHT`` by ``Dir``, ``[[turn]]`` empty::

    [[walk]] = I_WALK (look, run, jump alike)       [[X Dir]]          = T [[X]]
    [[X opposite Dir]] = T T [[X]]                   [[X around Dir]]   = (T [[X]]) x 4
    [[V twice]] = [[V]] x 2,  [[V thrice]] = [[V]] x 3
    [[S1 and S2]] = [[S1]] [[S2]]                    [[S1 after S2]]    = [[S2]] [[S1]]

34 ``V`` phrases, 102 ``S`` phrases, ``102 + 2 * 102**2 = 20,910`` commands: the published set.
``length`` is the action-sequence length (1 to 48), as in the length split.

Splits (registered as ``"scan"`` with ``split=``):

* ``"length"`` (Lake & Baroni's): train on action sequences of length ≤ 22, test on ≥ 24 (no
  command has 23): 16,990 / 3,920 examples.
* ``"length25"`` (Kazemnejad et al. 2023): ≤ 25 / > 25: 17,774 / 3,136.

The test set has only unseen lengths; ``n_eval_seen`` moves that many random training commands
into the evaluation set to give a seen-length baseline (0 by default, keeping the published
counts). ``n_train`` / ``n_eval`` subsample the training set / the unseen-length test set
(``n_eval=0`` drops it, which needs ``n_eval_seen > 0``). ``train_lengths`` is the split's range,
1 to the cutoff, even where ``n_train`` or ``n_eval_seen`` leave a length out of training.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass

from .base import Example, TaskData, check_seed, hold_out, register_task

__all__ = [
    "ScanTask",
    "interpret",
    "scan_commands",
    "SPLITS",
    "PRIMITIVES",
    "DIRECTIONS",
    "COMMAND_WORDS",
    "ACTIONS",
]

PRIMITIVES = {"walk": "I_WALK", "look": "I_LOOK", "run": "I_RUN", "jump": "I_JUMP"}
DIRECTIONS = {"left": "I_TURN_LEFT", "right": "I_TURN_RIGHT"}
#: how many times each repetition word repeats its phrase.
REPEATS = {"twice": 2, "thrice": 3}
CONJUNCTIONS = ("and", "after")

COMMAND_WORDS = [
    *PRIMITIVES,
    "turn",
    *DIRECTIONS,
    "opposite",
    "around",
    *REPEATS,
    *CONJUNCTIONS,
]
ACTIONS = [*PRIMITIVES.values(), *DIRECTIONS.values()]

#: action-sequence length cutoff per split: train on ``length <= cutoff``, test on the rest.
SPLITS = {"length": 22, "length25": 25}


class _NotScan(ValueError):
    pass


def _verb_phrase(words: Sequence[str]) -> tuple[str, ...]:
    """``[[V]]`` for ``V -> X opposite Dir | X around Dir | X Dir | U``."""
    if len(words) == 1:
        if words[0] not in PRIMITIVES:
            raise _NotScan(f"a one-word phrase must be one of {', '.join(PRIMITIVES)}")
        return (PRIMITIVES[words[0]],)
    verb, direction = words[0], words[-1]
    if verb not in PRIMITIVES and verb != "turn":
        raise _NotScan(f"expected a verb ({', '.join(PRIMITIVES)}, turn), got {verb!r}")
    if direction not in DIRECTIONS:
        raise _NotScan(f"expected a direction (left, right), got {direction!r}")
    act = (PRIMITIVES[verb],) if verb in PRIMITIVES else ()  # [[turn]] itself does nothing
    turn = (DIRECTIONS[direction],)
    if len(words) == 2:
        return turn + act
    if len(words) == 3 and words[1] == "opposite":
        return turn + turn + act
    if len(words) == 3 and words[1] == "around":
        return (turn + act) * 4
    raise _NotScan(f"cannot read {' '.join(words)!r} as a verb phrase")


def _sentence(words: Sequence[str]) -> tuple[str, ...]:
    """``[[S]]`` for ``S -> V twice | V thrice | V``."""
    if not words:
        raise _NotScan("expected a phrase, got nothing")
    if words[-1] in REPEATS:
        if len(words) == 1:
            raise _NotScan(f"{words[-1]!r} needs a phrase before it")
        return _verb_phrase(words[:-1]) * REPEATS[words[-1]]
    return _verb_phrase(words)


def interpret(command: str | Sequence[str]) -> tuple[str, ...]:
    """The action sequence of a SCAN command (a string or a sequence of words).

    >>> interpret("look after jump twice")
    ('I_JUMP', 'I_JUMP', 'I_LOOK')

    Raises ``ValueError`` for anything outside the grammar.
    """
    words = command.split() if isinstance(command, str) else list(command)
    conjunctions = [i for i, word in enumerate(words) if word in CONJUNCTIONS]
    try:
        if len(conjunctions) > 1:
            raise _NotScan("at most one 'and' / 'after' is allowed")
        if not conjunctions:
            return _sentence(words)
        i = conjunctions[0]
        first, second = _sentence(words[:i]), _sentence(words[i + 1 :])
        # "S1 after S2" does S2 first.
        return first + second if words[i] == "and" else second + first
    except _NotScan as error:
        raise ValueError(f"not a SCAN command: {' '.join(words)!r} ({error})") from None


@functools.lru_cache(maxsize=1)
def scan_commands() -> tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]:
    """Every SCAN command with its actions, ``((words, actions), ...)`` in grammar order.

    Computed once per process (a fraction of a second) and cached.
    """
    verbs = [*PRIMITIVES, "turn"]
    verb_phrases = [(u,) for u in PRIMITIVES]
    verb_phrases += [(x, d) for x in verbs for d in DIRECTIONS]
    verb_phrases += [
        (x, how, d) for how in ("opposite", "around") for x in verbs for d in DIRECTIONS
    ]
    sentences = verb_phrases + [(*v, r) for r in REPEATS for v in verb_phrases]
    commands = sentences + [
        (*first, conjunction, *second)
        for conjunction in CONJUNCTIONS
        for first in sentences
        for second in sentences
    ]
    return tuple((words, interpret(words)) for words in commands)


def _check_count(option: str, value: object, minimum: int, *, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        none = " or None" if allow_none else ""
        raise ValueError(f"{option} must be an int >= {minimum}{none}, got {value!r}")


@dataclass
class ScanTask:
    """SCAN with a length split (see the module docstring)."""

    #: "length" (≤ 22 / ≥ 24, Lake & Baroni) or "length25" (≤ 25 / > 25, Kazemnejad et al.).
    split: str = "length"
    #: keep this many training commands (random, by seed); None keeps all.
    n_train: int | None = None
    #: keep this many unseen-length test commands (random, by seed); None keeps all.
    n_eval: int | None = None
    #: move this many training commands into evaluation, to score seen lengths.
    n_eval_seen: int = 0
    name: str = "scan"

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        _check_count("n_train", self.n_train, 1, allow_none=True)
        _check_count("n_eval", self.n_eval, 0, allow_none=True)
        _check_count("n_eval_seen", self.n_eval_seen, 0, allow_none=False)
        if self.n_eval == 0 and self.n_eval_seen == 0:
            raise ValueError(
                "n_eval=0 with n_eval_seen=0 leaves SCAN with no evaluation examples; give "
                "n_eval >= 1 (unseen-length test commands; None keeps all) or n_eval_seen > 0 "
                "(training-length commands held out of training)"
            )

    @property
    def vocabulary(self) -> list[str]:
        return COMMAND_WORDS + ACTIONS

    def example(self, source: str | Sequence[str]) -> Example:
        """The example of one command (``ValueError`` outside the grammar)."""
        actions = interpret(source)
        words = source.split() if isinstance(source, str) else source
        return Example(tuple(words), actions, len(actions))

    def generate(self, seed: int) -> TaskData:
        rng = random.Random(check_seed(seed))
        cutoff = SPLITS[self.split]
        train, test = [], []
        for words, actions in scan_commands():
            example = Example(words, actions, len(actions))
            (train if example.length <= cutoff else test).append(example)
        shortest = min(ex.length for ex in train)
        rng.shuffle(train)
        train, held_out = hold_out(train, self.n_eval_seen, rng, option="n_eval_seen")
        if self.n_train is not None:
            train = train[: self.n_train]  # already shuffled: a random subset
        if self.n_eval is not None:
            test = rng.sample(test, min(self.n_eval, len(test)))
        evaluation = sorted(held_out + test, key=lambda ex: ex.length)
        return TaskData(
            train=train,
            evaluation=evaluation,
            train_lengths=(shortest, cutoff),
            vocabulary=self.vocabulary,
        )


register_task("scan")(ScanTask)
