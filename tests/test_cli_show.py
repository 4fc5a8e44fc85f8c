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
        "scheme": "shaw",
        "max_distance": 0,
        "tokens": ["x", "y", "z"],
        "num_vectors": 1,
        "index": [[0, 0, 0]] * 3,
    }


@pytest.mark.parametrize(
    "args, message",
    [
        (["--length", "0"], "--length must be in 1..1024 (the L x L table is printed), got 0"),
        (["--length", "-3"], "--length must be in 1..1024 (the L x L table is printed), got -3"),
        (["--length", "100000"], "--length must be in 1..1024"),
        (
            ["-k", str(10**20)],
            f"-k must be <= 2**31 (it indexes a table of 2k + 1 rows), got {10**20}",
        ),
        (["-k", "-1"], "-k must be >= 0, got -1"),
        (["--length", "3", "--tokens", "a b"], "--length 3 does not match the 2 --tokens"),
        (["--tokens", "   "], "--tokens must contain at least one token"),
        (["--window", "7x7"], "--window sizes the 2D index: add --2d"),
        (["--2d", "-k", "3"], "-k does not apply with --2d"),
        (["--2d", "--tokens", "a b", "-k", "2"], "--tokens, -k do not apply with --2d"),
        # 1600 x 1600 entries printed; 300x300 asked for 65 GB before printing anything.
        (["--2d", "--window", "40x40"], "--window must hold at most 1024 patches"),
        (["--2d", "--window", "32x32"], None),
    ],
)
def test_bad_values_exit_2_with_a_message(capsys, args, message):
    if message is None:  # the limit itself is fine
        assert main(["show", *args]) == 0
        return
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


def test_t5_lists_the_distances_of_each_bucket(capsys):
    text = show(capsys, "--t5")
    lines = {int(line.split()[0]): line.split(None, 1)[1] for line in text.splitlines()[2:]}
    assert len(lines) == 32
    assert lines[0] == "0" and lines[7] == "-7" and lines[8] == "-11 … -8"  # exact, then log
    assert lines[15] == "<= -91" and lines[31] == ">= 91"  # the far buckets are open-ended
    assert lines[16] == "(no distance: never used)"  # j - i > 0 starts at bucket N/2 + 1
    causal = json.loads(show(capsys, "--t5", "--causal", "--buckets", "8", "-k", "16", "--format",
                             "json"))  # fmt: skip
    assert causal["bidirectional"] is False and causal["buckets"][0] == {
        "bucket": 0, "from": 0, "to": None,  # the future and the token itself share bucket 0
    }  # fmt: skip


def test_t5_ranges_agree_with_the_bucket_function():
    import torch

    from relpos.cli.show import t5_bucket_ranges
    from relpos.schemes import t5_relative_bucket

    for buckets, max_distance, bidirectional in [(32, 128, True), (8, 16, False), (10, 20, True)]:
        distances = torch.arange(-300, 301)
        expected = t5_relative_bucket(
            distances, num_buckets=buckets, max_distance=max_distance, bidirectional=bidirectional
        )
        for bucket, low, high in t5_bucket_ranges(buckets, max_distance, bidirectional):
            inside = torch.ones_like(distances, dtype=torch.bool)
            if low is not None:
                inside &= distances >= low
            if high is not None:
                inside &= distances <= high
            if low is None and high is None:
                assert not (expected == bucket).any()
            else:
                assert torch.equal(expected == bucket, inside), (buckets, bucket)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--t5", "--length", "5"], "--length does not apply with --t5"),
        # The CLI's T5 has a direction flag (--causal), so the message names no other option.
        (
            ["--t5", "--buckets", "3"],
            "--buckets must be >= 4: T5 keeps N/4 distances each way exact",
        ),
        (["--t5", "--2d"], "--2d and --t5 are different pictures"),
        (["--buckets", "8"], "--buckets and --causal describe T5's buckets: add --t5"),
        (
            ["--t5", "--buckets", "32", "-k", "8"],
            "-k (T5's max_distance, where its log buckets end) must be > 8",
        ),
        # Every distance up to 2k + N is bucketed: k = 10**11 was a 3 TB allocation's traceback.
        (["--t5", "-k", str(10**11)], "-k and --buckets must keep 2k + N <= 4194304"),
        (["--t5", "--buckets", "4000000", "-k", "3000000"], "got -k 3000000, --buckets 4000000"),
    ],
)
def test_t5_flag_errors(capsys, args, message):
    assert main(["show", *args]) == 2
    assert message in capsys.readouterr().err


def test_deberta_rows_for_the_seed_sentence(capsys):
    out = show(capsys, "--deberta", "--tokens", "I think therefore I am", "-k", "2")
    assert out.splitlines()[0].startswith(
        "DeBERTa's relative row clamp(i - j + 2, 0, 3): 4 vectors"
    )
    rows = table_rows(out)
    # Earlier keys (left of the diagonal) share row 3 from i - j = 1 on; later keys use row 1 at
    # j - i = 1 and share row 0 from 2 on.
    assert rows["think"] == [[3, 2, 1, 0, 0]]
    assert rows["am"] == [[3, 3, 3, 3, 2]]
    assert rows["I"] == [[2, 1, 0, 0, 0], [3, 3, 3, 2, 1]]
    data = json.loads(show(capsys, "--deberta", "--length", "3", "-k", "1", "--format", "json"))
    assert data == {
        "scheme": "deberta",
        "max_distance": 1,
        "tokens": ["0", "1", "2"],
        "num_vectors": 2,
        "index": [[1, 0, 0], [1, 1, 0], [1, 1, 1]],
    }


@pytest.mark.parametrize(
    "args, message",
    [
        (["--deberta", "-k", "0"], "-k must be >= 1 for --deberta"),
        (["--deberta", "--t5"], "--t5 and --deberta are different pictures: choose one"),
        (["--deberta", "--2d"], "--2d and --deberta are different pictures: choose one"),
    ],
)
def test_deberta_flag_errors(capsys, args, message):
    assert main(["show", *args]) == 2
    assert message in capsys.readouterr().err
