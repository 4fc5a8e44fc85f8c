"""``relpos compare``: end to end on a tiny budget, bad input, run folders, summaries, presets."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from relpos.cli import build_parser, main
from relpos.cli.compare import _command_line, build_experiments
from relpos.experiments import (
    Experiment,
    Variant,
    available_presets,
    get_preset,
    markdown_table,
    run_compare,
    summarise,
)
from relpos.experiments import compare as compare_module
from relpos.experiments.compare import validate

#: a budget at which a compare takes a few seconds: the results are noise, the plumbing is real.
TINY = [
    "--schemes", "none,shaw", "-k", "2", "--steps", "12", "--seeds", "0",
    "--train-lengths", "1-3", "--eval-lengths", "1-5", "--quiet", "--jobs", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "run"
    code = main(["compare", *TINY, "--out", str(out)])
    return code, out


def test_compare_end_to_end_writes_results_table_and_plot(tiny_run, capsys):
    code, out = tiny_run
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] is True
    assert results["command"].startswith("relpos compare")
    assert "--schemes none,shaw" in results["command"]
    assert set(results["machine"]) >= {"platform", "torch", "cpus"}
    (experiment,) = results["experiments"]
    assert experiment["task"] == "reverse"
    assert experiment["train_lengths"] == [1, 3]
    assert experiment["eval_lengths"] == [1, 2, 3, 4, 5]
    assert experiment["seeds"] == [0]
    assert experiment["train"]["steps"] == 12
    assert [v["label"] for v in experiment["variants"]] == ["none", "shaw k=2"]
    assert experiment["variants"][1]["options"] == {"max_distance": 2}
    assert [(r["variant"], r["seed"]) for r in experiment["runs"]] == [("none", 0), ("shaw k=2", 0)]
    for run in experiment["runs"]:
        assert (out / run["run_dir"] / "config.json").is_file()
        assert set(run["metrics"]["by_length"]) == {"1", "2", "3", "4", "5"}
    summary = experiment["summary"]["shaw k=2"]
    assert summary["seeds"] == 1
    assert [summary["by_length"][n]["seen"] for n in "12345"] == [True, True, True, False, False]
    for group in ("seen", "unseen"):
        assert 0.0 <= summary[group]["exact_mean"] <= 1.0
        assert summary[group]["exact_std"] == 0.0  # one seed
    png = (out / "accuracy.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    table = (out / "table.md").read_text()
    assert "| none |" in table and "| shaw k=2 |" in table and "unseen 4–5" in table


def test_compare_prints_the_table(tmp_path, capsys):
    code = main(["compare", *TINY, "--schemes", "shaw", "--out", str(tmp_path / "run")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "shaw k=2" in printed and "seen 1–3" in printed and "results.json" in printed
    # Under the table, one input of the shortest unseen length and the model's output for it.
    assert (
        "reverse: one input of the shortest unseen length, each variant's seed-0 model" in printed
    )
    assert "  (length 4, unseen)" in printed and "  expected    " in printed


@pytest.mark.parametrize("flag", ["--train-lengths", "--eval-lengths"])
def test_length_flags_on_a_task_without_length_options_name_the_flag(tmp_path, capsys, flag):
    # SCAN's lengths come from its split: the error names the flag the user typed, not an
    # option name the flag was turned into.
    out = tmp_path / "run"
    args = ["compare", "--task", "scan", "--schemes", "none", "--steps", "1", "--quiet"]
    assert main([*args, flag, "1-8", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert f"{flag}: task 'scan' takes no option for these lengths" in error
    assert "split" in error and not out.exists()


@pytest.mark.parametrize(
    "flags, names",
    [
        (["--schemes", "none,absolute"], ["'absolute'", "shaw", "sinusoidal", "learned"]),
        (["--task", "sort"], ["'sort'", "reverse", "copy", "scan"]),
        (["--preset", "table9"], ["'table9'", "k-sweep", "kv-ablation", "length-gen"]),
    ],
)
def test_unknown_names_exit_2_listing_the_valid_ones(tmp_path, capsys, flags, names):
    out = tmp_path / "run"
    code = main(["compare", *TINY, *flags, "--out", str(out)])
    assert code == 2
    error = capsys.readouterr().err
    for name in names:
        assert name in error
    assert not out.exists()  # nothing trained, no folder made


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_this_machine_lacks_is_a_clear_error_before_any_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["compare", *TINY, "--device", "cuda", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "device='cuda'" in error and "cannot use CUDA" in error and "Traceback" not in error
    assert not out.exists()


def test_task_options_reach_the_task_and_the_recorded_command(tmp_path):
    data = tmp_path / "pairs.tsv"
    lines = [f"{' '.join(w)}\t{' '.join(reversed(w))}" for w in ("ab", "abc", "ba", "cab", "abca")]
    data.write_text("\n".join(lines) + "\n")
    flags = ["compare", "--task", f"file:{data}", "--task-option", "max_train_length=3",
             "--train-lengths", "1-3", "--schemes", "shaw", "--steps", "3"]  # fmt: skip
    args = build_parser().parse_args(flags)
    experiments, _ = build_experiments(args)
    # A file task has no min_train_length; "1-3" needs none, so only the maximum is set.
    assert experiments[0].task_options == {"max_train_length": 3}
    assert "--task-option max_train_length=3" in _command_line(args)
    validate(experiments)  # the task builds with these options
    args = build_parser().parse_args([*flags[:5], "--train-lengths", "2-3"])
    with pytest.raises(ValueError, match="min_train_length"):
        validate(build_experiments(args)[0])  # a minimum the task cannot take is an error


def test_train_and_model_options_reach_every_run_and_the_recorded_command():
    flags = ["compare", "--preset", "kv-ablation", "--train-option", "lr=0.001", "--train-option",
             "warmup_steps=10", "--model-option", "d_model=32", "--steps", "7"]  # fmt: skip
    args = build_parser().parse_args(flags)
    experiments, _ = build_experiments(args)
    for experiment in experiments:  # the options join each experiment's own train settings
        assert experiment.train["lr"] == 0.001 and experiment.train["warmup_steps"] == 10
        assert experiment.train["steps"] == 7 and experiment.model["d_model"] == 32
        config = experiment.train_config(experiment.variants[0], 0)
        assert config.lr == 0.001 and config.model.d_model == 32
    command = _command_line(args)
    assert "--train-option lr=0.001 --train-option warmup_steps=10" in command
    assert "--model-option d_model=32" in command


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--train-option", "lrr=1"], "TrainConfig has no field 'lrr'; its fields: batch_size"),
        (["--model-option", "width=3"], "ModelConfig has no field 'width'"),
        (["--train-option", "seed=3"], "compare sets seed per run; use --seeds"),
        (["--model-option", "scheme=shaw"], "compare sets scheme per run; use --schemes"),
        (["--train-option", "steps=9"], r"steps given twice \(--steps and an option"),
        (["--arch", "decoder", "--model-option", "arch=encoder"], "arch given twice"),
        (["--train-option", "lr"], "expected KEY=VALUE"),
        (["--train-option", "lr=-1"], "lr must be a finite number >= 0"),
    ],
)
def test_bad_train_and_model_options_exit_2_before_training(tmp_path, capsys, extra, match):
    out = tmp_path / "never"
    flags = ["compare", "--schemes", "shaw", "--steps", "3", "--out", str(out), *extra]
    assert main(flags) == 2
    assert re.search(match, capsys.readouterr().err)
    assert not out.exists()


def test_scheme_options_after_colons_and_k_for_the_rest():
    flags = ["compare", "--schemes", "shaw,shaw:value_term=false,deberta:c2p=false:max_distance=8,"
             "transformer-xl", "-k", "4"]  # fmt: skip
    args = build_parser().parse_args(flags)
    (experiment,) = build_experiments(args)[0]
    assert [(v.scheme, v.options, v.label) for v in experiment.variants] == [
        ("shaw", {"max_distance": 4}, "shaw k=4"),
        ("shaw", {"value_term": False, "max_distance": 4}, "shaw value_term=False k=4"),
        # A k written out for one scheme is kept; -k sets it for the others.
        ("deberta", {"c2p": False, "max_distance": 8}, "deberta c2p=False k=8"),
        ("transformer-xl", {}, "transformer-xl"),
    ]
    assert "--schemes shaw,shaw:value_term=false" in _command_line(args)
    validate([experiment])


@pytest.mark.parametrize(
    "item, match",
    [
        (
            "shaw:value_term=maybe",
            "--schemes item 'shaw:value_term=maybe': value_term must be a bool",
        ),
        ("deberta:spread=2", "--schemes item 'deberta:spread=2': scheme 'deberta' has no option"),
        ("shaw:k4", "--schemes item 'shaw:k4': expected KEY=VALUE, got 'k4'"),
        ("rotary:base=10", "unknown position scheme 'rotary'"),
    ],
)
def test_bad_scheme_options_exit_2_naming_the_item(tmp_path, capsys, item, match):
    out = tmp_path / "run"
    assert main(["compare", "--schemes", item, "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert match in error and "Traceback" not in error
    assert not out.exists()


def test_existing_run_folder_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text("precious")
    code = main(["compare", *TINY, "--out", str(out)])
    assert code == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "results.json").read_text() == "precious"
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]


def test_bad_flags_are_rejected(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--train-lengths", "8-1"])
    assert exit_info.value.code == 2
    code = main(["compare", "--schemes", "none,learned", "-k", "3", "--out", str(tmp_path / "a")])
    assert code == 2 and "clipping distance" in capsys.readouterr().err
    code = main(["compare", "--preset", "k-sweep", "--task", "copy", "--out", str(tmp_path / "b")])
    assert code == 2 and "cannot be combined" in capsys.readouterr().err


def test_resume_trains_only_the_missing_runs(tmp_path, monkeypatch):
    experiment = Experiment(
        task="copy",
        task_options={"max_train_length": 2, "eval_lengths": [1, 2, 3], "n_train": 200},
        variants=[Variant("none"), Variant("shaw", {"max_distance": 1})],
        seeds=[0],
        train={"steps": 4, "batch_size": 8},
    )
    out = tmp_path / "run"
    first = run_compare([experiment], out, progress=False, log=None, plot=False, jobs=1)
    # Simulate a compare killed after its first run: drop the second from results.json.
    partial = json.loads((out / "results.json").read_text())
    partial["experiments"][0]["runs"] = partial["experiments"][0]["runs"][:1]
    partial["complete"] = False
    (out / "results.json").write_text(json.dumps(partial))

    import relpos.training

    calls = []
    real_train = relpos.training.train

    def counting_train(config, run_dir, **kwargs):
        calls.append((config.model.scheme, kwargs["resume"]))
        return real_train(config, run_dir, **kwargs)

    monkeypatch.setattr(relpos.training, "train", counting_train)
    resumed = run_compare(
        [experiment], out, progress=False, log=None, plot=False, resume=True, jobs=1
    )
    assert calls == [("shaw", True)]  # the finished run is kept, the other continued
    assert resumed["complete"] is True
    # Deterministic training: the resumed run's metrics are the uninterrupted ones.
    old_runs, new_runs = first["experiments"][0]["runs"], resumed["experiments"][0]["runs"]
    for old, new in zip(old_runs, new_runs, strict=True):
        assert (old["variant"], old["metrics"]) == (new["variant"], new["metrics"])
    with pytest.raises(ValueError, match="task: .copy. → .reverse."):
        other = Experiment(task="reverse", variants=[Variant("none")], seeds=[0])
        run_compare([other], out, progress=False, log=None, resume=True)


def test_parallel_runs_give_the_sequential_results(tmp_path):
    experiment = Experiment(
        task="reverse",
        task_options={"max_train_length": 3, "eval_lengths": [2, 4], "n_train": 200},
        variants=[Variant("sinusoidal"), Variant("shaw", {"max_distance": 1})],
        seeds=[0],
        train={"steps": 5, "batch_size": 8},
    )
    results = [
        run_compare([experiment], tmp_path / f"jobs{jobs}", progress=False, log=None, jobs=jobs)
        for jobs in (1, 2)
    ]
    sequential, parallel = (
        [r["metrics"] for r in res["experiments"][0]["runs"]] for res in results
    )
    assert sequential == parallel
    assert sequential[0] != sequential[1]  # two different models, not one result twice


def _metrics(seen: float, unseen: float, by_length: dict[int, float]) -> dict:
    return {
        "by_length": {
            str(n): {"exact": v, "token": v, "count": 10, "seen": n <= 2}
            for n, v in by_length.items()
        },
        "seen": {"exact": seen, "token": seen},
        "unseen": {"exact": unseen, "token": unseen},
        "final_loss": 0.5,
    }


def test_summarise_means_and_sample_std_over_seeds():
    runs = [
        {"variant": "a", "seed": 0, "seconds": 2.0, "metrics": _metrics(1.0, 0.5, {1: 1, 3: 0.5})},
        {"variant": "a", "seed": 1, "seconds": 4.0, "metrics": _metrics(1.0, 0.0, {1: 1, 3: 0.0})},
        {"variant": "b", "seed": 0, "seconds": 1.0, "metrics": _metrics(0.5, 0.0, {1: 1, 3: 0.0})},
    ]
    summary = summarise(runs)
    assert list(summary) == ["a", "b"]
    a = summary["a"]
    assert a["seeds"] == 2 and a["seconds_mean"] == 3.0
    assert a["seen"]["exact_mean"] == 1.0 and a["seen"]["exact_std"] == 0.0
    assert a["unseen"]["exact_mean"] == 0.25
    assert math.isclose(a["unseen"]["exact_std"], math.sqrt(0.125))  # sample std of (0.5, 0)
    assert a["by_length"]["3"] == pytest.approx(
        {"exact_mean": 0.25, "exact_std": math.sqrt(0.125), "token_mean": 0.25,
         "token_std": math.sqrt(0.125), "seen": False, "count": 20}
    )  # fmt: skip
    assert summary["b"]["unseen"]["exact_std"] == 0.0
    table = markdown_table(
        {"experiments": [{"title": "t", "seeds": [0, 1], "train_lengths": [1, 2],
                          "summary": summary}]}
    )  # fmt: skip
    assert "| a | 1.00 ± 0.00 | 0.25 ± 0.35 |" in table
    assert "unseen 3 |" in table and "—" in table  # no teacher-forced numbers given
    one_seed = markdown_table(
        {"experiments": [{"title": "t", "seeds": [0], "train_lengths": [1, 2],
                          "summary": summarise(runs[2:])}]}
    )  # fmt: skip
    assert "seed 0" in one_seed and "| b | 0.50 | 0.00 |" in one_seed  # one seed: no "± 0.00"


def test_every_preset_is_valid():
    assert {"default", "k-sweep", "kv-ablation", "length-gen"} <= set(available_presets())
    for name in available_presets():
        experiments = get_preset(name)
        validate(experiments)  # tasks, schemes, options and config fields all exist
        for experiment in experiments:
            assert len(experiment.seeds) >= 2
    (default,) = get_preset("default")
    assert {"none", "sinusoidal", "learned", "shaw"} <= {v.scheme for v in default.variants}
    (sweep,) = get_preset("k-sweep")
    assert [v.options["max_distance"] for v in sweep.variants] == [0, 1, 2, 4, 16, 64]
    (ablation,) = get_preset("kv-ablation")
    terms = [(v.options["key_term"], v.options["value_term"]) for v in ablation.variants]
    assert terms == [(True, True), (True, False), (False, True), (False, False)]
    tasks = {e.task for e in get_preset("length-gen")}
    assert {"copy", "reverse", "duplicate", "copy-kz", "reverse-kz", "scan"} <= tasks
    # presets are fresh objects: editing one does not leak into the next call
    default.seeds.append(99)
    assert 99 not in get_preset("default")[0].seeds


def test_experiment_rejects_bad_settings():
    with pytest.raises(ValueError, match="unique"):
        Experiment(task="copy", variants=[Variant("shaw"), Variant("shaw")])
    with pytest.raises(ValueError, match="seed"):
        Experiment(task="copy", variants=[Variant("none")], train={"seed": 3})
    with pytest.raises(ValueError, match="no variants"):
        Experiment(task="copy", variants=[])
    with pytest.raises(ValueError, match="stepz"):
        validate([Experiment(task="copy", variants=[Variant("none")], train={"stepz": 3})])
    assert Variant("shaw", {"max_distance": 4, "value_term": False}).label == (
        "shaw k=4 value_term=False"
    )


def test_default_out_dir_is_fresh(tmp_path):
    first = compare_module.default_out_dir(tmp_path)
    first.mkdir()
    second = compare_module.default_out_dir(tmp_path)
    assert second != first and second.name.startswith("compare-")


# --- resume, failures and run folders, with a stand-in for training ---------------------------


def _quick_experiment(**changes) -> Experiment:
    settings = {
        "task": "copy",
        "task_options": {"max_train_length": 2, "eval_lengths": [1, 2, 3], "n_train": 50},
        "variants": [Variant("none"), Variant("shaw", {"max_distance": 1})],
        "seeds": [0, 1],
        "train": {"steps": 4, "batch_size": 8},
    }
    return Experiment(**{**settings, **changes})


@pytest.fixture
def fake_train(monkeypatch):
    """``relpos.training.train`` replaced by a stand-in that writes metrics.json at once; it
    records each call as ``(scheme, seed, resume)`` and raises for the runs in ``fail``."""
    import types

    import relpos.training

    calls, fail = [], set()

    def train(config, run_dir, **kwargs):
        calls.append((config.model.scheme, config.seed, kwargs["resume"]))
        if (config.model.scheme, config.seed) in fail:
            raise RuntimeError(f"boom for {config.model.scheme} seed {config.seed}")
        metrics = _metrics(1.0, 0.5, {1: 1.0, 3: 0.5})
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        return types.SimpleNamespace(metrics=metrics, seconds=0.0)

    monkeypatch.setattr(relpos.training, "train", train)
    return calls, fail


def _compare(experiment, out, **kwargs):
    return run_compare([experiment], out, progress=False, log=None, plot=False, **kwargs)


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"train": {"steps": 5, "batch_size": 8}}, "train.steps: 4 → 5"),
        ({"task_options": {"max_train_length": 3, "eval_lengths": [1, 2, 3], "n_train": 50}},
         "task_options.max_train_length: 2 → 3"),
        ({"model": {"d_model": 32}}, "model.d_model: 64 → 32"),
        ({"variants": [Variant("none"), Variant("shaw", {"max_distance": 2}, "shaw k=1")]},
         "variant 'shaw k=1'"),
        ({"seeds": [0]}, "seeds: [0, 1] → [0]"),
        ({"task": "reverse"}, "task: 'copy' → 'reverse'"),
    ],
)  # fmt: skip
def test_resume_refuses_changed_settings(tmp_path, fake_train, changes, expected):
    calls, _ = fake_train
    out = tmp_path / "run"
    _compare(_quick_experiment(), out, jobs=1)
    calls.clear()
    with pytest.raises(ValueError, match="cannot resume") as error:
        _compare(_quick_experiment(**changes), out, resume=True, jobs=1)
    assert expected in str(error.value)
    assert calls == []  # nothing trained with the mixed settings


def test_resume_accepts_changes_that_do_not_change_results(tmp_path, fake_train):
    calls, _ = fake_train
    out = tmp_path / "run"
    _compare(_quick_experiment(), out, jobs=1)
    calls.clear()
    # the default lr spelled out, and the checkpoint interval (relpos.training's resume allows it)
    same = _quick_experiment(train={"steps": 4, "batch_size": 8, "lr": 1e-3, "checkpoint_every": 2})
    resumed = _compare(same, out, resume=True, jobs=2, device="cpu")
    assert calls == [] and resumed["complete"] is True
    assert len(resumed["experiments"][0]["runs"]) == 4


def test_results_json_is_written_before_the_first_run(tmp_path, fake_train):
    calls, fail = fake_train
    fail.add(("none", 0))  # the very first run fails
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="boom for none seed 0"):
        _compare(_quick_experiment(), out, jobs=1)
    saved = json.loads((out / "results.json").read_text())
    assert saved["complete"] is False and saved["experiments"][0]["runs"] == []
    fail.clear()
    calls.clear()
    resumed = _compare(_quick_experiment(), out, resume=True, jobs=1)  # not "no results.json"
    assert resumed["complete"] is True and len(calls) == 4


def test_a_failed_parallel_run_stops_the_queue_and_keeps_the_finished_runs(
    tmp_path, fake_train, monkeypatch
):
    import threading
    import time as time_module
    from concurrent.futures import ThreadPoolExecutor

    calls, fail = fake_train
    import relpos.training

    first = relpos.training.train
    started = threading.Event()

    def train(config, run_dir, **kwargs):
        if (config.model.scheme, config.seed) == ("none", 0):
            started.wait(5)  # fail while the other worker's run is in progress
            return first(config, run_dir, **kwargs)
        started.set()
        time_module.sleep(0.3)
        return first(config, run_dir, **kwargs)

    monkeypatch.setattr(relpos.training, "train", train)
    # threads instead of processes, so that the stand-in for training reaches the workers
    monkeypatch.setattr(compare_module, "_executor", lambda workers: ThreadPoolExecutor(workers))
    fail.add(("none", 0))
    out = tmp_path / "run"
    experiment = _quick_experiment(seeds=[0, 1, 2, 3])  # 8 runs
    with pytest.raises(RuntimeError, match="boom for none seed 0"):
        _compare(experiment, out, jobs=2)
    # the failed run and the one in progress; no other run started
    assert calls == [("none", 0, False), ("none", 1, False)]
    saved = json.loads((out / "results.json").read_text())
    recorded = [(r["variant"], r["seed"]) for r in saved["experiments"][0]["runs"]]
    assert recorded == [("none", 1)] and saved["complete"] is False  # it finished: recorded
    fail.clear()
    calls.clear()
    resumed = _compare(experiment, out, resume=True, jobs=2)
    assert len(calls) == 7 and ("none", 1, False) not in calls and resumed["complete"] is True


def test_resume_retrains_a_finished_run_whose_folder_was_deleted(tmp_path, fake_train):
    import shutil

    calls, _ = fake_train
    out = tmp_path / "run"
    first = _compare(_quick_experiment(), out, jobs=1)
    run_dir = out / first["experiments"][0]["runs"][1]["run_dir"]
    shutil.rmtree(run_dir)
    calls.clear()
    resumed = _compare(_quick_experiment(), out, resume=True, jobs=1)
    assert calls == [("none", 1, False)]  # only the lost one, from the start
    assert (run_dir / "metrics.json").is_file()
    assert resumed["experiments"][0]["runs"] == first["experiments"][0]["runs"]


@pytest.mark.parametrize(
    "experiments, expected",
    [
        ([_quick_experiment(), _quick_experiment(title="copy")], "same run folder"),
        ([_quick_experiment(title="copy (a)"), _quick_experiment(title="copy [a]")],
         "'copy (a)' and 'copy [a]'"),
        ([_quick_experiment(variants=[Variant("none", label="a b"), Variant("none", label="a_b")])],
         "'a b' and 'a_b'"),
        ([_quick_experiment(seeds=[0, 0])], "seeds must not repeat"),
    ],
)  # fmt: skip
def test_validate_catches_clashing_run_folders(experiments, expected):
    with pytest.raises(ValueError) as error:
        validate(experiments)
    assert expected in str(error.value)


def test_cli_rejects_repeated_seeds(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["compare", *TINY, "--seeds", "1,1", "--out", str(out)]) == 2
    assert "seeds must not repeat" in capsys.readouterr().err
    assert not out.exists()


def test_table_header_names_the_unseen_lengths_below_and_above_training():
    runs = [{"variant": "a", "seed": 0, "seconds": 1.0,
             "metrics": _metrics(1.0, 0.5, {n: 0.5 for n in range(1, 7)})}]  # fmt: skip
    for run in runs:
        for n, entry in run["metrics"]["by_length"].items():
            entry["seen"] = 2 <= int(n) <= 4
    table = markdown_table(
        {"experiments": [{"title": "t", "seeds": [0], "train_lengths": [2, 4],
                          "summary": summarise(runs)}]}
    )  # fmt: skip
    assert "| variant | seen 2–4 | unseen 1, 5–6 |" in table


def test_a_learned_table_too_short_for_the_lengths_fails_before_any_run_trains(tmp_path):
    # Found only when the learned runs started, after the others had trained, it could not be
    # fixed by --resume (max_len may not change on resume).
    experiment = Experiment(
        task="reverse",
        task_options={"max_train_length": 3, "eval_lengths": [1, 2, 3, 6], "n_train": 50},
        variants=[Variant("shaw", {"max_distance": 2}), Variant("learned")],
        seeds=[0],
        train={"steps": 2, "batch_size": 8},
        model={"max_len": 4},
    )
    with pytest.raises(
        ValueError, match=r"variant 'learned': the data need \d+ positions .*max_len=4"
    ):
        run_compare([experiment], tmp_path / "out", progress=False, log=None, jobs=1)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "flags, preset",
    [
        ([], "default"),
        (["--arch", "decoder", "--steps", "5", "--device", "cpu"], "default"),
        (["--preset", "k-sweep", "--arch", "decoder"], "k-sweep"),
    ],
)
def test_the_recorded_preset_is_the_one_the_grid_started_from(flags, preset):
    # A loop over --steps/--device/--arch once reused the preset's variable: every compare
    # recorded "preset": "arch" in its results.json.
    args = build_parser().parse_args(["compare", *flags])
    assert build_experiments(args)[1] == preset


def test_the_seen_column_names_the_lengths_it_scores(tmp_path, capsys):
    # Trained on 1-5 but evaluated on 1-3 only: the column scores 1-3 (it said "seen 1-5").
    flags = [f for f in TINY if f not in ("1-3", "1-5")]
    flags[flags.index("--train-lengths") + 1 : flags.index("--train-lengths") + 1] = ["1-5"]
    flags[flags.index("--eval-lengths") + 1 : flags.index("--eval-lengths") + 1] = ["1-3"]
    assert main(["compare", *flags, "--schemes", "shaw", "--out", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr().out
    assert "seen 1–3" in printed and "seen 1–5" not in printed
    assert "unseen none" in printed


def test_a_compare_with_no_unseen_length_says_so_before_training(tmp_path, fake_train):
    # Evaluating only inside the training range leaves the table's unseen columns empty; the
    # user hears it before the runs, not after them.
    messages = []
    inside = {"max_train_length": 3, "eval_lengths": [1, 2, 3], "n_train": 50}
    run_compare(
        [_quick_experiment(task_options=inside)], tmp_path / "in", progress=False,
        log=messages.append, plot=False,
    )  # fmt: skip
    assert any("unseen columns will be empty" in m for m in messages)
    messages.clear()
    run_compare(
        [_quick_experiment()], tmp_path / "out", progress=False, log=messages.append, plot=False
    )
    assert not any("unseen columns" in m for m in messages)
