"""The GPU scripts under ``benchmarks/``, checked without a GPU.

``gpu_check.py --dry-run`` runs the one prepared GPU script with every section on the CPU under
Triton's interpreter at tiny sizes. A GPU is lent for 15 minutes a session; a bug in the script
would spend that time. The test runs the script's own code paths (correctness, timing, profile,
tile sweep, chosen tiles, the warp-specialisation probe, variants, the folded-tails comparison,
``relpos bench``, the targets table) and checks that each section produced results and no
errors; its times mean nothing. The probe's kernels and ``sass_loops.py`` are checked by
compiling for sm_90 (Triton's compiler and ptxas need no GPU).
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Triton is not imported here: it builds its own library functions (tl.sum, ...) for the
# interpreter or not when first imported, and the Triton tests later in this process need them
# built for it.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="needs triton installed"
)

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
    assert len(checks) == 8 and all(c["ok"] for c in checks), checks
    assert sum("dropout" in c["case"] for c in checks) == 2

    timed = {row["backend"]: row for row in sections["timing"]["rows"]}
    assert set(timed) == {"sdpa", "triton", "triton-plain"}
    for row in timed.values():
        assert "error" not in row, row
        for key in ("fwd_ms", "fwd_bwd_ms", "fwd_ms_queued", "fwd_bwd_ms_queued"):
            assert row[key] > 0, (key, row)

    assert {"sdpa", "triton"} <= set(sections["profile"])
    assert all(isinstance(sections["profile"][b], list) for b in ("sdpa", "triton"))

    host = {row["backend"]: row for row in sections["host"]["rows"]}
    assert set(host) == {"sdpa", "triton", "triton-plain"}
    assert all(row["fwd_us"] > 0 and row["fwd_bwd_us"] > 0 for row in host.values()), host
    top = sections["host"]["triton_top"]
    assert isinstance(top, list) and top and all(entry["own_us"] >= 0 for entry in top), top
    memory = sections["memory"]["rows"]
    assert [row["length"] for row in memory] == [16] and "error" not in memory[0], memory
    assert memory[0]["buffers_mib"] > 0 and "query_rel" in {b[0] for b in memory[0]["largest"]}

    sweep = sections["sweep"]
    # Every candidate ran, reproduced the default's results, and one per kernel was chosen.
    expected = 1 + sum(len(options) for options in _candidates().values())
    assert len(sweep["rows"]) == expected, sweep["rows"]
    assert [row for row in sweep["rows"] if "error" in row] == []
    assert set(sweep["chosen"]) == {"forward", "grad_query", "grad_key_value"}

    probe = sections["ws_probe"]["rows"]
    assert [row["kernel"] for row in probe][:2] == ["sdpa", "64x64 w4 s3"], probe
    assert all("error" not in row for row in probe), probe
    assert all(row["max_error"] < 1e-2 for row in probe[1:]), probe
    backward = sections["ws_probe"]["backward_rows"]
    assert backward[0]["kernel"] == "sdpa backward" and len(backward) == 5, backward
    assert all("error" not in row and row["max_error"] < 1e-2 for row in backward[1:]), backward

    assert [row["variant"] for row in sections["variants"]["rows"]][-1] == "dropout 0.1"
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


def test_gpu_train_smoke_dry_run_trains_every_row():
    """The training check of the GPU session runs (on the CPU: eager for Shaw, SDPA for none)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_train_smoke.py"), "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith(("none", "shaw"))]
    assert [(row[0], row[1]) for row in rows] == [
        ("shaw", "bf16"), ("none", "bf16"), ("shaw", "fp32"), ("none", "fp32")
    ]  # fmt: skip
    assert "{'eager':" in " ".join(rows[0]) and "(sdpa)" in rows[1]


def test_ws_probe_specialises_its_loop_for_hopper():
    """The probe's warp-specialised configurations (forward and both backward kernels) do compile
    for sm_90 with the loop split into producer and consumer warps (no GPU needed: Triton's
    compiler and ptxas), so the GPU run times what it claims to."""
    script = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import ws_probe

