"""Task generators: lengths, vocabularies, determinism, SCAN's published counts, user files."""

from __future__ import annotations

import collections
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relpos.tasks import (
    Example,
    ScanTask,
    StringTask,
    Task,
    TaskData,
    TsvTask,
    available_tasks,
    get_task,
    hold_out,
    interpret,
    read_tsv,
    register_task,
    scan_commands,
)
from relpos.tasks.base import TASKS

SMALL = {"n_train": 2000, "n_eval_per_length": 20}


def lengths(examples):
    return {ex.length for ex in examples}


def test_registry_lists_every_task():
    assert {"copy", "reverse", "duplicate", "copy-kz", "reverse-kz", "scan", "tsv"} <= set(
        available_tasks()
    )


def test_unknown_task_lists_valid_names():
    with pytest.raises(ValueError, match="unknown task 'nope'.*copy.*reverse.*scan"):
        get_task("nope")


def test_unknown_option_lists_valid_options():
    with pytest.raises(ValueError, match="no option.*colour.*n_train"):
        get_task("copy", colour="red")
    with pytest.raises(ValueError, match="no option.*k.*split"):
        get_task("scan", k=3)


# --- copy / reverse / duplicate ---------------------------------------------------------------

EXPECTED_TARGET = {
    "copy": lambda s: s,
    "reverse": lambda s: s[::-1],
    "duplicate": lambda s: s + s,
}


@pytest.mark.parametrize("name", ["copy", "reverse", "duplicate"])
def test_ontanon_protocol(name):
    task = get_task(name, **SMALL)
    assert isinstance(task, Task) and task.name == name
    data = task.generate(0)
    assert data.train_lengths == (1, 16)
    assert lengths(data.train) == set(range(1, 17))
    # seen lengths re-tested on held-out strings, unseen 17-24 and beyond to 32.
    assert lengths(data.evaluation) == set(range(1, 33))
    assert data.vocabulary == list("0123456789")
    for ex in data.train + data.evaluation:
        assert ex.length == len(ex.source)
        assert ex.target == EXPECTED_TARGET[name](ex.source)
        assert set(ex.source) <= set(data.vocabulary)
    assert not data.seen(17) and data.seen(16)


@pytest.mark.parametrize("name", ["copy-kz", "reverse-kz"])
def test_kazemnejad_protocol(name):
    data = get_task(name, **SMALL).generate(0)
    assert data.train_lengths == (1, 20)
    assert max(lengths(data.train)) == 20
    assert lengths(data.evaluation) == set(range(1, 41))
    operation = name.removesuffix("-kz")
    assert all(ex.target == EXPECTED_TARGET[operation](ex.source) for ex in data.evaluation)


def test_explicit_targets():
    task = StringTask("duplicate")
    assert task.example("123").target == tuple("123123")
    assert StringTask("reverse").example(["1", "2", "3"]).target == ("3", "2", "1")


def test_string_task_is_deterministic_per_seed_and_differs_across_seeds():
    task = get_task("reverse", **SMALL)
    first, again, other = task.generate(3), task.generate(3), task.generate(4)
    assert first.train == again.train and first.evaluation == again.evaluation
    assert first.train != other.train
    assert first.evaluation != other.evaluation


def test_generation_leaves_global_random_state_alone():
    random.seed(123)
    expected = random.random()
    random.seed(123)
    get_task("copy", **SMALL).generate(0)
    assert random.random() == expected


def test_evaluation_strings_are_distinct_and_held_out_where_possible():
    data = get_task("copy", n_train=3000, n_eval_per_length=50).generate(1)
    training = {ex.source for ex in data.train}
    by_length = collections.defaultdict(list)
    for ex in data.evaluation:
        by_length[ex.length].append(ex.source)
    for length, sources in by_length.items():
        assert len(sources) == len(set(sources)) == min(50, 10**length)
        if length >= 3:  # 1000+ strings: room for 50 unseen ones
            assert not training & set(sources)
    # lengths 1 and 2: training has used up the space, so evaluation reuses it.
    assert set(by_length[1]) == {(d,) for d in "0123456789"}


