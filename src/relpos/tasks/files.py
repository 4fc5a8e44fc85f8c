"""A user's own task: a file of ``source<TAB>target`` lines, or a Python object.

**From a file.** UTF-8 text (a leading byte-order mark is dropped), one example per line (lines
end in LF or CR LF, so line numbers match an editor's), source and target separated by
exactly one tab; tokens are split on whitespace (``char_level=True``: every character of the
field, after stripping its ends, is a token, a space included). A line without any token, such as
an empty line or a lone tab (a spreadsheet's empty row), holds nothing to lose and is skipped; a
line with tokens on one side of the tab only is an error. For example::

    3 1 4<TAB>4 1 3
    jump twice<TAB>I_JUMP I_JUMP

A task needs to know what to evaluate on: a second file, or a length threshold that splits one
file into seen (``length <= max_train_length``) and unseen lengths, or ``n_eval_seen`` random
examples held out of training. ``length`` is the source token count (``length_of="target"`` to
count targets)::

    get_task("file:data.tsv", max_train_length=10)           # one file, split by length
    get_task("file:train.tsv", eval_path="test.tsv")         # separate files
    TsvTask("train.tsv", eval_path="test.tsv")               # the same, without the registry

``n_eval_seen`` counts *distinct* ``(source, target)`` examples: a held-out example is evaluated
once, and every line repeating it leaves the training set with it, so no "seen-length" test
example was trained on. ``train_lengths`` (the seen range) is the shortest and longest length
left in training after the hold-out. (A separate ``eval_path`` file is taken as given: it is
not checked against the training file.)

``"file:PATH"`` is short for ``get_task("tsv", path=PATH, ...)``. The file is read when the task
is built, so a missing file (``FileNotFoundError`` with the path), an empty one or a malformed
line (``ValueError`` naming the file, the line number and what was expected) fails at once.

**From Python.** A task is any object with a ``name`` and a ``generate(seed) -> TaskData``
method (:class:`relpos.tasks.Task`); ``seed`` must fully determine the data (draw from
``random.Random(seed)``, never global state). Register a factory to make it available by name::

    import random
    from relpos.tasks import Example, TaskData, register_task

    @register_task("sort")
    class SortDigits:
        name = "sort"

        def generate(self, seed: int) -> TaskData:
            rng = random.Random(seed)

            def sample(length):
                source = tuple(rng.choices("0123456789", k=length))
                return Example(source, tuple(sorted(source)), length)

            train = [sample(rng.randint(1, 8)) for _ in range(5000)]
            evaluation = [sample(n) for n in range(1, 17) for _ in range(50)]
            return TaskData(train, evaluation, train_lengths=(1, 8))

    get_task("sort").generate(0)
"""

from __future__ import annotations

import errno
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from .base import Example, TaskData, check_seed, hold_out, register_task

__all__ = ["TsvTask", "read_tsv"]

LENGTH_OF = ("source", "target")


def _shown(line: str, limit: int = 60) -> str:
    return repr(line if len(line) <= limit else line[:limit] + "…")


def _tokens(text: str, char_level: bool) -> tuple[str, ...]:
    return tuple(text.strip()) if char_level else tuple(text.split())


