"""The scripts in examples/ run from a clean folder and print what they claim to show.

Training is cut to a few steps (RELPOS_EXAMPLE_STEPS): these check that the examples run against
the current API, not what they learn.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, cwd: Path, steps: int) -> str:
    env = {**os.environ, "RELPOS_EXAMPLE_STEPS": str(steps), "OMP_NUM_THREADS": "1"}
    env["RELPOS_EXAMPLE_SEEDS"] = "1"
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize(
    ("name", "steps", "expected"),
    [
        (
            "shaw_layer_in_your_model.py",
            20,
            [
                "key_table (9, 8)",
                "max |reference - eager|",
                # Shaw's attention sees only j - i: moving every position by 1000 changes nothing.
                "shaw        max |out(start=0) - out(start=1000)| = 0.00e+00",
            ],
        ),
        ("custom_scheme.py", 10, ["[2, 3, 4, 4, 4]", "clipped-bias  exact match: seen 1-6"]),
        ("custom_task.py", 5, ["add-one: 5000 training examples", "| shaw k=4 |"]),
        (
            "swin_windows.py",
            3,
            ["trained on 4x4 grids, 3 steps", "| scheme | 4x4 (trained) | 6x6 | 8x8 | 12x12 |"]
            + [f"| {name} | " for name in ("none", "shaw-1d", "swin, bicubic", "swin, clip")]
            + ["| swin-v2 | ", "share of a centre cell's attention on its up-left"],
        ),
    ],
)
def test_example_runs(name, steps, expected, tmp_path):
    out = run_example(name, tmp_path, steps)
    for line in expected:
        assert line in out, out
    assert list(tmp_path.iterdir()) == []  # nothing written into the working folder
