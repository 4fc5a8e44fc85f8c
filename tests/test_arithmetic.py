"""The addition task: sums checked against Python's ints in every format, lengths counted in
digits, held-out evaluation pairs, small spaces, options, the CLI's length flags, and a tiny run."""

from __future__ import annotations

import collections
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from relpos.cli import build_parser
from relpos.cli.compare import build_experiments
from relpos.experiments.compare import validate
from relpos.experiments.predict import split_source, task_example
from relpos.models import ModelConfig
from relpos.tasks import AdditionTask, Task, available_tasks, get_task
from relpos.tasks.arithmetic import count_pairs
from relpos.training import TrainConfig, train

SMALL = {"n_train": 2000, "n_eval_per_length": 20}

#: (reverse_digits, pad_to): the plain format, Lee et al.'s reversed one, Ontañón's padding.
FORMATS = [(False, 0), (True, 0), (False, 12), (True, 12)]


def value(digits, reverse: bool) -> int:
    """The number ``digits`` writes, read most-significant first unless ``reverse``: a place
    value sum, independent of the task's own str/int round trip."""
    ordered = list(digits)[::-1] if not reverse else list(digits)  # least-significant first
    return sum(int(d) * 10**place for place, d in enumerate(ordered))


def operands(example, reverse: bool) -> tuple[int, int]:
    plus = example.source.index("+")
    return value(example.source[:plus], reverse), value(example.source[plus + 1 :], reverse)


def check_written(digits, reverse: bool, width: int) -> None:
    """``digits`` are digit tokens, ``width`` of them when padded, else without a leading zero."""
    assert digits and all(d in "0123456789" for d in digits)
    if width:
        assert len(digits) == width
    else:
        most_significant_first = list(digits)[::-1] if reverse else list(digits)
        assert most_significant_first[0] != "0" or len(digits) == 1


def check_example(example, reverse: bool, pad_to: int) -> tuple[int, int]:
    """Everything one example must satisfy; returns its operands."""
    assert example.source.count("+") == 1
    a, b = operands(example, reverse)
    plus = example.source.index("+")
    check_written(example.source[:plus], reverse, pad_to)
    check_written(example.source[plus + 1 :], reverse, pad_to)
    check_written(example.target, reverse, pad_to + 1 if pad_to else 0)
    assert value(example.target, reverse) == a + b
    assert example.length == len(str(max(a, b)))
    return a, b


def by_length(examples) -> dict[int, list]:
    groups = collections.defaultdict(list)
    for example in examples:
        groups[example.length].append(example)
    return groups


# --- the registry and the default protocol ----------------------------------------------------


def test_addition_is_registered_with_ontanons_lengths():
    assert "addition" in available_tasks()
    task = get_task("addition")
    assert isinstance(task, AdditionTask) and isinstance(task, Task) and task.name == "addition"
    data = task.generate(0)
    assert data.train_lengths == (1, 8)
    assert set(by_length(data.train)) == set(range(1, 9))
    # seen lengths re-tested on held-out pairs, Ontañón's unseen 9-10 and on to 12.
    assert set(by_length(data.evaluation)) == set(range(1, 13))
    assert data.vocabulary == [*"0123456789", "+"]
    assert data.seen(8) and not data.seen(9)
    assert len(data.train) == 20_000


@pytest.mark.parametrize("reverse, pad_to", FORMATS)
def test_every_target_is_the_sum(reverse, pad_to):
    task = AdditionTask(reverse_digits=reverse, pad_to=pad_to, **SMALL)
    data = task.generate(0)
    for example in data.train + data.evaluation:
        check_example(example, reverse, pad_to)
        assert set(example.source) | set(example.target) <= set(data.vocabulary)
    if pad_to:  # every sequence as long as every other: only the digit count varies
        assert {len(ex.source) for ex in data.train + data.evaluation} == {2 * pad_to + 1}
        assert {len(ex.target) for ex in data.train + data.evaluation} == {pad_to + 1}


