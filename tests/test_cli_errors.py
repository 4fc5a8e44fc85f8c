"""Bad command-line values: one line that names the flag the user typed, never a traceback.

The library's checks name Python arguments (``max_distance``, ``head_dim``, ``run_dir``); on the
command line the user typed ``-k``, ``--head-dim``, ``--run-dir``. Each case gives the argv, text
the error must contain (the flag, and what was expected), and a Python name it must not show.
Nothing here trains or times: every case fails before the work starts.
"""

from __future__ import annotations

import json

import pytest

from relpos.cli import main


@pytest.fixture
def paths(tmp_path, monkeypatch):
    """Placeholders for the argv: a path that does not exist, a file, an empty folder, and a
    folder that looks like a training run (a config.json; nothing is loaded from it). The
    current folder is ``tmp_path``: a default run folder (runs/...) is never made in the repo."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file.txt").write_text("not a folder\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps({"task": "reverse"}))
    return {
        "missing": str(tmp_path / "missing"),
        "file": str(tmp_path / "file.txt"),
        "empty": str(tmp_path / "empty"),
        "run": str(tmp_path / "run"),
        "tmp": str(tmp_path),
    }


def error_of(argv: list[str], capsys) -> str:
    """stderr of ``relpos ARGV``, which must fail with exit code 2: at parse time (argparse's
    usage line and SystemExit) or in the command (``relpos CMD: error: ...``)."""
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    assert code == 2, (argv, captured.err)
    assert captured.out == "", "nothing is printed (or run) before the error"
    return captured.err


CASES = [
    # show
    (["show", "--t5", "--buckets", "0"], "--buckets must be >= 4", "num_buckets"),
    (["show", "--t5", "--causal", "--buckets", "1"], "--buckets must be >= 2 with --causal", None),
    (
        ["show", "--t5", "-k", "-1"],
        "-k (T5's max_distance, where its log buckets end) must be >",
        None,
    ),
    (
        ["show", "--t5", "--buckets", "32", "-k", "8"],
        "must be > 8, the exact distances of --buckets 32",
        "num_buckets",
    ),
    # bench: BenchConfig's checks name its fields (head_dim, ...); these fail before any timing.
    (
        ["bench", "--lengths", "0"],
        "argument --lengths: expected sequence lengths in 1..2**31",
        "lengths must",
    ),
    (["bench", "--lengths", str(10**20)], "argument --lengths", "Overflow"),
    (["bench", "--repeats", "0"], "argument --repeats: expected a positive int", None),
    (["bench", "--reference-repeats", "0"], "argument --reference-repeats", "reference_repeats"),
    (["bench", "-D", "0"], "argument -D/--head-dim: expected a positive int", "head_dim"),
    (["bench", "-H", "0"], "argument -H/--heads: expected a positive int", None),
    (["bench", "-B", "-1"], "argument -B/--batch: expected a positive int", None),
    (["bench", "-k", "-1"], "argument -k/--max-distance: expected", "max_distance"),
    (["bench", "--reference-max-length", "-5"], "argument --reference-max-length: expected", None),
    (["bench", "--warmup", "-1"], "--warmup must be >= 1", None),
    (["bench", "--threads", "0"], "--threads must be >= 1", None),
    (["bench", "--dtype", "float8"], "argument --dtype: invalid choice: 'float8'", None),
    (["bench", "--device", "nope"], "--device must name a device such as 'cpu'", None),
    (
        ["bench", "--backends", "nope"],
        "--backends: unknown backend(s) nope; valid names: sdpa",
        None,
    ),
    (["bench", "--backends", ","], "--backends must name at least one backend", None),
    (
        ["bench", "--schemes", "deberta", "--backends", "nope"],
        "--backends: unknown backend(s) nope",
        None,
    ),
    (["bench", "--schemes", ","], "argument --schemes: expected a comma-separated list", None),
    (["bench", "--dropout", "1"], "argument --dropout: expected a probability in [0, 1)", None),
    (["bench", "--dropout", "nan"], "argument --dropout: expected a probability", None),
    (["bench", "--dropout", "-0.1"], "argument --dropout: expected a probability", None),
    (
        ["bench", "--schemes", "t5", "--dropout", "0.1"],
        "--dropout times Shaw's backends and SDPA; leave it out with --schemes",
        None,
    ),
    (
        ["bench", "--backends", "sdpa,flex", "--dropout", "0.1"],
        "--dropout: backend 'flex' has none",
        None,
    ),
    (["bench", "--schemes", "sinusoidal"], "--schemes item 'sinusoidal' adds its positions", None),
    (["bench", "--schemes", "deberta", "-k", "0"], "-k 0 does not suit scheme 'deberta'", None),
    (
        ["bench", "--json", "{file}/out.json"],
        "--json '{file}/out.json': '{file}' is not a folder",
        "Errno",
    ),
    (["bench", "--json", "{empty}"], "--json '{empty}' is a folder: give a file name", "Errno"),
    # predict and plot on a RUN_DIR that is not a run: the path, and what a run folder holds
    (
        ["predict", "{missing}", "123"],
        "RUN_DIR '{missing}' does not exist; `relpos predict` reads a `relpos train` run folder "
        "(config.json and checkpoint/) or a `relpos compare` folder (results.json)",
        None,
    ),
    (["predict", "{file}", "123"], "RUN_DIR '{file}' is a file, not a folder", None),
    (
        ["predict", "{empty}", "123"],
        "RUN_DIR '{empty}' holds neither config.json nor results.json",
        None,
    ),
    (
        ["predict", "{run}", "123", "--seed", "0"],
        "--seed picks runs in a compare folder",
        "leave seed",
    ),
    (
        ["predict", "{run}", "123", "--task", "copy"],
        "--task picks runs in a compare folder",
        "leave task",
    ),
    (["predict", "{run}", "123", "--device", "nope"], "--device must name a device", None),
    (["predict", "{run}", "123", "--max-new-tokens", "0"], "--max-new-tokens must be >= 1", None),
    (
        ["plot", "attention", "{missing}"],
        "RUN_DIR '{missing}' does not exist; `relpos plot attention` reads",
        None,
    ),
    (["plot", "attention", "{file}"], "RUN_DIR '{file}' is a file, not a folder", None),
    (
        ["plot", "vectors", "{empty}"],
        "RUN_DIR '{empty}' holds neither config.json nor results.json",
        None,
    ),
    (
        ["plot", "attention", "{run}", "--task", "copy"],
        "--task picks runs in a compare folder",
        "leave task",
    ),
    (
        ["plot", "accuracy", "{missing}"],
        "RUN_DIR '{missing}' does not exist; `relpos plot accuracy` reads a `relpos compare` "
        "folder (results.json)",
        None,
    ),
    (["plot", "accuracy", "{empty}"], "reads a `relpos compare` folder", None),
    # compare
    (["compare", "-k", "-3"], "argument -k/--max-distance: expected a clipping distance k", None),
    # -k 10**20 reached torch.empty: a page of C++ stack frames.
    (["compare", "-k", str(10**20)], "argument -k/--max-distance: expected", "frame #"),
    (["compare", "--schemes", "deberta", "-k", "0"], "-k 0 does not suit scheme 'deberta'", None),
    (["compare", "--device", "nope"], "--device must name a device such as 'cpu'", None),
    (["compare", "--out", "{file}/sub"], "--out '{file}/sub': '{file}' is not a folder", "Errno"),
    (["compare", "--task-option", "nonsense"], "--task-option: expected KEY=VALUE", None),
    (["compare", "--train-option", "lr"], "--train-option: expected KEY=VALUE", None),
    # train: every TrainConfig and ModelConfig field is a flag; their checks name the field.
    (["train", "--batch-size", "0"], "--batch-size must be >= 1, got 0", "batch_size"),
    (["train", "--warmup-steps", "-1"], "--warmup-steps must be >= 0", "warmup_steps"),
    (["train", "--lr", "nan"], "--lr must be a finite number >= 0, got nan", None),
    (["train", "--min-lr-ratio", "2"], "--min-lr-ratio must be <= 1", "min_lr_ratio"),
    (
        ["train", "--num-heads", "3"],
        "--d-model (64) must be divisible by --num-heads (3)",
        "d_model",
    ),
    (["train", "--dropout", "1"], "--dropout must be a float in [0, 1)", None),
    (["train", "--precision", "fp8"], "--precision must be one of fp32, bf16", None),
    (["train", "--threads", "0"], "argument --threads: expected a positive int", "None"),
    (["train", "--init-seed", "-1"], "argument --init-seed: expected an int >= 0", "None"),
    (["train", "--device", "nope"], "--device must name a device such as 'cpu'", None),
    (["train", "-k", "-1"], "argument -k/--max-distance: expected", "max_distance"),
    (["train", "--scheme", "deberta", "-k", "0"], "-k 0 does not suit scheme 'deberta'", None),
    (
        ["train", "--scheme", "sinusoidal", "-k", "3"],
        "-k 3 does not suit scheme 'sinusoidal'",
        None,
    ),
    (["train", "--scheme-option", "nope"], "--scheme-option: expected KEY=VALUE", None),
    (["train", "--run-dir", "{file}"], "--run-dir '{file}' exists and is not a folder", "run_dir"),
    (
        ["train", "--run-dir", "{file}/run"],
        "--run-dir '{file}/run': '{file}' is not a folder",
        "Errno",
    ),
    # plot
    (["plot", "index", "-k", "-1"], "argument -k/--max-distance: expected", "max_distance"),
    (["plot", "index", "-k", str(10**20)], "argument -k/--max-distance", "too big to convert"),
    (["plot", "distances", "-k", "0"], "-k must be >= 1 for `distances`", "max_distance"),
    (["plot", "sinusoidal", "--out", "{tmp}/s.txt"], "--out must end in .png, .pdf or .svg", None),
    (["plot", "sinusoidal", "--length", "5000"], "--length must be an int in 1..4096", None),
    (["plot", "sinusoidal", "--dim", "5000"], "--dim must be an int in 1..4096", None),
    (
        ["plot", "index", "--out", "{file}/i.png"],
        "--out '{file}/i.png': '{file}' is not a",
        "Errno",
    ),
    (["plot", "index", "--tokens", " "], "--tokens must contain at least one token", None),
    (["plot", "window", "--window", "17x2"], "--window sides must be <= 16", None),
    (["plot", "window", "--window", "3x3", "--query", "5,1"], "--query 5,1 is outside", "patch"),
]


@pytest.mark.parametrize("argv, expected, absent", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_value_names_the_flag(argv, expected, absent, paths, capsys):
    err = error_of([arg.format(**paths) for arg in argv], capsys)
    assert "Traceback" not in err
    *usage, line = err.strip().splitlines()
    # One line says it all; before it, only argparse's usage (for an error at parse time).
    assert line.startswith(f"relpos {argv[0]}: error: ") and expected.format(**paths) in line
    assert all(text.startswith(("usage:", " ")) for text in usage), usage
    if absent is not None:
        assert absent not in err
