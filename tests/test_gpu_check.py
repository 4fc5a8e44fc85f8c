"""``benchmarks/gpu_check.py --dry-run``: the one prepared GPU script, every section run on the
CPU under Triton's interpreter at tiny sizes.

A GPU is lent for 15 minutes a session; a bug in the script would spend that time. This runs the
script's own code paths (correctness, timing, profile, tile sweep, chosen tiles, variants, the
folded-tails comparison, ``relpos bench``, the targets table) and checks that each section
produced results and no errors. Its times mean nothing.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_section(tmp_path):
    results = tmp_path / "gpu_check.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    env.pop("OUT", None)
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "gpu_check.py"),
            "--dry-run",
            "--backends",
            "triton",
            "--lengths",
            "16",
            "--repeats",
            "1",
            "--json",
            str(results),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = json.loads(results.read_text())
    assert run["dry_run"] is True
    sections = run["sections"]

    checks = sections["correctness"]["checks"]
    assert len(checks) == 6 and all(c["ok"] for c in checks), checks

    timed = {row["backend"]: row for row in sections["timing"]["rows"]}
    assert set(timed) == {"sdpa", "triton", "triton-plain"}
    for row in timed.values():
        assert "error" not in row, row
        for key in ("fwd_ms", "fwd_bwd_ms", "fwd_ms_queued", "fwd_bwd_ms_queued"):
            assert row[key] > 0, (key, row)

    assert {"sdpa", "triton"} <= set(sections["profile"])
    assert all(isinstance(sections["profile"][b], list) for b in ("sdpa", "triton"))

    sweep = sections["sweep"]
    # Every candidate ran, reproduced the default's results, and one per kernel was chosen.
    expected = 1 + sum(len(options) for options in _candidates().values())
    assert len(sweep["rows"]) == expected, sweep["rows"]
    assert [row for row in sweep["rows"] if "error" in row] == []
    assert set(sweep["chosen"]) == {"forward", "grad_query", "grad_key_value"}

    for name in ("timing_chosen", "variants", "fold"):
        rows = sections[name]["rows"]
        assert rows and all("error" not in row for row in rows), (name, rows)
    assert "error" not in sections["bench"] and sections["bench"]["rows"]
    # The dry run states its targets at its own length: every measure has a verdict.
    measures = {(v["tiles"], v["measure"]) for v in sections["targets"]}
    assert len(measures) == 2 * 4, sections["targets"]


def _candidates():
    from relpos.attention.triton_tune import CANDIDATES

    return CANDIDATES