def test_formats_write_the_same_pairs():
    # The draws do not depend on the format: one seed gives the same sums written four ways.
    pairs = []
    for reverse, pad_to in FORMATS:
        data = AdditionTask(reverse_digits=reverse, pad_to=pad_to, **SMALL).generate(5)
        pairs.append([operands(ex, reverse) for ex in data.train + data.evaluation])
    assert pairs[0] == pairs[1] == pairs[2] == pairs[3]


@pytest.mark.parametrize(
    "a, b, options, source, target",
    [
        (287345105, 756044225, {}, "287345105+756044225", "1043389330"),  # the docstring's
        (287345105, 756044225, {"reverse_digits": True}, "501543782+522440657", "0339833401"),
        (287345105, 756044225, {"pad_to": 12}, "000287345105+000756044225", "0001043389330"),
        (99999999, 1, {}, "99999999+1", "100000000"),  # a carry through every place
        (99999999, 1, {"reverse_digits": True}, "99999999+1", "000000001"),
        (0, 0, {}, "0+0", "0"),
        (0, 0, {"reverse_digits": True, "pad_to": 3}, "000+000", "0000"),
        (5, 5, {"pad_to": 2}, "05+05", "010"),
        (7, 1234, {"reverse_digits": True, "pad_to": 4}, "7000+4321", "14210"),
    ],
)
def test_examples_written_out(a, b, options, source, target):
    task = AdditionTask(max_train_digits=1, eval_lengths=[1], **options)
    example = task.pair_example(a, b)
    assert "".join(example.source) == source and "".join(example.target) == target
    assert example.length == max(len(str(a)), len(str(b)))
    assert task.example(source) == example  # parsing a source gives the same example


@settings(max_examples=200, deadline=None)
@given(
    a=st.integers(0, 10**20),
    b=st.integers(0, 10**20),
    reverse=st.booleans(),
    pad=st.sampled_from([0, 21, 25]),
)
def test_any_pair_is_written_and_read_back(a, b, reverse, pad):
    task = AdditionTask(reverse_digits=reverse, pad_to=pad, max_eval_digits=21)
    example = task.pair_example(a, b)
    assert check_example(example, reverse, pad) == (a, b)
    assert task.example(example.source) == example


@pytest.mark.parametrize(
    "source, options",
    [
        ("12+", {}),
        ("+12", {}),
        ("1+2+3", {}),
        ("123", {}),
        ("1a+2", {}),
        ("012+3", {}),  # a leading zero the task never writes
        ("21+30", {"reverse_digits": True}),  # 3 written "30" reversed: a leading zero
        ("12+3", {"pad_to": 2}),  # not padded
        ("123+004", {"pad_to": 2}),  # an operand wider than pad_to
    ],
)
def test_sources_outside_the_format_are_refused(source, options):
    with pytest.raises(ValueError, match="expected|not how this task writes|pad_to"):
        AdditionTask(max_train_digits=2, max_eval_digits=2, **options).example(source)


def test_predict_scores_typed_sums():
    # `relpos predict RUN 12+345` splits the typed text into characters and asks the task.
    task = AdditionTask(reverse_digits=True)
    source = split_source("21+543", task.vocabulary)
    example = task_example(task, {}, source)
    assert "".join(example.target) == "753" and example.length == 3  # 12 + 345 = 357
    assert task_example(task, {}, split_source("1+2+3", task.vocabulary)) is None


# --- sampling ---------------------------------------------------------------------------------