def test_small_space_fills_unseen_strings_first():
    # 2 symbols, length 4: 16 strings. Training sees some; the fresh ones come first.
    task = StringTask(
        "copy",
        min_train_length=4,
        max_train_length=4,
        eval_lengths=[4],
        vocab_size=2,
        n_train=5,
        n_eval_per_length=16,
    )
    data = task.generate(0)
    training = {ex.source for ex in data.train}
    evaluated = [ex.source for ex in data.evaluation]
    assert len(set(evaluated)) == 16
    fresh = 16 - len(training)
    assert not training & set(evaluated[:fresh])
    assert set(evaluated[fresh:]) == training


@settings(max_examples=25, deadline=None)
@given(
    low=st.integers(1, 5),
    span=st.integers(0, 6),
    vocab_size=st.integers(2, 36),
    operation=st.sampled_from(["copy", "reverse", "duplicate"]),
    seed=st.integers(0, 2**32),
)
def test_string_options_are_respected(low, span, vocab_size, operation, seed):
    task = StringTask(
        operation,
        min_train_length=low,
        max_train_length=low + span,
        max_eval_length=low + span + 3,
        vocab_size=vocab_size,
        n_train=50,
        n_eval_per_length=3,
    )
    data = task.generate(seed)
    assert all(low <= ex.length <= low + span for ex in data.train)
    assert lengths(data.evaluation) == set(range(low, low + span + 4))
    assert len(data.vocabulary) == vocab_size
    tokens = {t for ex in data.train + data.evaluation for t in ex.source}
    assert tokens <= set(data.vocabulary)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"vocab_size": 1}, "vocab_size must be in \\[2, 36\\], got 1"),
        ({"vocab_size": 37}, "vocab_size"),
        ({"min_train_length": 0}, "min_train_length must be >= 1, got 0"),
        ({"min_train_length": 5, "max_train_length": 4}, "max_train_length must be >= 5, got 4"),
        ({"n_train": 0}, "n_train"),
        ({"eval_lengths": []}, "eval_lengths must name at least one"),
        ({"eval_lengths": [3, 0]}, "eval_lengths"),
        ({"max_eval_length": 0}, "max_eval_length"),
    ],
)
def test_bad_string_options_raise(options, message):
    with pytest.raises(ValueError, match=message):
        get_task("copy", **options)


def test_bad_types_raise_type_errors():
    with pytest.raises(TypeError, match="n_train must be an int, got float"):
        get_task("copy", n_train=10.0)
    with pytest.raises(TypeError, match="seed must be an int"):
        get_task("copy", **SMALL).generate("0")
    with pytest.raises(ValueError, match="operation must be one of copy, reverse, duplicate"):
        StringTask("sort")


# --- SCAN -------------------------------------------------------------------------------------


def test_scan_command_set_is_the_published_one():
    commands = scan_commands()
    assert len(commands) == 20_910
    assert len({words for words, _ in commands}) == 20_910
    action_lengths = collections.Counter(len(actions) for _, actions in commands)
    assert 23 not in action_lengths
    assert min(action_lengths) == 1 and max(action_lengths) == 48


@pytest.mark.parametrize(
    "split, n_train, n_test, cutoff",
    [("length", 16_990, 3_920, 22), ("length25", 17_774, 3_136, 25)],
)
def test_scan_length_splits(split, n_train, n_test, cutoff):
    data = get_task("scan", split=split).generate(0)
    assert (len(data.train), len(data.evaluation)) == (n_train, n_test)
    assert max(lengths(data.train)) == cutoff
    assert min(lengths(data.evaluation)) > cutoff
    assert data.train_lengths == (1, cutoff)
    assert not {ex.source for ex in data.train} & {ex.source for ex in data.evaluation}
    assert set(data.vocabulary) == {t for ex in data.train for t in (*ex.source, *ex.target)}


