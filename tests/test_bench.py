"""Smoke test of ``relpos bench`` (the benchmark itself is run by hand; see benchmarks/)."""

from __future__ import annotations

import json

import pytest
import torch

from relpos.bench import BenchConfig, check_config, peak_memory_bytes, run_benchmark
from relpos.cli import main

ROW_FIELDS = {"length", "backend", "median_ms", "min_ms", "ratio_to_sdpa", "peak_mib", "times_ms"}


def test_cli_writes_json_with_every_field(tmp_path, capsys):
    path = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            "--lengths",
            "16",
            "-H",
            "2",
            "-D",
            "8",
            "-k",
            "3",
            "--repeats",
            "2",
            "--reference-repeats",
            "1",
            "--warmup",
            "1",
            "--json",
            str(path),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "sdpa" in printed and "eager" in printed
    results = json.loads(path.read_text())
    assert results["config"]["heads"] == 2 and results["config"]["backward"] is True
    assert {"torch", "cpu", "torch_threads"} <= set(results["machine"])
    rows = {row["backend"]: row for row in results["rows"]}
    assert {"sdpa", "reference", "eager"} <= set(rows)
    for row in rows.values():
        assert set(row) == ROW_FIELDS
        assert row["length"] == 16
        assert len(row["times_ms"]) == (1 if row["backend"] == "reference" else 2)
        assert row["median_ms"] > 0 and row["peak_mib"] > 0
    assert rows["sdpa"]["ratio_to_sdpa"] == 1.0
    # The paper-literal reference gathers (L, L, D) tensors; eager keeps (L, L) ones.
    assert rows["reference"]["peak_mib"] > rows["eager"]["peak_mib"]


def test_forward_only_and_reference_length_limit():
    config = BenchConfig(
        lengths=(8, 24),
        heads=1,
        head_dim=4,
        max_distance=2,
        repeats=1,
        warmup=0,
        backward=False,
        reference_max_length=10,
        memory=False,
        shared=False,
    )
    rows = run_benchmark(config)["rows"]
    assert [(r["length"], r["backend"]) for r in rows if r["backend"] == "reference"] == [
        (8, "reference")
    ]
    assert all(r["peak_mib"] is None for r in rows)


def test_dropout_reaches_sdpa_and_every_backend(monkeypatch):
    """``BenchConfig(dropout=p)`` times SDPA and each Shaw backend with that dropout, as in
    training; the default backends are those that apply with dropout (no flex)."""
    import relpos.attention

    seen = []
    shaw, sdpa = relpos.attention.shaw_attention, torch.nn.functional.scaled_dot_product_attention

    def shaw_spy(*args, dropout_p=0.0, backend="auto", **kwargs):
        seen.append((backend, dropout_p))
        return shaw(*args, dropout_p=dropout_p, backend=backend, **kwargs)

    def sdpa_spy(*args, dropout_p=0.0, **kwargs):
        seen.append(("sdpa", dropout_p))
        return sdpa(*args, dropout_p=dropout_p, **kwargs)

    monkeypatch.setattr(relpos.attention, "shaw_attention", shaw_spy)
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", sdpa_spy)
    config = BenchConfig(
        lengths=(8,), heads=1, head_dim=4, max_distance=2, repeats=1, warmup=0, memory=False,
        dropout=0.25,
    )  # fmt: skip
    rows = run_benchmark(config)["rows"]
    assert {row["backend"] for row in rows} == {"sdpa", "reference", "eager"}
    assert {backend for backend, _ in seen} == {"sdpa", "reference", "eager"}
    assert {p for _, p in seen} == {0.25}


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        (dict(dropout=1.0), r"dropout must be a probability in \[0, 1\), got 1.0"),
        (dict(dropout=True), "dropout must be a probability"),
        (dict(dropout=0.1, backends=("sdpa", "flex")), "backend 'flex' has no dropout"),
        (dict(dropout=0.1, schemes=(("t5", {}),)), "dropout is timed for Shaw's backends"),
    ],
)
def test_bad_dropout_settings_are_refused(changes, match):
    with pytest.raises(ValueError, match=match):
        check_config(BenchConfig(lengths=(8,), **changes))


def test_peak_memory_counts_a_temporary():
    def step():
        scratch = torch.ones(2**18)  # 1 MiB of float32, freed before the step returns
        return float(scratch.sum())

    peak = peak_memory_bytes(step, torch.device("cpu"))
    assert peak is not None and peak >= 2**20