def test_training_draws_lengths_and_operand_sizes_as_documented():
    data = AdditionTask(n_train=20_000).generate(0)
    groups = by_length(data.train)
    other_digits = collections.defaultdict(collections.Counter)
    a_is_longer = 0
    for length, examples in groups.items():
        assert 0.8 * 2500 < len(examples) < 1.2 * 2500  # 20,000 over 8 lengths, uniformly
        for example in examples:
            a, b = operands(example, reverse=False)
            other_digits[length][min(len(str(a)), len(str(b)))] += 1
            a_is_longer += len(str(a)) > len(str(b))
    for length, counts in other_digits.items():
        # the shorter operand's digit count is uniform in [1, length]
        assert set(counts) == set(range(1, length + 1))
        expected = len(groups[length]) / length
        assert all(0.75 * expected < c < 1.25 * expected for c in counts.values()), counts
    unequal = sum(1 for ex in data.train if len({len(str(n)) for n in operands(ex, False)}) == 2)
    assert 0.45 < a_is_longer / unequal < 0.55  # either operand may be the longer
    assert any(ex.source[0] == "0" for ex in data.train)  # 0 is a 1-digit operand


def test_deterministic_per_seed_and_different_across_seeds():
    task = get_task("addition", **SMALL)
    first, again, other = task.generate(3), task.generate(3), task.generate(4)
    assert first.train == again.train and first.evaluation == again.evaluation
    assert first.train != other.train and first.evaluation != other.evaluation


def test_generation_leaves_global_random_state_alone():
    random.seed(123)
    expected = random.random()
    random.seed(123)
    get_task("addition", **SMALL).generate(0)
    assert random.random() == expected


def test_evaluation_pairs_are_distinct_counted_and_held_out():
    data = get_task("addition", n_train=20_000, n_eval_per_length=100).generate(1)
    training = {ex.source for ex in data.train}
    groups = by_length(data.evaluation)
    for length, examples in groups.items():
        sources = [ex.source for ex in examples]
        assert len(sources) == len(set(sources)) == 100
        if length >= 2:  # 9,900+ pairs: room for 100 unseen ones
            assert not training & set(sources), length
    # length 1: training has drawn all 100 pairs of digits, so evaluation is those 100.
    every_digit_pair = {(a, b) for a in range(10) for b in range(10)}
    assert {operands(ex, False) for ex in groups[1]} == every_digit_pair
    assert {ex.source for ex in groups[1]} <= training


def test_unseen_lengths_are_drawn_like_training_pairs():
    data = AdditionTask(max_train_digits=2, max_eval_digits=9, **SMALL).generate(0)
    shorter = collections.Counter()
    for example in by_length(data.evaluation)[9]:
        a, b = operands(example, reverse=False)
        shorter[min(len(str(a)), len(str(b)))] += 1
    # 20 pairs, shorter operand uniform in 1-9 digits: uniform pairs would give 9 digits in ~80%.
    assert shorter[9] < 10 and len(shorter) >= 4


def test_count_pairs_matches_enumeration():
    for length in (1, 2):
        pairs = [
            (a, b) for a in range(10**length) for b in range(10**length)
            if len(str(max(a, b))) == length
        ]  # fmt: skip
        assert count_pairs(length) == len(pairs)
    assert [count_pairs(n) for n in (1, 2, 3)] == [100, 9_900, 990_000]


def test_small_space_fills_unseen_pairs_first():
    # Length 1: 100 pairs. Five training draws; evaluating all 100 puts the fresh ones first.
    task = AdditionTask(max_train_digits=1, eval_lengths=[1], n_train=5, n_eval_per_length=100)
    data = task.generate(0)
    training = {ex.source for ex in data.train}
    evaluated = [ex.source for ex in data.evaluation]
    assert len(set(evaluated)) == 100
    fresh = 100 - len(training)
    assert not training & set(evaluated[:fresh])
    assert set(evaluated[fresh:]) == training
    # More than exist: all of them, once each.
    data = AdditionTask(max_train_digits=1, eval_lengths=[1], n_eval_per_length=500).generate(0)
    assert len({ex.source for ex in data.evaluation}) == len(data.evaluation) == 100


