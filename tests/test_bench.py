"""Smoke test of ``relpos bench`` (the benchmark itself is run by hand; see benchmarks/)."""

from __future__ import annotations

import json

import pytest
import torch

from relpos.bench import BenchConfig, peak_memory_bytes, run_benchmark
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
