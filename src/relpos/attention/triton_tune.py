"""Choose the Triton kernels' launch options for the GPU at hand, by timing them.

The default tiles (:func:`~relpos.attention.triton_shaw.default_blocks`) were timed on an H200,
for half precision and head sizes up to 64. :func:`tune_blocks` times alternatives on your card
and shape, one kernel at a time (the other two at their defaults), drops every alternative whose
output and gradients differ from the default configuration's, and returns the fastest forward,
query-gradient and key/value-gradient options together::

    from relpos.attention.triton_tune import tune_blocks
    from relpos.attention.triton_shaw import triton_attention

    tuned = tune_blocks(head_dim=64, dtype=torch.bfloat16, length=4096)
    out = triton_attention(q, k, v, index=index, key_table=a_k, value_table=a_v,
                           blocks=tuned.blocks)

Times are of calls queued back to back between two CUDA events (the host's own work is hidden
behind the GPU's, as in training), median of ``rounds``. ``benchmarks/gpu_check.py`` runs the
same candidates with more measurements (synchronised times, peak memory).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from .index import RelativeIndex
from .triton_shaw import KernelLaunch, TritonBlocks, default_blocks, triton_attention

__all__ = ["CANDIDATES", "AGREEMENT", "TuneResult", "disagreement", "queued_ms", "tune_blocks"]

KERNELS = ("forward", "grad_query", "grad_key_value")

#: Alternatives for one kernel at a time, chosen for bf16 with D = 64 on Hopper, most promising
#: first (a sweep cut short by its time budget keeps them): tails in kernels of their own and
#: capped registers, both for more programs per SM (the lead after the second H200 session, not
#: yet timed; ``benchmarks/RESULTS.md``), the forward's interleaved halves, the close contenders
#: of the H200 runs, smaller loop tiles with deeper pipelines (as FlashAttention-style Triton
#: kernels use on Hopper), narrower band tiles, TMA loads and grouped query blocks, picked from
#: the as-launched sm_90 compile for few register spills (``gpu_check.py --compile-only``,
#: ``sass_loops.py --candidate``). Warp-specialised tails are left out: on the H200 (Triton
#: 3.6) every one timed was slower than the fused kernels, and one hung.
CANDIDATES: dict[str, list[KernelLaunch]] = {
    "forward": [
        # The tails in a kernel of their own (106 registers as launched, four programs per SM,
        # against the fused forward's 255 and two), the band and epilogue in a second.
        KernelLaunch(64, 64, band_block=32, num_warps=4, num_stages=2, tma=True, split_tails=True),
        KernelLaunch(128, 64, band_block=32, num_warps=8, num_stages=2, tma=True, split_tails=True),
        # Split with the cap (next): the tails kernel is under it; the band kernel's 230 registers
        # come down to 168 (three programs per SM) with 24 B spilled, none in its loop.
        KernelLaunch(
            64,
            64,
            band_block=32,
            num_warps=4,
            num_stages=2,
            tma=True,
            split_tails=True,
            max_registers=168,
        ),
        # Registers capped at 168: three programs per SM instead of two; as launched, nothing
        # spills in the loops (8 B outside them), the tails' loops grow by 2 %.
        KernelLaunch(64, 64, band_block=32, num_warps=4, num_stages=3, max_registers=168),
        KernelLaunch(64, 64, band_block=32, num_warps=4, num_stages=2, max_registers=168),
        # At 128, four per SM (two stages: three would not fit four in shared memory); the tails'
        # loops then spill 6 words per iteration.
        KernelLaunch(64, 64, band_block=32, num_warps=4, num_stages=2, max_registers=128),
        # Two interleaved 64-row halves per block (the sm_90 code overlaps one half's matrix
        # instructions with the other's exponentials; no spills as launched).
        KernelLaunch(128, 64, band_block=16, num_warps=4, num_stages=3, halves=2),
        KernelLaunch(128, 64, band_block=32, num_warps=4, num_stages=2, halves=2),
        KernelLaunch(128, 64, band_block=16, num_warps=4, num_stages=3, tma=True, halves=2),
        KernelLaunch(128, 32, band_block=16, num_warps=4, num_stages=3, halves=2),
        KernelLaunch(256, 64, band_block=16, num_warps=8, num_stages=2, halves=2),
        KernelLaunch(128, 64, band_block=16, num_warps=8, num_stages=3, halves=2),
        KernelLaunch(128, 64, band_block=32, num_warps=8, num_stages=3),
        KernelLaunch(128, 128, band_block=64, num_warps=8),
        KernelLaunch(128, 128, band_block=64, num_warps=8, num_stages=3),
        KernelLaunch(128, 64, band_block=64, num_warps=8, num_stages=4),
        # The 64-wide band tile sets the forward's register peak (sm_90, as launched: band 64
        # spills 120 B, band 32 fits in 254 registers, band 16 in 184).
        KernelLaunch(64, 64, band_block=32, num_warps=4, num_stages=3),
        KernelLaunch(64, 64, band_block=16, num_warps=4, num_stages=3),
        KernelLaunch(64, 64, band_block=32, num_warps=4, num_stages=3, tma=True),
        KernelLaunch(128, 64, band_block=32, num_warps=8, num_stages=3, tma=True),
        KernelLaunch(128, 128, band_block=64, num_warps=8, num_stages=3, tma=True),
        # Three stages, split: whether the warp-specialised tails' infinite results at three
        # stages (H200, Triton 3.6) came from the specialisation (a sweep drops a candidate
        # whose results disagree with the default's).
        KernelLaunch(64, 64, band_block=32, num_warps=4, num_stages=3, tma=True, split_tails=True),
    ],
    "grad_query": [
        # Tails kernel: 128 registers as launched (four programs per SM; fused: 246, two).
        KernelLaunch(64, 64, band_block=32, num_warps=4, tma=True, split_tails=True, group=2),
        # Registers capped: two 8-warp programs per SM instead of one (the tails' loops spill
        # 2 words per iteration, the band more), or three 4-warp ones (tails' loops unspilled).
        KernelLaunch(128, 64, band_block=32, num_warps=8, num_stages=3, max_registers=128),
        KernelLaunch(64, 64, band_block=32, num_warps=4, group=2, max_registers=168),
        KernelLaunch(64, 64, band_block=32, num_warps=4),
        KernelLaunch(128, 32, band_block=32, num_warps=8, num_stages=3),
        KernelLaunch(64, 32, band_block=32, num_warps=4, num_stages=4),
        KernelLaunch(128, 64, band_block=32, num_warps=8, num_stages=3, tma=True),
        # 64-row blocks were 2-4 % faster than the 128-row default on the H200, but their
        # per-block table-gradient partials took peak memory over 1.5x SDPA's; two per program,
        # they need the 128-row blocks' memory.
        KernelLaunch(64, 64, band_block=32, num_warps=4, group=2),
        KernelLaunch(64, 32, band_block=32, num_warps=4, num_stages=4, group=2),
    ],
    "grad_key_value": [
        # Tails kernel: 189 registers as launched (still two programs per SM; fused: 255);
        # with 32-row query tiles 134 (three).
        KernelLaunch(64, 64, band_block=32, num_warps=4, tma=True, split_tails=True),
        KernelLaunch(32, 64, band_block=32, num_warps=4, tma=True, split_tails=True),
        # Registers capped at 168: three programs per SM; the tails' loops grow by ~17 % and
        # spill a little (as launched), a trade only timing can judge.
        KernelLaunch(64, 64, band_block=32, num_warps=4, max_registers=168),
        KernelLaunch(64, 128, band_block=32, num_warps=8),
        KernelLaunch(64, 128, band_block=32, num_warps=8, num_stages=3),
        KernelLaunch(32, 64, band_block=32, num_warps=4, num_stages=4),
        # 166 registers as launched: three programs per SM instead of two.
        KernelLaunch(32, 64, band_block=16, num_warps=4, num_stages=3),
        KernelLaunch(32, 128, band_block=16, num_warps=8, num_stages=3),
        KernelLaunch(64, 64, band_block=32, num_warps=4, tma=True),
    ],
}

#: A candidate must give the default configuration's output and gradients to within this,
#: relative to each tensor's largest entry: tile shapes only reorder float32 sums before a bf16
#: result is rounded (a few 1e-3), while a wrong kernel is off by order one.
AGREEMENT = 3e-2


@dataclass
class TuneResult:
    """``blocks``: the fastest agreeing option of each kernel; ``rows``: one dict per timed
    configuration (``label``, ``kernel``, ``fwd_ms``, ``fwd_bwd_ms`` (not for forward options,
    which change only the forward), ``disagreement``, or ``error`` when it failed or
    disagreed)."""

    blocks: TritonBlocks
    rows: list[dict]


def disagreement(results: list[Tensor], reference: list[Tensor]) -> float:
    """Largest difference between two lists of tensors, relative to each reference tensor's
    largest entry; ``inf`` when any is not finite."""
    worst = 0.0
    for got, want in zip(results, reference, strict=True):
        error = ((got.float() - want.float()).abs().max() / want.abs().max().clamp_min(1e-6)).item()
        worst = max(worst, error if math.isfinite(error) else math.inf)
    return worst


def queued_ms(step: Callable[[], object], device: torch.device, calls: int, rounds: int) -> float:
    """Milliseconds per call, ``calls`` calls queued back to back; median of ``rounds``."""
    step()
    times = []
    for _ in range(rounds):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls):
                step()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / calls)
        else:  # the interpreter (tests): wall time
            began = time.perf_counter()
            for _ in range(calls):
                step()
            times.append((time.perf_counter() - began) * 1e3 / calls)
    return statistics.median(times)


def _check_candidates(candidates: dict) -> None:
    for kernel, launches in candidates.items():
        if kernel not in KERNELS:
            raise ValueError(f"candidates has unknown kernel {kernel!r}; valid names: {KERNELS}")
        for launch in launches:
            if not isinstance(launch, KernelLaunch):
                raise TypeError(
                    f"candidates[{kernel!r}] must hold KernelLaunch objects, "
                    f"got {type(launch).__name__}"
                )


def tune_blocks(
    *,
    head_dim: int = 64,
    dtype: torch.dtype = torch.bfloat16,
    length: int = 4096,
    batch: int = 2,
    heads: int = 16,
    max_distance: int = 16,
    candidates: dict[str, list[KernelLaunch]] | None = None,
    calls: int = 10,
    rounds: int = 3,
    tolerance: float = AGREEMENT,
    device: str | torch.device = "cuda",
    progress: Callable[[dict], None] | None = None,
) -> TuneResult:
    """Time ``candidates`` (default :data:`CANDIDATES`) one kernel at a time on random inputs
    ``(batch, heads, length, head_dim)`` with shared key and value tables of ``2·max_distance+1``
    rows, and return the fastest option of each kernel whose results agree with the default
    configuration's (``tolerance``). The forward is judged by forward time, the two gradient
    kernels by forward+backward time minus forward time. ``progress`` is called with each row as
    it is measured (e.g. ``print``). ``device="cpu"`` only runs under ``TRITON_INTERPRET=1``
    (for tests)."""
    candidates = CANDIDATES if candidates is None else candidates
    _check_candidates(candidates)
    for name, value in (("length", length), ("batch", batch), ("heads", heads)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "tune_blocks times the kernels on a CUDA GPU and none is available (for tests: "
            "device='cpu' with TRITON_INTERPRET=1)"
        )
    gen = torch.Generator().manual_seed(0)

    def leaf(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen).to(device, dtype).requires_grad_()

    query, key, value = (leaf(batch, heads, length, head_dim) for _ in range(3))
    rows_in_table = 2 * max_distance + 1
    key_table, value_table = leaf(1, rows_in_table, head_dim), leaf(1, rows_in_table, head_dim)
    upstream = torch.randn(batch, heads, length, head_dim, generator=gen).to(device, dtype)
    index = RelativeIndex(length, length, max_distance, max_distance)
    leaves = [query, key, value, key_table, value_table]

    def forward(blocks: TritonBlocks) -> Tensor:
        return triton_attention(
            query,
            key,
            value,
            index=index,
            key_table=key_table,
            value_table=value_table,
            blocks=blocks,
        )

    def results(blocks: TritonBlocks) -> list[Tensor]:
        out = forward(blocks)
        return [t.detach() for t in (out, *torch.autograd.grad(out, leaves, upstream))]

    default = default_blocks(head_dim, dtype)
    reference = results(default)
    configurations = [("default", None, None)] + [
        (f"{kernel} {launch.label}", kernel, launch)
        for kernel, launches in candidates.items()
        for launch in launches
    ]
    best: dict[str, tuple[float, KernelLaunch]] = {}
    rows = []
    for label, kernel, launch in configurations:
        row: dict = {"label": label, "kernel": kernel}
        try:
            blocks = default if kernel is None else replace(default, **{kernel: launch})
            row["disagreement"] = disagreement(results(blocks), reference)
            if not row["disagreement"] <= tolerance:
                raise ValueError(f"results differ from the default's by {row['disagreement']:.2e}")

            def forward_only(blocks=blocks):
                with torch.no_grad():
                    forward(blocks)

            def forward_backward(blocks=blocks):
                torch.autograd.grad(forward(blocks), leaves, upstream)

            row["fwd_ms"] = queued_ms(forward_only, device, calls, rounds)
            if kernel != "forward":  # a forward option changes only the forward's time
                row["fwd_bwd_ms"] = queued_ms(forward_backward, device, calls, rounds)
        except Exception as error:  # a candidate that does not fit this card is skipped
            row["error"] = f"{type(error).__name__}: {error}"
        rows.append(row)
        if progress is not None:
            progress(row)
        if "error" in row:
            continue
        for name in KERNELS if kernel is None else (kernel,):
            cost = row["fwd_ms"] if name == "forward" else row["fwd_bwd_ms"] - row["fwd_ms"]
            if name not in best or cost < best[name][0]:
                best[name] = (cost, getattr(blocks, name))
    chosen = replace(default, **{name: launch for name, (_, launch) in best.items()})
    return TuneResult(blocks=chosen, rows=rows)