def test_a_small_space_is_sampled_not_taken_in_order():
    # Length 1 after 60 training draws: the fresh pairs are listed, and 20 are drawn at random
    # from them, not the first 20 in order (a = 0, then 1, ...).
    task = AdditionTask(max_train_digits=1, eval_lengths=[1], n_train=60, n_eval_per_length=20)
    first_operands = set()
    for seed in range(3):
        data = task.generate(seed)
        assert not {ex.source for ex in data.evaluation} & {ex.source for ex in data.train}
        first_operands |= {operands(ex, False)[0] for ex in data.evaluation}
    assert len(first_operands) >= 8


def test_a_training_set_that_nearly_fills_a_length_leaves_its_remainder_to_evaluation():
    # Length 2 trained with 30,000 draws: few of its 9,900 pairs stay unseen; the enumeration
    # branch must find them, and the evaluation must not repeat a training pair while any exist.
    task = AdditionTask(
        min_train_digits=2, max_train_digits=2, eval_lengths=[2], n_train=30_000,
        n_eval_per_length=400,
    )  # fmt: skip
    data = task.generate(0)
    training = {ex.source for ex in data.train}
    unseen = count_pairs(2) - len(training)
    evaluated = [ex.source for ex in data.evaluation]
    assert len(evaluated) == len(set(evaluated)) == 400
    assert len(set(evaluated) - training) == min(400, unseen)


@settings(max_examples=25, deadline=None)
@given(
    low=st.integers(1, 4),
    span=st.integers(0, 4),
    extra=st.integers(0, 4),
    reverse=st.booleans(),
    padded=st.booleans(),
    seed=st.integers(0, 2**32),
)
def test_options_are_respected(low, span, extra, reverse, padded, seed):
    high, longest = low + span, low + span + extra
    task = AdditionTask(
        min_train_digits=low,
        max_train_digits=high,
        max_eval_digits=longest,
        reverse_digits=reverse,
        pad_to=longest if padded else 0,
        n_train=60,
        n_eval_per_length=3,
    )
    data = task.generate(seed)
    assert data.train_lengths == (low, high)
    assert all(low <= ex.length <= high for ex in data.train)
    assert set(by_length(data.evaluation)) == set(range(low, longest + 1))
    for ex in data.train + data.evaluation:
        check_example(ex, reverse, task.pad_to)


def test_explicit_eval_lengths_override_max_eval_digits():
    task = get_task("addition", eval_lengths=[12, 3, 3, 10], max_eval_digits=4, **SMALL)
    assert task.eval_lengths == (3, 10, 12)
    assert set(by_length(task.generate(0).evaluation)) == {3, 10, 12}


# --- options ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        ({"min_train_digits": 0}, "min_train_digits must be >= 1, got 0"),
        ({"min_train_digits": 3, "max_train_digits": 2}, "max_train_digits must be >= 3, got 2"),
        ({"max_eval_digits": 0}, "max_eval_digits must be >= 1, got 0"),
        ({"n_train": 0}, "n_train must be >= 1, got 0"),
        ({"n_eval_per_length": 0}, "n_eval_per_length must be >= 1, got 0"),
        ({"pad_to": -1}, "pad_to must be >= 0, got -1"),
        ({"pad_to": 11}, r"pad_to must be 0 \(no padding\) or at least .*\(12 digits\), got 11"),
        ({"pad_to": 8, "eval_lengths": [9]}, r"pad_to .*\(9 digits\), got 8"),
        ({"pad_to": 3, "max_train_digits": 4, "max_eval_digits": 3}, r"\(4 digits\), got 3"),
        ({"eval_lengths": []}, "eval_lengths must name at least one length"),
        ({"eval_lengths": [3, 0]}, "every entry of eval_lengths must be >= 1, got 0"),
    ],
)
def test_out_of_range_options_raise_value_errors_naming_them(options, message):
    with pytest.raises(ValueError, match=message):
        get_task("addition", **options)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"n_train": 10.0}, "n_train must be an int, got float"),
        ({"max_train_digits": True}, "max_train_digits must be an int, got bool"),
        ({"pad_to": "12"}, "pad_to must be an int, got str"),
        ({"reverse_digits": "true"}, r"reverse_digits must be a bool \(true or false\), got str"),
        ({"reverse_digits": 1}, "reverse_digits must be a bool"),
        ({"eval_lengths": "9"}, "eval_lengths must be a sequence of ints"),
        ({"eval_lengths": [9.0]}, "every entry of eval_lengths must be an int"),
    ],
)
def test_wrong_types_raise_type_errors_naming_them(options, message):
    with pytest.raises(TypeError, match=message):
        get_task("addition", **options)