def read_tsv(
    path: str | os.PathLike, *, char_level: bool = False, length_of: str = "source"
) -> list[Example]:
    """The examples of a ``source<TAB>target`` file, in file order (see the module docstring)."""
    if length_of not in LENGTH_OF:
        raise ValueError(f"length_of must be 'source' or 'target', got {length_of!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "task file not found", str(path))
    if not path.is_file():
        raise ValueError(f"task file {str(path)!r} is not a regular file")
    examples = []
    try:
        # newline="\n": break lines at "\n" only (then drop a "\r" before it), not at a lone
        # "\r" as universal newlines would, so line numbers are an editor's.
        with path.open(encoding="utf-8-sig", newline="\n") as lines:
            for number, line in enumerate(lines, start=1):
                line = line.removesuffix("\n").removesuffix("\r")
                if not line.strip():
                    continue
                fields = line.split("\t")
                if len(fields) != 2:
                    old_mac = " (lone '\\r' line breaks? end lines in \\n or \\r\\n)"
                    raise ValueError(
                        f"{path}, line {number}: expected 'source<TAB>target' (exactly one tab), "
                        f"found {len(fields) - 1} tabs in {_shown(line)}"
                        + (old_mac if "\r" in line else "")
                    )
                source, target = (_tokens(text, char_level) for text in fields)
                if not source or not target:
                    side = "source" if not source else "target"
                    raise ValueError(
                        f"{path}, line {number}: the {side} is empty; expected tokens on both "
                        f"sides of the tab in {_shown(line)}"
                    )
                length = len(source) if length_of == "source" else len(target)
                examples.append(Example(source, target, length))
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: expected UTF-8 text ({error})") from None
    if not examples:
        raise ValueError(f"{path} has no examples: expected lines of 'source<TAB>target'")
    return examples


@dataclass
class TsvTask:
    """A task read from a ``source<TAB>target`` file (see the module docstring)."""

    #: the file to read (required; ``None`` only so that a missing path gets a clear error).
    path: str | os.PathLike | None = None
    #: a second file to evaluate on; otherwise split ``path`` by ``max_train_length``.
    eval_path: str | os.PathLike | None = None
    #: train on ``length <= max_train_length``, evaluate on the longer examples.
    max_train_length: int | None = None
    char_level: bool = False
    #: which side's token count is the reported length: "source" or "target".
    length_of: str = "source"
    #: move this many random distinct training examples, every copy of each, into evaluation
    #: (the seen-length baseline).
    n_eval_seen: int = 0
    #: defaults to ``"file:" + path``.
    name: str = ""
    _train: list[Example] = field(init=False, repr=False)
    _evaluation: list[Example] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.path is None:
            raise ValueError(
                "the tsv task needs a file: pass path=, e.g. get_task('tsv', path='data.tsv', "
                "...), or name it get_task('file:PATH', ...)"
            )
        if not isinstance(self.path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or path, got {type(self.path).__name__}")
        if not isinstance(self.char_level, bool):
            raise TypeError(f"char_level must be a bool, got {self.char_level!r}")
        if isinstance(self.n_eval_seen, bool) or not isinstance(self.n_eval_seen, int):
            raise TypeError(f"n_eval_seen must be an int, got {self.n_eval_seen!r}")
        if self.n_eval_seen < 0:
            raise ValueError(f"n_eval_seen must be >= 0, got {self.n_eval_seen}")
        threshold = self.max_train_length
        if threshold is not None and (
            isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1
        ):
            raise ValueError(f"max_train_length must be an int >= 1 or None, got {threshold!r}")
        if self.eval_path is not None and threshold is not None:
            raise ValueError(
                "give eval_path (a separate evaluation file) or max_train_length (split one "
                f"file by length), not both; got eval_path={str(self.eval_path)!r}, "
                f"max_train_length={threshold}"
            )
        if self.eval_path is None and threshold is None and self.n_eval_seen == 0:
            raise ValueError(
                f"task file {str(self.path)!r} needs something to evaluate on: eval_path=FILE, "
                "max_train_length=N (split by length) or n_eval_seen=N (hold out N examples)"
            )
        if not self.name:
            self.name = f"file:{self.path}"

        examples = read_tsv(self.path, char_level=self.char_level, length_of=self.length_of)
        if self.eval_path is not None:
            self._train = examples
            self._evaluation = read_tsv(
                self.eval_path, char_level=self.char_level, length_of=self.length_of
            )
        elif threshold is not None:
            self._train = [ex for ex in examples if ex.length <= threshold]
            self._evaluation = [ex for ex in examples if ex.length > threshold]
            lengths = sorted({ex.length for ex in examples})
            if not self._train or not self._evaluation:
                raise ValueError(
                    f"max_train_length={threshold} leaves no "
                    f"{'training' if not self._train else 'evaluation'} examples in "
                    f"{self.path}: its {self.length_of} lengths run {lengths[0]}–{lengths[-1]}"
                )
        else:
            self._train, self._evaluation = examples, []
        distinct = len({(ex.source, ex.target) for ex in self._train})
        if self.n_eval_seen >= distinct:
            repeats = f" ({len(self._train)} lines)" if distinct < len(self._train) else ""
            raise ValueError(
                f"n_eval_seen={self.n_eval_seen} must be below the {distinct} distinct training "
                f"examples{repeats} of {self.path}: every copy of a held-out example leaves "
                "training, and training must keep one"
            )

    def generate(self, seed: int) -> TaskData:
        rng = random.Random(check_seed(seed))
        train = list(self._train)
        rng.shuffle(train)
        train, held_out = hold_out(train, self.n_eval_seen, rng, option="n_eval_seen")
        # "Seen" is the range of training lengths: a length whose every example was held out
        # is unseen only at the ends of that range; inside it (a gap), it counts as seen.
        shortest = min(ex.length for ex in train)
        longest = max(ex.length for ex in train)
        evaluation = sorted(held_out + self._evaluation, key=lambda ex: ex.length)
        return TaskData(train=train, evaluation=evaluation, train_lengths=(shortest, longest))


register_task("tsv")(TsvTask)
