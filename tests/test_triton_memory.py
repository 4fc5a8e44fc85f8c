"""The Triton backend's memory budget, checked without a GPU (``benchmarks/triton_memory.py``).

Issue 5 asks for a forward + backward within 1.5x SDPA's peak memory with no ``L x L`` tensor
stored. Buffer sizes do not depend on what the kernels compute, so the script runs the backend
with its kernels replaced by no-ops and records every allocation. These tests pin what the
design promises: besides the output and the three input gradients, only per-row state (``L x R``
and a few floats per row) and per-block table-gradient partials — so a stray copy or an ``L x L``
buffer added later fails here, on the CPU, before a GPU run would show it in a peak.
"""

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

from relpos.attention import triton_shaw

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("triton_memory", ROOT / "benchmarks/triton_memory.py")
triton_memory = importlib.util.module_from_spec(spec)
sys.modules["triton_memory"] = triton_memory  # its dataclass looks its module up
spec.loader.exec_module(triton_memory)

SHAPE = dict(batch=1, heads=2, head_dim=32, k=3)


def design_budget(length: int, blocks: triton_shaw.TritonBlocks, batch, heads, head_dim, k):
    """Bytes the backward holds at its peak, buffer by buffer, as the design describes them."""
    rows = batch * heads * length  # query rows over all batches and heads
    buckets = 2 * k + 1
    half, single = 2, 4  # bf16 inputs; float32 per-row state
    q_blocks = math.ceil(math.ceil(length / blocks.grad_query.block_m) / blocks.grad_query.group)
    return (
        4 * rows * head_dim * half  # the output (saved) and dQ, dK, dV
        + 2 * rows * buckets * single  # Q A_Kᵀ (kept from the forward) and dO A_Vᵀ
        + rows * buckets * half  # dS per interior bucket, in the inputs' dtype
        + 2 * batch * heads * q_blocks * buckets * head_dim * single  # table-gradient partials
        + rows * (1 + 1 + 2 + 4) * single  # lse, δ, two tail masses, four tail-row terms
    )


@pytest.mark.parametrize("length", [100, 256])
def test_peak_is_the_designs_buffers_and_nothing_else(length):
    blocks = triton_memory.default_gpu_blocks(SHAPE["head_dim"], torch.bfloat16)
    tracker, _ = triton_memory.trace(length, "cpu", blocks=blocks, **SHAPE)
    # The two table gradients (a float32 sum and its bf16 copies) are the only other buffers.
    table_grads = (2 * SHAPE["k"] + 1) * SHAPE["head_dim"] * (4 + 2 + 2)
    budget = design_budget(length, blocks, **SHAPE)
    assert budget <= tracker.peak <= budget + table_grads
    names = {buffer.name for buffer in tracker.at_peak}
    assert {"out", "grad_q", "grad_k", "grad_v", "query_rel", "grad_rel"} <= names


def test_peak_grows_linearly_with_length():
    """An ``L x L`` buffer anywhere in the forward or backward would make the peak quadratic."""
    blocks = triton_memory.default_gpu_blocks(SHAPE["head_dim"], torch.bfloat16)
    peaks = [
        triton_memory.trace(length, "cpu", blocks=blocks, **SHAPE)[0].peak for length in (256, 512)
    ]
    table_grads = 2 * (2 * SHAPE["k"] + 1) * SHAPE["head_dim"] * 4
    assert abs(peaks[1] - 2 * peaks[0]) <= table_grads


def test_trace_leaves_the_kernels_in_place():
    kernels = triton_shaw._kernels
    triton_memory.trace(64, "cpu", **SHAPE)
    assert triton_shaw._kernels is kernels