@pytest.mark.parametrize(
    "command, actions",
    [
        ("jump twice", "I_JUMP I_JUMP"),
        ("turn left", "I_TURN_LEFT"),
        ("walk opposite left", "I_TURN_LEFT I_TURN_LEFT I_WALK"),
        ("run around right", " ".join(["I_TURN_RIGHT I_RUN"] * 4)),
        ("look after jump", "I_JUMP I_LOOK"),
        ("turn around left", " ".join(["I_TURN_LEFT"] * 4)),
        ("turn opposite right thrice", " ".join(["I_TURN_RIGHT"] * 6)),
        ("walk left and run thrice", "I_TURN_LEFT I_WALK I_RUN I_RUN I_RUN"),
        ("jump right twice after look", "I_LOOK I_TURN_RIGHT I_JUMP I_TURN_RIGHT I_JUMP"),
    ],
)
def test_scan_interpretation(command, actions):
    assert interpret(command) == tuple(actions.split())


@pytest.mark.parametrize(
    "command",
    [
        "turn",
        "walk and",
        "twice",
        "jump twice twice",
        "walk and run and look",
        "fly left",
        "walk up",
        "walk opposite",
        "run around left right",
    ],
)
def test_scan_rejects_commands_outside_the_grammar(command):
    with pytest.raises(ValueError, match="not a SCAN command"):
        interpret(command)


def test_scan_seed_shuffles_and_subsamples():
    a, b = ScanTask(n_eval=100).generate(0), ScanTask(n_eval=100).generate(1)
    assert a.train == ScanTask(n_eval=100).generate(0).train
    assert a.train != b.train and sorted(map(repr, a.train)) == sorted(map(repr, b.train))
    assert len(a.evaluation) == 100 and a.evaluation != b.evaluation
    data = ScanTask(n_train=500, n_eval=0, n_eval_seen=50).generate(0)
    assert len(data.train) == 500 and len(data.evaluation) == 50
    assert all(data.seen(ex.length) for ex in data.evaluation)
    assert not {ex.source for ex in data.train} & {ex.source for ex in data.evaluation}


def test_scan_bad_options():
    with pytest.raises(ValueError, match="split must be one of length, length25, got 'simple'"):
        ScanTask(split="simple")
    with pytest.raises(ValueError, match="n_eval must be an int >= 0"):
        ScanTask(n_eval=-1)


def test_scan_refuses_an_empty_evaluation_set_when_built():
    # Found when the task is built, not after a run has trained.
    with pytest.raises(ValueError, match=r"n_eval=0 with n_eval_seen=0.*n_eval >= 1.*n_eval_seen"):
        get_task("scan", n_eval=0, n_train=100)
    assert len(ScanTask(n_eval=0, n_eval_seen=5).generate(0).evaluation) == 5


# --- a user's own task ------------------------------------------------------------------------


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_tsv_split_by_length(tmp_path):
    path = write(tmp_path / "data.tsv", "a b\tb a\n\na b c\tc b a\nx\tx\r\nd e f g\tg f e d\n")
    task = get_task(f"file:{path}", max_train_length=2)
    assert task.name == f"file:{path}"
    data = task.generate(0)
    assert sorted(ex.length for ex in data.train) == [1, 2]
    assert [ex.length for ex in data.evaluation] == [3, 4]
    assert data.train_lengths == (1, 2)
    assert data.evaluation[0] == Example(("a", "b", "c"), ("c", "b", "a"), 3)
    assert data.vocabulary == ["a", "b", "c", "d", "e", "f", "g", "x"]


