"""``relpos predict``: trained runs decode inputs of your own, as their evaluation does."""

from __future__ import annotations

import dataclasses
import json

import pytest

from relpos.cli import main
from relpos.experiments import Experiment, Variant, plots, run_compare
from relpos.experiments.predict import find_runs, predict_runs, split_source, unseen_example
from relpos.models import ModelConfig
from relpos.tasks import get_task
from relpos.tasks.scan import ScanTask, interpret
from relpos.training import TrainConfig, load_run, train

TASK_OPTIONS = {"max_train_length": 3, "eval_lengths": [1, 2, 3, 4, 5], "n_train": 300}


@pytest.fixture(scope="module")
def compare_dir(tmp_path_factory):
    """A tiny compare folder: a sinusoidal and a Shaw variant, seed 0 (seconds to train)."""
    out = tmp_path_factory.mktemp("predict") / "run"
    experiment = Experiment(
        task="reverse",
        task_options=TASK_OPTIONS,
        variants=[Variant("sinusoidal"), Variant("shaw", {"max_distance": 2})],
        seeds=[0],
        train={"steps": 30, "batch_size": 16},
    )
    run_compare([experiment], out, progress=False, log=None, jobs=1)
    return out


def test_predictions_on_the_evaluation_set_reproduce_the_stored_metrics(compare_dir):
    # The compare scored each run with its own evaluation code; predicting the same sources
    # through `relpos predict`'s path must give the same exact-match rates.
    results = json.loads((compare_dir / "results.json").read_text())
    (experiment,) = results["experiments"]
    data = get_task("reverse", **TASK_OPTIONS).generate(0)
    sources = ["".join(ex.source) for ex in data.evaluation]
    table = predict_runs(find_runs(compare_dir), sources)
    assert list(table.runs) == ["sinusoidal", "shaw k=2"]
    assert table.train_lengths == (1, 3)
    for row, example in zip(table.rows, data.evaluation, strict=True):
        assert row.expected == example.target == tuple(reversed(row.source))
        assert row.seen == (example.length <= 3)
    for run in experiment["runs"]:
        for group, seen in (("seen", True), ("unseen", False)):
            rows = [row for row in table.rows if row.seen is seen]
            exact = sum(row.correct(run["variant"]) for row in rows) / len(rows)
            assert exact == pytest.approx(run["metrics"][group]["exact"]), (run["variant"], group)


def test_each_column_is_that_run_decoding_alone(compare_dir):
    runs = find_runs(compare_dir)
    table = predict_runs(runs, ["12", "4321", "00000"])
    for label, path in runs.items():
        alone = load_run(path).predict([("1", "2"), ("4", "3", "2", "1"), ("0",) * 5])
        assert [list(row.outputs[label]) for row in table.rows] == alone
    for row in table.rows:
        for label, output in row.outputs.items():
            assert row.correct(label) == (output == tuple(reversed(row.source)))


def test_cli_prints_expected_outputs_and_marks(compare_dir, capsys):
    assert main(["predict", str(compare_dir), "123", "12345", "--scheme", "shaw"]) == 0
    printed = capsys.readouterr().out
    assert "task reverse, trained on lengths 1–3" in printed
    assert "sinusoidal" not in printed  # --scheme keeps the Shaw run only
    assert "123  (length 3, seen)" in printed and "12345  (length 5, unseen)" in printed
    assert "  expected    321" in printed and "  expected    54321" in printed
    assert printed.count("✓") + printed.count("✗") == 2
    assert "shaw k=2: " in printed.splitlines()[-1] and "of 2 right" in printed