for c in ws_probe.CONFIGS:
    if not c.warp_specialize:
        continue
    descriptor = lambda rows: f"tensordesc<bf16[{rows}, 64]>"
    signature = {
        "Q_DESC": descriptor(c.block_m), "K_DESC": descriptor(c.block_n),
        "V_DESC": descriptor(c.block_n), "OUT": "*bf16", "length": "i32", "qk_scale": "fp32",
        "BLOCK_M": "constexpr", "BLOCK_N": "constexpr", "HEAD_DIM": "constexpr",
        "WARP_SPECIALIZE": "constexpr", "HALVES": "constexpr",
    }
    constants = {"BLOCK_M": c.block_m, "BLOCK_N": c.block_n, "HEAD_DIM": 64,
                 "WARP_SPECIALIZE": True, "HALVES": c.halves}
    source = ASTSource(ws_probe.plain_forward, signature, constexprs=constants,
                       attrs={(3,): [["tt.divisibility", 16]], (4,): [["tt.divisibility", 16]]})
    kernel = triton.compile(source, target=GPUTarget("cuda", 90, 32),
                            options={"num_warps": c.num_warps, "num_stages": c.num_stages})
    assert "ttg.warp_specialize" in kernel.asm["ttgir"], c.label
    assert kernel.asm["cubin"], c.label
for c in ws_probe.BACKWARD_CONFIGS:
    if not c.warp_specialize:
        continue
    for fn, outputs in ((ws_probe.plain_grad_query, ["GRAD_Q"]),
                        (ws_probe.plain_grad_key_value, ["GRAD_K", "GRAD_V"])):
        signature = {
            "Q_DESC": descriptor(c.block_m), "K_DESC": descriptor(c.block_n),
            "V_DESC": descriptor(c.block_n), "G_DESC": descriptor(c.block_m),
            "LSE": "*fp32", "DELTA": "*fp32", **{name: "*bf16" for name in outputs},
            "length": "i32", "qk_scale": "fp32", "scale": "fp32", "BLOCK_M": "constexpr",
            "BLOCK_N": "constexpr", "HEAD_DIM": "constexpr", "WARP_SPECIALIZE": "constexpr",
        }
        constants = {"BLOCK_M": c.block_m, "BLOCK_N": c.block_n, "HEAD_DIM": 64,
                     "WARP_SPECIALIZE": True}
        pointers = range(4, 6 + len(outputs))
        source = ASTSource(fn, signature, constexprs=constants,
                           attrs={(i,): [["tt.divisibility", 16]] for i in pointers})
        kernel = triton.compile(source, target=GPUTarget("cuda", 90, 32),
                                options={"num_warps": c.num_warps, "num_stages": c.num_stages})
        assert "ttg.warp_specialize" in kernel.asm["ttgir"], (fn.__name__, c.label)
print("specialised")
"""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT / "benchmarks")])
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and "specialised" in result.stdout, result.stderr[-3000:]


def test_sass_loops_reads_the_forward_loops(monkeypatch):
    """``benchmarks/sass_loops.py`` finds the default forward's loops (left tail, right tail, and
    a band loop per half of the row block) in its sm_90 machine code, each with its
    tensor-core instructions."""
    from relpos.attention.triton_shaw import default_blocks

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # the GPU's tiles, not the tiny ones
    loops = 2 + default_blocks(64).forward.halves  # the default's halves: 1 or 2
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT / "src")
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "sass_loops.py"), "--kernels", "forward"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("forward:") and lines[0].endswith(f"{loops} loops"), result.stdout
    assert sum("per iteration" in line and "HGMMA 0 " not in line for line in lines) == loops


def test_sass_loops_lists_the_tails_kernel_of_a_split_candidate(monkeypatch):
    """With tails in a kernel of their own, that kernel is listed too (its registers are the
    point of splitting), with its one loop."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT / "src")
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "sass_loops.py"),
         "--candidate", "forward:64x64/32 w4 s2 tma split"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    listed = [line.split(":")[0] for line in result.stdout.splitlines() if "instructions" in line]
    assert "forward_tails" in listed and "forward" in listed and "grad_prepare" not in listed
    assert "forward_tails: " in result.stdout and "1 loops" in result.stdout


def test_triton_binder_times_every_launch():
    """``benchmarks/triton_binder.py`` records one forward+backward's four launches and times
    Triton's argument binding for each (no GPU: the launches are intercepted)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT / "src")
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "triton_binder.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if "arguments" in line]
    names = {line.split()[0] for line in rows}
    assert names == {
        "forward_kernel",
        "grad_prepare_kernel",
        "grad_query_kernel",
        "grad_key_value_kernel",
    }, result.stdout
    assert all(float(line.split()[-1]) > 0 for line in rows), result.stdout
    assert "all launches" in result.stdout