def test_tsv_separate_files_char_level_and_target_length(tmp_path):
    train = write(tmp_path / "train.tsv", "ab\tba\nabc\tcba\n")
    test = write(tmp_path / "test.tsv", "abcd\tdcba dcba\n")
    data = get_task("tsv", path=train, eval_path=test, char_level=True).generate(0)
    assert {ex.source for ex in data.train} == {("a", "b"), ("a", "b", "c")}
    assert data.evaluation[0].target == tuple("dcba dcba")
    by_target = TsvTask(train, eval_path=test, length_of="target").generate(0)
    assert by_target.evaluation[0].length == 2  # whitespace tokens: "dcba", "dcba"


def test_tsv_hold_out_and_determinism(tmp_path):
    lines = "".join(f"{' '.join('x' * n)}\t{n}\n" for n in range(1, 21))
    path = write(tmp_path / "data.tsv", lines)
    task = TsvTask(path, n_eval_seen=5)
    a, b = task.generate(0), task.generate(1)
    assert len(a.train) == 15 and len(a.evaluation) == 5
    assert a.train == task.generate(0).train and a.train != b.train


def test_tsv_malformed_line_names_file_and_line(tmp_path):
    path = write(tmp_path / "bad.tsv", "1 2\t2 1\n\n3 4 5 4 3\n")
    with pytest.raises(ValueError, match=r"bad\.tsv, line 3: expected 'source<TAB>target'"):
        read_tsv(path)
    path = write(tmp_path / "tabs.tsv", "1\t2\t3\n")
    with pytest.raises(ValueError, match=r"tabs\.tsv, line 1: .*found 2 tabs"):
        read_tsv(path)
    path = write(tmp_path / "half.tsv", "1 2\t2 1\n1 2\t \n")
    with pytest.raises(ValueError, match=r"half\.tsv, line 2: the target is empty"):
        get_task(f"file:{path}", n_eval_seen=1)


def test_tsv_empty_and_missing_files(tmp_path):
    empty = write(tmp_path / "empty.tsv", "\n  \n")
    with pytest.raises(ValueError, match=r"empty\.tsv has no examples"):
        get_task(f"file:{empty}", max_train_length=3)
    missing = tmp_path / "missing.tsv"
    with pytest.raises(FileNotFoundError, match="missing.tsv") as error:
        get_task(f"file:{missing}", max_train_length=3)
    assert error.value.filename == str(missing)


def test_tsv_needs_an_evaluation_set(tmp_path):
    path = write(tmp_path / "data.tsv", "1\t1\n2 2\t2 2\n")
    with pytest.raises(ValueError, match="needs something to evaluate on"):
        TsvTask(path)
    with pytest.raises(ValueError, match="max_train_length=5 leaves no evaluation examples"):
        TsvTask(path, max_train_length=5)
    with pytest.raises(ValueError, match="not both"):
        TsvTask(path, eval_path=path, max_train_length=1)


def test_python_protocol_task_registers_and_generates():
    class Constant:
        name = "constant-test"

        def generate(self, seed: int) -> TaskData:
            ex = Example(("a",), ("b",), 1)
            return TaskData([ex], [ex], train_lengths=(1, 1))

    try:
        register_task("constant-test")(Constant)
        task = get_task("constant-test")
        assert isinstance(task, Task)
        assert task.generate(0).vocabulary == ["a", "b"]
        with pytest.raises(ValueError, match="already registered"):
            register_task("constant-test")(lambda: Constant())
    finally:
        TASKS.pop("constant-test", None)


def test_tsv_hold_out_takes_distinct_examples_and_every_copy(tmp_path):
    # 40 lines, 5 distinct examples, each 8 times: holding out 2 must remove all 16 copies.
    lines = "".join(f"{i % 5} {i % 5}\t{i % 5}\n" for i in range(40))
    task = TsvTask(write(tmp_path / "dups.tsv", lines), n_eval_seen=2)
    for seed in range(5):
        data = task.generate(seed)
        held = [(ex.source, ex.target) for ex in data.evaluation]
        assert len(held) == len(set(held)) == 2
        assert not set(held) & {(ex.source, ex.target) for ex in data.train}
        assert len(data.train) == 40 - 2 * 8
    # at least one distinct example must stay in training: 5 distinct, not 40 lines.
    with pytest.raises(ValueError, match=r"n_eval_seen=5 must be below the 5 distinct training"):
        TsvTask(write(tmp_path / "dups.tsv", lines), n_eval_seen=5)