def test_cli_json_and_a_single_run_folder(compare_dir, capsys):
    run_dir = find_runs(compare_dir, scheme="shaw")["shaw k=2"]
    assert main(["predict", str(run_dir), "1 2 3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    (label,) = result["runs"]
    assert label == "shaw k=2"  # as a compare labels the same variant
    (row,) = result["predictions"]
    assert row["source"] == ["1", "2", "3"] and row["expected"] == ["3", "2", "1"]
    assert row["length"] == 3 and row["seen"] is True
    assert row["correct"][label] == (row["outputs"][label] == ["3", "2", "1"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["12", "--task", "copy"], "has no 'copy' experiment; its tasks: reverse"),
        (["12", "--scheme", "t5"], "no finished run of scheme 't5'; its finished runs are of shaw"),
        (
            ["12", "--seed", "7"],
            "run with seed 7; its finished runs are of shaw, sinusoidal (seeds: 0)",
        ),
        (["12a"], "outside the task vocabulary ('a')"),
        (["12", "--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
    ],
)
def test_cli_errors_name_what_to_fix(compare_dir, capsys, argv, message):
    assert main(["predict", str(compare_dir), *argv]) == 2
    assert message in capsys.readouterr().err


def test_options_that_pick_compare_runs_are_refused_on_a_training_run(compare_dir):
    run_dir = find_runs(compare_dir, scheme="shaw")["shaw k=2"]
    with pytest.raises(ValueError, match="seed picks runs in a compare folder"):
        find_runs(run_dir, seed=0)
    with pytest.raises(ValueError, match="is a 'shaw' run, not a 'none' one"):
        find_runs(run_dir, scheme="none")
    with pytest.raises(FileNotFoundError, match="neither a training run"):
        find_runs(compare_dir / "runs")


def _fake_compare(folder, runs, *, with_files=True):
    """A compare folder's results.json (no models): find_runs reads only that and config.json."""
    variants = [{"scheme": "shaw", "label": "shaw k=2"}, {"scheme": "none", "label": "none"}]
    experiment = {"task": "reverse", "seeds": [0, 1], "variants": variants, "runs": []}
    for label, seed in runs:
        run_dir = f"runs/reverse/{label}/seed{seed}"
        experiment["runs"].append({"variant": label, "seed": seed, "run_dir": run_dir})
        if with_files:
            (folder / run_dir).mkdir(parents=True)
            (folder / run_dir / "config.json").write_text("{}")
    (folder / "results.json").write_text(json.dumps({"experiments": [experiment]}))


def test_find_runs_takes_each_variants_lowest_seed_in_the_tables_order(tmp_path):
    _fake_compare(tmp_path, [("none", 1), ("shaw k=2", 1), ("none", 0), ("shaw k=2", 0)])
    runs = find_runs(tmp_path)
    assert list(runs) == ["shaw k=2", "none"]  # the variants' order, not the runs'
    assert runs["none"] == tmp_path / "runs/reverse/none/seed0"
    assert find_runs(tmp_path, seed=1)["shaw k=2"] == tmp_path / "runs/reverse/shaw k=2/seed1"
    assert list(find_runs(tmp_path, scheme="none")) == ["none"]


def test_find_runs_takes_the_first_experiment_with_the_scheme(tmp_path):
    _fake_compare(tmp_path, [("none", 0)])
    results = json.loads((tmp_path / "results.json").read_text())
    second = {**results["experiments"][0], "task": "copy", "runs": []}
    second["runs"] = [{"variant": "shaw k=2", "seed": 3, "run_dir": "runs/copy/shaw/seed3"}]
    (tmp_path / "runs/copy/shaw/seed3").mkdir(parents=True)
    (tmp_path / "runs/copy/shaw/seed3/config.json").write_text("{}")
    results["experiments"].append(second)
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert find_runs(tmp_path) == {"none": tmp_path / "runs/reverse/none/seed0"}
    assert find_runs(tmp_path, scheme="shaw") == {"shaw k=2": tmp_path / "runs/copy/shaw/seed3"}
    with pytest.raises(ValueError, match="no finished 'reverse' run of scheme 'shaw'"):
        find_runs(tmp_path, task="reverse", scheme="shaw")


def test_find_runs_says_a_stored_results_folder_has_no_models(tmp_path):
    _fake_compare(tmp_path, [("none", 0)], with_files=False)
    with pytest.raises(FileNotFoundError, match="keeps results.json and table.md only"):
        find_runs(tmp_path)


def test_sources_split_into_words_or_characters():
    digits = list("0123456789")
    assert split_source("314", digits) == ("3", "1", "4")
    assert split_source(" 3 1 4 ", digits) == ("3", "1", "4")
    scan = ScanTask().vocabulary
    assert split_source("jump twice", scan) == ("jump", "twice")
    assert split_source("walk", scan) == ("walk",)
    with pytest.raises(ValueError, match="holds no tokens"):
        split_source("  ", digits)
    with pytest.raises(ValueError, match=r"outside the task vocabulary \('hop'\)"):
        split_source("hop twice", scan)


def test_scan_example_interprets_any_command():
    example = ScanTask().example("walk around left after jump")
    assert example.source == ("walk", "around", "left", "after", "jump")
    assert example.target == ("I_JUMP",) + ("I_TURN_LEFT", "I_WALK") * 4
    assert example.length == 9
    assert ScanTask().example(("jump", "twice")).target == interpret("jump twice")
    with pytest.raises(ValueError, match="not a SCAN command"):
        ScanTask().example("twice jump")


def test_a_source_the_task_cannot_score_still_decodes(tmp_path, monkeypatch):
    # SCAN: a string of command words outside the grammar has no expected actions; a file
    # task: a source not in its file has none either, and a moved file leaves only the models.
    data = tmp_path / "data.tsv"
    data.write_text("a b\tb a\na\ta\na b c\tc b a\n")
    config = TrainConfig(
        task=f"file:{data}",
        task_options={"max_train_length": 2},
        model=ModelConfig(d_model=16, num_heads=2, num_layers=1, d_ff=32, max_len=16),
        steps=2,
        batch_size=2,
    )
    train(config, tmp_path / "run", progress=False)
    table = predict_runs({"run": tmp_path / "run"}, ["a b c", "c a"])
    known, unknown = table.rows
    assert known.expected == ("c", "b", "a") and known.length == 3 and known.seen is False
    assert unknown.expected is None and unknown.length is None and unknown.correct("run") is None
    assert table.train_lengths == (1, 2)
    # The attention plot of such a source teacher-forces the model's own output.
    drawn = {}
    monkeypatch.setattr(plots, "plot_attention", lambda maps, out, **kw: drawn.update(kw) or out)
    plots.plot_run_attention(tmp_path / "run", tmp_path / "a.png", source="c a")
    output = load_run(tmp_path / "run").predict([("c", "a")])[0]
    assert drawn["title"].endswith(
        f"not a task example: c a → {' '.join(output) or '<empty>'} (no expected output)"
    )
    data.unlink()
    table = predict_runs({"run": tmp_path / "run"}, ["a b c"])
    assert table.train_lengths is None and table.rows[0].expected is None
    assert len(table.rows[0].outputs["run"]) <= 16


def test_a_model_that_cannot_take_a_source_leaves_the_others_their_outputs(tmp_path):
    # A learned absolute table has max_len rows: a longer source is that run's error, not the
    # whole table's.
    runs = {}
    for scheme in ("learned", "shaw"):
        model = ModelConfig(d_model=16, num_heads=2, num_layers=1, d_ff=32, max_len=8)
        model = dataclasses.replace(model, scheme=scheme)
        config = TrainConfig(task_options=TASK_OPTIONS, model=model, steps=2, batch_size=4)
        train(config, tmp_path / scheme, progress=False)
        runs[scheme] = tmp_path / scheme
    table = predict_runs(runs, ["1234567890", "12"])
    long, short = table.rows
    assert "beyond this learned absolute table (max_len=8" in long.errors["learned"]
    assert "learned" not in long.outputs and long.correct("learned") is False
    assert set(long.outputs) == {"shaw"} and set(short.outputs) == {"learned", "shaw"}
    assert short.errors == {}
    assert table.to_dict()["predictions"][0]["errors"] == long.errors


def test_unseen_example_is_the_first_input_one_past_the_training_range(compare_dir, monkeypatch):
    results = json.loads((compare_dir / "results.json").read_text())
    (experiment,) = results["experiments"]
    table = unseen_example(compare_dir, experiment)
    data = get_task("reverse", **TASK_OPTIONS).generate(0)
    first = next(ex for ex in data.evaluation if ex.length == 4)  # trained on 1-3
    (row,) = table.rows
    assert row.source == first.source and row.expected == first.target and row.seen is False
    budget = len(first.target) + 1  # decoded as the evaluation decodes: the target and EOS
    for label, path in find_runs(compare_dir).items():
        expected = load_run(path).predict([first.source], max_new_tokens=budget)
        assert [list(row.outputs[label])] == expected
    calls = []
    with monkeypatch.context() as patch:
        patch.setattr(
            "relpos.experiments.predict.predict_runs",
            lambda runs, sources, **options: calls.append(options),
        )
        unseen_example(compare_dir, experiment)
    assert calls == [{"max_new_tokens": budget}]
    # Evaluated on training lengths only: nothing unseen to show.
    assert unseen_example(compare_dir, {**experiment, "eval_lengths": [1, 2, 3]}) is None


def test_character_level_tasks_keep_the_spaces_of_a_source(tmp_path, monkeypatch):
    # A char-level file task reads "a b" as three tokens, the space one of them; a typed source
    # must be split the same way, or another example is scored (and plotted).
    assert split_source(" a b ", [" ", "a", "b"], char_level=True) == ("a", " ", "b")
    with pytest.raises(ValueError, match=r"characters outside the task vocabulary \('c'\)"):
        split_source("a c", [" ", "a", "b"], char_level=True)
    data = tmp_path / "chars.tsv"
    data.write_text("a b\tb a\nab\tba\na\ta\nb\tb\nabb\tbba\n")
    model = ModelConfig(d_model=16, num_heads=2, num_layers=1, d_ff=32, max_len=16)
    options = {"max_train_length": 2, "char_level": True}
    train(TrainConfig(task=f"file:{data}", task_options=options, model=model, steps=2,
                      batch_size=2), tmp_path / "run", progress=False)  # fmt: skip
    (row,) = predict_runs({"run": tmp_path / "run"}, ["a b"]).rows
    assert row.source == ("a", " ", "b") and row.expected == ("b", " ", "a") and row.length == 3
    drawn = {}
    monkeypatch.setattr(plots, "plot_attention", lambda maps, out, **kw: drawn.update(kw) or out)
    plots.plot_run_attention(tmp_path / "run", tmp_path / "a.png", source="a b")
    assert drawn["query_labels"]["encoder.blocks.0.self_attn"] == ["a", " ", "b"]


def test_a_decoder_only_model_decodes_as_far_as_its_positions_reach(tmp_path):
    # Prompt and output share the positions of one sequence: by default a learned table of
    # max_len rows decodes what is left after the prompt, instead of failing past its end.
    model = ModelConfig(arch="decoder", d_model=16, num_heads=2, num_layers=1, d_ff=32,
                        scheme="learned", max_len=12)  # fmt: skip
    train(TrainConfig(task_options=TASK_OPTIONS, model=model, steps=2, batch_size=4),
          tmp_path / "run", progress=False)  # fmt: skip
    run = load_run(tmp_path / "run")
    (output,) = run.predict(["12345"])
    assert len(output) <= 12 - 6  # 5 source tokens and SEP
    with pytest.raises(ValueError, match="beyond this learned absolute table"):
        run.predict(["12345"], max_new_tokens=20)  # asked for explicitly: the table's limit


def test_long_outputs_are_cut_on_screen_only():
    from relpos.cli.predict import SHOWN_TOKENS, _joined

    tokens = ("7",) * (SHOWN_TOKENS + 10)
    assert _joined(tokens) == "7" * SHOWN_TOKENS + " … (+10 tokens)"
    assert _joined(("a", " ", "b")) == "a␣b"