def test_unknown_backend_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown backend.*nope.*valid names: sdpa"):
        run_benchmark(BenchConfig(lengths=(8,), backends=("sdpa", "nope"), repeats=1))


def test_cli_rejects_bad_settings_before_printing_anything(capsys):
    from relpos.cli import main

    assert main(["bench", "--lengths", "8", "--warmup", "0"]) == 2
    assert main(["bench", "--lengths", "8", "--backends", "sdpa,nope"]) == 2
    if not torch.cuda.is_available():
        assert main(["bench", "--lengths", "8", "--backends", "flex"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no table header before the error
    assert "--warmup must be >= 1" in captured.err and "unknown backend(s) nope" in captured.err
    assert torch.cuda.is_available() or "relpos bench --fwd-only" in captured.err


@pytest.mark.skipif(torch.cuda.is_available(), reason="the triton backend runs on CUDA")
@pytest.mark.parametrize("schemes", [[], ["--schemes", "shaw"]])
def test_cli_refuses_triton_on_the_cpu_before_the_header(capsys, monkeypatch, schemes):
    # Outside the interpreter the kernels need CUDA: say so before printing the table's header
    # (it used to come at the first timed call, under a header).
    from relpos.cli import main

    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert main(["bench", "--lengths", "8", "--backends", "triton", *schemes]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "the triton backend needs CUDA tensors (got device cpu)" in captured.err


def test_schemes_all_times_every_scheme_with_an_attention_term(tmp_path, capsys):
    path = tmp_path / "schemes.json"
    args = ["bench", "--schemes", "all", "--lengths", "12", "-H", "2", "-D", "8", "-k", "3"]
    assert main([*args, "--repeats", "1", "--warmup", "1", "--json", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "each scheme as a model builds it" in printed and "scheme" in printed.splitlines()[2]
    rows = {row["backend"]: row for row in json.loads(path.read_text())["rows"]}
    # Absolute schemes (and none) add nothing inside attention; -k reaches the clipped ones.
    assert set(rows) == {
        "sdpa",
        "alibi",
        "deberta k=3",
        "huang k=3",
        "rope",
        "shaw k=3",
        "t5",
        "transformer-xl",
    }
    assert all(row["median_ms"] > 0 and row["peak_mib"] > 0 for row in rows.values())


def test_scheme_steps_give_gradients_for_inputs_and_parameters():
    from relpos.bench import _inputs, _scheme_steps

    config = BenchConfig(
        lengths=(6,), heads=2, head_dim=4, schemes=(("deberta", {"max_distance": 2}),)
    )
    tensors, upstream = _inputs(config, 6, torch.device("cpu"))
    steps = _scheme_steps(config, ["auto", "reference"], tensors, upstream, "cpu")
    assert list(steps) == ["sdpa", "deberta k=2", "deberta k=2 / reference"]
    grads = steps["deberta k=2"]()
    assert len(grads) == 5  # query, key, value, K^r, Q^r
    assert all(torch.isfinite(grad).all() and grad.abs().sum() > 0 for grad in grads)
    for fast, literal in zip(grads, steps["deberta k=2 / reference"](), strict=True):
        torch.testing.assert_close(fast, literal, rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")
def test_scheme_options_backends_and_refusals(capsys):
    # float64 runs FlexAttention unfused on the CPU: no compile wait.
    base = ["bench", "--lengths", "8", "-H", "2", "-D", "8", "--repeats", "1", "--warmup", "1"]
    schemes = ["--schemes", "deberta:max_distance=2,t5:num_buckets=8", "--dtype", "float64"]
    assert main([*base, *schemes, "--backends", "sdpa,flex", "--fwd-only", "--no-memory"]) == 0
    printed = capsys.readouterr().out
    for label in ("deberta k=2 / sdpa", "deberta k=2 / flex", "t5 num_buckets=8 / flex"):
        assert label in printed
    assert main([*base, "--schemes", "sinusoidal"]) == 2
    assert main([*base, "--schemes", "deberta", "--backends", "flex"]) == 2
    assert main([*base, "--schemes", "deberta:nope=1"]) == 2
    err = capsys.readouterr().err
    assert "'sinusoidal' adds its positions to the input" in err
    assert "no backward on the CPU" in err and "--schemes item 'deberta:nope=1'" in err