def test_unknown_options_and_bad_seeds():
    with pytest.raises(ValueError, match="no option.*max_train_length.*max_train_digits"):
        get_task("addition", max_train_length=4)
    with pytest.raises(TypeError, match="seed must be an int"):
        get_task("addition", **SMALL).generate("0")
    with pytest.raises(TypeError, match="a must be an int"):
        AdditionTask().pair_example(1.5, 2)
    with pytest.raises(ValueError, match="b must be >= 0"):
        AdditionTask().pair_example(1, -2)
    with pytest.raises(ValueError, match="more than pad_to=3"):
        AdditionTask(max_train_digits=3, max_eval_digits=3, pad_to=3).pair_example(1000, 1)


# --- relpos compare ---------------------------------------------------------------------------


def compare_experiment(*flags):
    args = build_parser().parse_args(["compare", "--task", "addition", *flags])
    (experiment,) = build_experiments(args)[0]
    validate([experiment])  # the task builds with the options the flags gave
    return experiment


def test_compare_maps_length_flags_to_digit_options():
    experiment = compare_experiment("--train-lengths", "2-4", "--eval-lengths", "1-8")
    assert experiment.task_options == {
        "min_train_digits": 2,
        "max_train_digits": 4,
        "eval_lengths": list(range(1, 9)),
    }
    experiment = compare_experiment(
        "--task-option", "max_train_digits=4", "--task-option", "reverse_digits=true",
        "--task-option", "max_eval_digits=9", "--eval-lengths", "1-6",
    )  # fmt: skip
    # --eval-lengths replaces max_eval_digits, as it replaces a string task's max_eval_length
    assert experiment.task_options == {
        "max_train_digits": 4,
        "reverse_digits": True,
        "eval_lengths": list(range(1, 7)),
    }
    with pytest.raises(ValueError, match=r"pad_to must be .*\(8 digits\), got 6"):
        compare_experiment("--train-lengths", "1-4", "--eval-lengths", "1-8",
                           "--task-option", "pad_to=6")  # fmt: skip


# --- a run ------------------------------------------------------------------------------------


def test_a_tiny_model_trains_on_addition_and_is_scored_per_digit_count():
    model = ModelConfig(d_model=16, num_heads=2, num_layers=1, d_ff=32, dropout=0.0,
                        scheme="shaw", scheme_options={"max_distance": 3})  # fmt: skip
    options = {"max_train_digits": 3, "max_eval_digits": 5, "n_train": 256, "n_eval_per_length": 4}
    config = TrainConfig(task="addition", task_options=options, model=model, steps=40,
                         batch_size=16, lr=3e-3, warmup_steps=5, checkpoint_every=0,
                         log_every=10, threads=1)  # fmt: skip
    torch.manual_seed(0)
    result = train(config, progress=False)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.85 * losses[0], losses
    by_digits = result.metrics["by_length"]
    assert list(by_digits) == ["1", "2", "3", "4", "5"]
    assert [row["seen"] for row in by_digits.values()] == [True, True, True, False, False]
    assert all(0.0 <= row["token"] <= 1.0 for row in by_digits.values())
