"""``relpos show``: the seed's index matrix on the terminal, as CSV and as JSON."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest

from relpos.cli import main

SEED_MATRIX = [
    [3, 4, 5, 6, 6, 6, 6, 6, 6, 6],
    [2, 3, 4, 5, 6, 6, 6, 6, 6, 6],
    [1, 2, 3, 4, 5, 6, 6, 6, 6, 6],
    [0, 1, 2, 3, 4, 5, 6, 6, 6, 6],
    [0, 0, 1, 2, 3, 4, 5, 6, 6, 6],
    [0, 0, 0, 1, 2, 3, 4, 5, 6, 6],
    [0, 0, 0, 0, 1, 2, 3, 4, 5, 6],
    [0, 0, 0, 0, 0, 1, 2, 3, 4, 5],
    [0, 0, 0, 0, 0, 0, 1, 2, 3, 4],
    [0, 0, 0, 0, 0, 0, 0, 1, 2, 3],
]


def table_rows(text: str) -> dict[str, list[int]]:
    """Rows of the terminal table: ``label | v v v`` → ``{label: [v, ...]}``."""
    rows = {}
    for line in text.splitlines():
        if " | " in line:
            label, values = line.split(" | ")
            rows.setdefault(label.strip(), []).append([int(v) for v in values.split()])
    return rows


def show(capsys, *args: str) -> str:
    assert main(["show", *args]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    return captured.out


def test_default_is_the_seed_matrix(capsys):
    out = show(capsys)
    header = out.splitlines()[0]
    assert "clip(j - i, -3, 3) + 3" in header and "7 vectors" in header
    rows = table_rows(out)
    assert [rows[str(i)][0] for i in range(10)] == SEED_MATRIX
    column_labels = out.splitlines()[1].split()
    assert column_labels == [str(j) for j in range(10)]


def test_length_and_k(capsys):
    rows = table_rows(show(capsys, "--length", "4", "-k", "1"))
    assert [rows[str(i)][0] for i in range(4)] == [
        [1, 2, 2, 2],
        [0, 1, 2, 2],
        [0, 0, 1, 2],
        [0, 0, 0, 1],
    ]


def test_tokens_label_rows_and_columns(capsys):
    out = show(capsys, "--tokens", "I think therefore I am", "--max-distance", "4")
    lines = out.splitlines()
    assert lines[1].split() == ["I", "think", "therefore", "I", "am"]
    rows = table_rows(out)
    assert rows["I"][0][2] == 6  # "therefore" seen from the first "I"
    assert rows["I"][1][2] == 3  # ... and from the second "I"
    assert rows["think"] == [[3, 4, 5, 6, 7]]
    # Columns line up under their labels in the terminal table.
    therefore_end = lines[1].index("therefore") + len("therefore")
    assert lines[3][therefore_end - 1] == "6"  # row of the first "I"


def test_csv_parses_back(capsys):
    out = show(capsys, "--format", "csv")
    records = list(csv.reader(io.StringIO(out)))
    assert records[0] == ["i\\j", *[str(j) for j in range(10)]]
    assert [record[0] for record in records[1:]] == [str(i) for i in range(10)]
    assert [[int(v) for v in record[1:]] for record in records[1:]] == SEED_MATRIX


def test_csv_with_tokens(capsys):
    out = show(capsys, "--format", "csv", "--tokens", "a b,c d", "-k", "1")
    records = list(csv.reader(io.StringIO(out)))
    assert records[0] == ["i\\j", "a", "b,c", "d"]  # a label with a comma is quoted
    assert records[2] == ["b,c", "0", "1", "2"]


def test_json_parses_back(capsys):
    data = json.loads(show(capsys, "--format", "json"))
    assert data["index"] == SEED_MATRIX
    assert data["max_distance"] == 3 and data["num_vectors"] == 7
    assert data["tokens"] == [str(i) for i in range(10)]


def test_k0_reads_as_one_vector(capsys):
    assert "clip(j - i, 0, 0) + 0: 1 vector, entry 0" in show(capsys, "-k", "0")


def test_json_with_tokens_and_k0(capsys):
    data = json.loads(show(capsys, "--format", "json", "--tokens", "x y z", "-k", "0"))
    assert data == {
        "max_distance": 0,
        "tokens": ["x", "y", "z"],
        "num_vectors": 1,
        "index": [[0, 0, 0]] * 3,
    }


@pytest.mark.parametrize(
    "args, message",
    [
        (["--length", "0"], "--length must be > 0, got 0"),
        (["--length", "-3"], "--length must be > 0, got -3"),
        (["-k", "-1"], "-k must be >= 0, got -1"),
        (["--length", "3", "--tokens", "a b"], "--length 3 does not match the 2 --tokens"),
        (["--tokens", "   "], "--tokens must contain at least one token"),
        (["--window", "7x7"], "--window sizes the 2D index: add --2d"),
        (["--2d", "-k", "3"], "-k apply without --2d"),
        (["--2d", "--tokens", "a b"], "--tokens apply without --2d"),
    ],
)
def test_bad_values_exit_2_with_a_message(capsys, args, message):
    assert main(["show", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "relpos show: error:" in captured.err and message in captured.err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "xml"], "invalid choice: 'xml'"),
        (["--length", "ten"], "invalid int value: 'ten'"),
        (["-k", "1.5"], "invalid int value: '1.5'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_arguments_exit_2_with_usage(capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["show", *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_python_dash_m_relpos_show():
    result = subprocess.run(
        [sys.executable, "-m", "relpos", "show", "--length", "5", "-k", "4", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    index = json.loads(result.stdout)["index"]
    assert index[0][2] == 6 and index[3][2] == 3