def test_hold_out_without_duplicates_draws_as_before():
    # SCAN and duplicate-free files rely on this: the same draw (one rng.sample over the
    # examples' positions), so stored results reproduce.
    examples = [Example((str(i),), (str(i),), 1) for i in range(30)]
    kept, held = hold_out(examples, 7, random.Random(5))
    chosen = set(random.Random(5).sample(range(30), 7))
    assert held == [ex for i, ex in enumerate(examples) if i in chosen]
    assert kept == [ex for i, ex in enumerate(examples) if i not in chosen]


def test_tsv_train_lengths_come_from_the_final_training_set(tmp_path):
    # One line of length 10 among lengths 1-3: once it is held out, 10 is not a seen length.
    lines = "".join(f"{' '.join('x' * (1 + i % 3))}\t{i}\n" for i in range(30))
    path = write(tmp_path / "data.tsv", lines + f"{' '.join('y' * 10)}\tlong\n")
    task = TsvTask(path, n_eval_seen=10)
    held_long = 0
    for seed in range(20):
        data = task.generate(seed)
        assert data.train_lengths == (min(lengths(data.train)), max(lengths(data.train)))
        if 10 in lengths(data.evaluation):
            held_long += 1
            assert data.train_lengths == (1, 3) and not data.seen(10)
    assert held_long > 0  # the case this test is about did happen


def test_tsv_byte_order_mark_is_not_part_of_the_first_token(tmp_path):
    path = tmp_path / "bom.tsv"
    path.write_bytes("\ufeff1 2\t2 1\n3\t3\n".encode())
    assert read_tsv(path)[0].source == ("1", "2")


def test_tsv_lines_break_only_at_newlines(tmp_path):
    # A lone "\r" is whitespace inside line 1, not a line break: the error names line 2, as an
    # editor or `wc -l` would.
    path = tmp_path / "cr.tsv"
    path.write_bytes(b"1 2\t2\r1\n3\t3\t3\r\n")
    with pytest.raises(ValueError, match=r"cr\.tsv, line 2: .*found 2 tabs"):
        read_tsv(path)
    path.write_bytes(b"1 2\t2\r1\n3\t3\r\n")
    assert [ex.target for ex in read_tsv(path)] == [("2", "1"), ("3",)]
    # Old Mac line breaks make one long line; the error says why.
    path.write_bytes(b"1\t1\r2\t2\r")
    with pytest.raises(ValueError, match=r"line 1: .*lone '\\r' line breaks"):
        read_tsv(path)


def test_tsv_lines_without_tokens_are_blank_but_half_empty_lines_are_errors(tmp_path):
    # A tab-only line (a spreadsheet's empty row) has no tokens on either side: it is blank.
    path = write(tmp_path / "blank.tsv", "\t\n1\t1\n \t \n")
    assert len(read_tsv(path)) == len(read_tsv(path, char_level=True)) == 1
    path = write(tmp_path / "half.tsv", "1\t1\n3\t   \n")
    with pytest.raises(ValueError, match=r"half\.tsv, line 2: the target is empty"):
        read_tsv(path)
    path = write(tmp_path / "half.tsv", "1\t1\n\t3\n")
    with pytest.raises(ValueError, match=r"half\.tsv, line 2: the source is empty"):
        read_tsv(path)


def test_tsv_task_without_a_path_says_how_to_give_one():
    with pytest.raises(ValueError, match=r"path=.*file:PATH"):
        get_task("tsv", max_train_length=3)


def test_a_task_option_called_name_reaches_the_task():
    # get_task's own first parameter is positional-only, so `name` is the task's option.
    assert get_task("reverse", name="reverse-2").name == "reverse-2"
