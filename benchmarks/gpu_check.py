"""One prepared GPU run for issue 5: versions, correctness of the Shaw backends, then timings.

    python benchmarks/gpu_check.py                  # everything, within --budget-s (a few minutes)
    python benchmarks/gpu_check.py --quick          # versions and correctness only
    python benchmarks/gpu_check.py --compile-only   # no GPU needed: registers/spills per kernel
    python benchmarks/gpu_check.py --dry-run        # no GPU: every section on the CPU, tiny sizes

``--dry-run`` runs every section under Triton's interpreter on the CPU, at tiny shapes and with
float16 in place of bfloat16 (the interpreter's bfloat16 ``tl.dot`` is wrong), so that the one
prepared GPU call is not spent finding a bug in this script; its times mean nothing
(``tests/test_gpu_check.py`` runs it).

Sections, in order of priority (each is skipped once the time budget is spent):

1. versions (torch, Triton, CUDA, card);
2. correctness of ``triton`` against the float64 paper-literal reference on small inputs
   (float32, float16, bfloat16; masks, offsets, per-head tables, key-only and value-only;
   D = 32, 64, 128) — output and all five gradients;
3. timing (issue 5's setting): bfloat16, B = 2, H = 16, D = 64, k = 16, tables shared by the
   heads, key and value terms, no mask; forward and forward+backward ms and peak memory for
   SDPA without positions, ``triton``, and ``triton-plain`` (the same kernels without tables:
   what the FlashAttention skeleton costs next to cuDNN), each called directly in bfloat16
   (as ``shaw_attention`` runs ``triton``; it upcasts for the other backends). Two times per
   call: synchronised single calls (the host's work before the first kernel counts) and calls
   queued back to back (as in training, where the host runs ahead); then CUDA time per kernel
   (profiler), the host's own time per call (and where the Triton backend's goes), and what
   the Triton backend's peak memory holds, buffer by buffer (``triton_memory.py``);
4. the same checks and timings for ``eager`` and ``flex`` (unless ``--backends`` leaves them out);
5. Triton tile sizes (and TMA loads), one kernel's at a time, chosen by the
   queued times, and the fastest combination at every length; plain attention with and without
   Triton's warp specialisation (``ws_probe.py``);
   causal and D = 32 / 128 at one length; the tails' terms folded (default) or not;
6. ``relpos.bench.run_benchmark`` on CUDA (what ``relpos bench --device cuda`` runs);
7. at the end, always: issue 5's targets against what this run measured.

Results go to ``$OUT/gpu_check.json`` (rewritten after every section, so a run cut short still
leaves what it measured) or ``--json PATH``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

from relpos.attention import FusedDropout, RelativeIndex, triton_shaw, triton_tune
from relpos.attention.eager import eager_attention
from relpos.attention.flex import flex_shaw_attention
from relpos.attention.reference import reference_attention
from relpos.attention.triton_shaw import (
    KernelLaunch,
    TritonBlocks,
    compile_kernels,
    default_blocks,
    triton_attention,
    triton_dropout_mask,
)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DEVICE = "cuda"
#: Issue 5's timing setting (``--dry-run`` shrinks it): batch, heads, dtype; and the lengths at
#: which its targets are stated.
TIMING = {"batch": 2, "heads": 16, "dtype": torch.bfloat16}
TARGET_LENGTHS = (4096, 8192)
DRY_RUN = False


def dry_run_setup(lengths: list[int]) -> None:
    """Every section on the CPU under Triton's interpreter, at tiny sizes (see the docstring)."""
    global DEVICE, DRY_RUN, TARGET_LENGTHS
    # Triton builds its own library functions (tl.sum, ...) for the interpreter or not when it
    # is first imported: nothing may have imported it yet unless the interpreter was on.
    if not triton_shaw._interpreting() and "triton" in sys.modules:
        raise SystemExit("--dry-run: Triton was imported already; run with TRITON_INTERPRET=1")
    os.environ["TRITON_INTERPRET"] = "1"
    DEVICE, DRY_RUN, TARGET_LENGTHS = "cpu", True, tuple(lengths)
    TIMING.update(batch=1, heads=2, dtype=torch.float16)


def setting() -> str:
    """The timing setting, for headings: ``bfloat16, B=2, H=16`` (tiny with ``--dry-run``)."""
    dtype = str(TIMING["dtype"]).removeprefix("torch.")
    return f"{dtype}, B={TIMING['batch']}, H={TIMING['heads']}"


def synchronize() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


class Run:
    """Collects results, prints as it goes, and keeps the JSON file current."""

    def __init__(self, json_path: Path | None, budget_s: float):
        self.json_path = json_path
        self.budget_s = budget_s
        self.start = time.perf_counter()
        self.results: dict = {"sections": {}}

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def has_time(self, section: str) -> bool:
        if self.elapsed() < self.budget_s:
            return True
        print(
            f"\n[{section}: skipped, {self.elapsed():.0f} s of the {self.budget_s:.0f} s budget "
            "spent]",
            flush=True,
        )
        self.results["sections"].setdefault(section, {"skipped": "time budget"})
        return False

    def save(self) -> None:
        self.results["elapsed_s"] = round(self.elapsed(), 1)
        if self.json_path is not None:
            self.json_path.parent.mkdir(parents=True, exist_ok=True)
            self.json_path.write_text(json.dumps(self.results, indent=1, default=str))


# --------------------------------------------------------------------------------- versions


def versions() -> dict:
    import triton

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name()
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
        info["memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


# ------------------------------------------------------------------------------ correctness

#: (name, dtype, options): few distinct kernel configurations, each exercising several features,
#: because every new combination of masks/tables/dtype/head size compiles the kernels again.
CHECKS = [
    (
        "fp32 causal+padding, query_offset, per-head tables",
        "float32",
        dict(q_len=300, k_len=333, query_offset=8, per_head=True, causal=True, mask="padding"),
    ),
    (
        "fp32 dense mask with an empty row, key-only",
        "float32",
        dict(q_len=257, k_len=257, mask="dense", values=False),
    ),
    (
        "fp32 float mask, value-only, k_left=5 k_right=40",
        "float32",
        dict(q_len=200, k_len=200, mask="float", keys=False, left=5, right=40),
    ),
    ("bf16 plain (the timed configuration)", "bfloat16", dict(q_len=512, k_len=512)),
    (
        "fp16 D=32, Lq != Lk, key_offset, causal",
        "float16",
        dict(q_len=190, k_len=300, key_offset=50, head_dim=32, causal=True),
    ),
    ("bf16 D=128 padding", "bfloat16", dict(q_len=300, k_len=300, head_dim=128, mask="padding")),
    # Dropout drawn in the kernels (triton only): the reference gets their mask written out.
    (
        "fp32 dropout 0.2, causal+padding, per-head tables",
        "float32",
        dict(q_len=300, k_len=333, per_head=True, causal=True, mask="padding", dropout=0.2),
    ),
    (
        "bf16 dropout 0.1 (the timed configuration)",
        "bfloat16",
        dict(q_len=512, k_len=512, dropout=0.1),
    ),
]

#: error allowed, relative to the largest reference value of each compared tensor (or to 1 when
#: that is smaller: a gradient that is zero in exact arithmetic has only rounding left).
TOLERANCE = {"float32": 2e-3, "float16": 2e-2, "bfloat16": 6e-2}


def make_case(
    dtype,
    *,
    batch=2,
    heads=4,
    q_len=256,
    k_len=256,
    head_dim=64,
    left=16,
    right=16,
    query_offset=0,
    key_offset=0,
    per_head=False,
    keys=True,
    values=True,
    causal=False,
    mask=None,
    seed=0,
):
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    index = RelativeIndex(q_len, k_len, left, right, query_offset, key_offset)
    table_heads = heads if per_head else 1

    def leaf(*shape):
        return torch.randn(*shape, generator=gen, device=DEVICE).to(dtype).requires_grad_()

    tensors = {
        "query": leaf(batch, heads, q_len, head_dim),
        "key": leaf(batch, heads, k_len, head_dim),
        "value": leaf(batch, heads, k_len, head_dim),
        "key_table": leaf(table_heads, index.num_buckets, head_dim) if keys else None,
        "value_table": leaf(table_heads, index.num_buckets, head_dim) if values else None,
    }
    attn_mask = None
    if mask == "padding":
        attn_mask = torch.ones(batch, 1, 1, k_len, dtype=torch.bool, device=DEVICE)
        attn_mask[0, ..., -17:] = False
    elif mask == "dense":
        attn_mask = torch.rand(q_len, k_len, generator=gen, device=DEVICE) > 0.3
        attn_mask[5] = False
    elif mask == "float":
        attn_mask = torch.randn(batch, 1, q_len, k_len, generator=gen, device=DEVICE)
    return index, tensors, dict(attn_mask=attn_mask, is_causal=causal)


def output_and_grads(fn, index, tensors, upstream, masks, **extra):
    leaves = [t for t in tensors.values() if t is not None]
    out = fn(
        tensors["query"],
        tensors["key"],
        tensors["value"],
        index=index,
        key_table=tensors["key_table"],
        value_table=tensors["value_table"],
        scale=tensors["query"].shape[-1] ** -0.5,
        **masks,
        **extra,
    )
    grads = torch.autograd.grad(out, leaves, upstream.to(out.dtype))
    return [out, *grads]


def dry_run_case(dtype_name, options) -> tuple[str, dict]:
    """A check's case for ``--dry-run``: lengths and offsets / 8, one batch of two heads, and
    float16 in place of bfloat16 (the interpreter's bfloat16 dot is wrong)."""
    options = dict(options, batch=1, heads=2)
    for name in ("q_len", "k_len", "query_offset", "key_offset"):
        if name in options:
            options[name] = options[name] // 8 + (3 if name.endswith("len") else 0)
    return ("float16" if dtype_name == "bfloat16" else dtype_name), options


def check_backend(name, fn, dtype_name, options) -> dict:
    if DRY_RUN:
        dtype_name, options = dry_run_case(dtype_name, options)
    dtype = DTYPES[dtype_name]
    options = dict(options)
    dropout_p = options.pop("dropout", 0.0)
    index, tensors, masks = make_case(dtype, **options)
    batch, heads, _, value_dim = tensors["value"].shape
    upstream = torch.randn(batch, heads, index.query_len, value_dim, device=DEVICE)
    drawn, written = {}, {}
    if dropout_p:  # the kernels draw the mask; the reference gets it written out
        dropout = FusedDropout(dropout_p, 99)
        drawn = {"dropout_mask": dropout}
        mask = triton_dropout_mask(dropout, batch, heads, index.query_len, index.key_len, DEVICE)
        written = {"dropout_mask": mask.double()}
    got = output_and_grads(fn, index, tensors, upstream, masks, **drawn)
    exact = {
        k: None if t is None else t.detach().double().requires_grad_() for k, t in tensors.items()
    }
    exact_masks = dict(masks)
    if masks["attn_mask"] is not None and masks["attn_mask"].is_floating_point():
        exact_masks["attn_mask"] = masks["attn_mask"].double()
    want = output_and_grads(
        reference_attention, index, exact, upstream.double(), exact_masks, **written
    )
    labels = ["out", *(k for k, t in tensors.items() if t is not None)]
    errors = {}
    for label, a, b in zip(labels, got, want, strict=True):
        errors[label] = (a.double() - b).abs().max().item() / max(b.abs().max().item(), 1.0)
    worst = max(errors.values())
    ok = math.isfinite(worst) and worst <= TOLERANCE[dtype_name]  # NaN compares False too
    return {
        "backend": name,
        "dtype": dtype_name,
        "relative_errors": errors,
        "worst": worst,
        "ok": ok,
    }


def _eager_upcast(query, key, value, *, key_table, value_table, **kwargs):
    """The eager backend as ``shaw_attention`` runs it on half inputs: on float32 copies."""

    def up(t):
        return None if t is None else t.float()

    out = eager_attention(
        up(query),
        up(key),
        up(value),
        key_table=up(key_table),
        value_table=up(value_table),
        **kwargs,
    )
    return out.to(query.dtype)


def correctness(run: Run, backends: list[str]) -> None:
    fns = {"triton": triton_attention, "eager": _eager_upcast, "flex": flex_shaw_attention}
    section = run.results["sections"].setdefault("correctness", {"checks": []})
    print("\n== correctness vs float64 reference (max |error| / max(1, max |reference|)) ==")
    for backend in backends:
        cases = CHECKS if backend != "flex" else [CHECKS[0], CHECKS[3]]  # flex compiles slowly
        if backend != "triton":  # only the kernels draw dropout themselves
            cases = [case for case in cases if "dropout" not in case[2]]
        for label, dtype_name, options in cases:
            if not run.has_time(f"correctness {backend}"):
                return
            began = time.perf_counter()
            try:
                result = check_backend(backend, fns[backend], dtype_name, options)
            except Exception as error:  # record and go on: one failure must not end the run
                result = {
                    "backend": backend,
                    "dtype": dtype_name,
                    "ok": False,
                    "error": f"{type(error).__name__}: {error}",
                    "traceback": traceback.format_exc(limit=6),
                }
            result.update(case=label, seconds=round(time.perf_counter() - began, 1))
            section["checks"].append(result)
            status = "ok  " if result["ok"] else "FAIL"
            detail = result.get("error") or " ".join(
                f"{k}={v:.1e}" for k, v in result["relative_errors"].items()
            )
            print(f"{status} {backend:<6} {label:<52} {detail} ({result['seconds']} s)", flush=True)
            run.save()


# ---------------------------------------------------------------------------------- timing


def timing_inputs(length, *, head_dim=64, k=16):
    batch, heads, dtype = TIMING["batch"], TIMING["heads"], TIMING["dtype"]
    gen = torch.Generator(device=DEVICE).manual_seed(length)

    def leaf(*shape):
        return torch.randn(*shape, generator=gen, device=DEVICE).to(dtype).requires_grad_()

    tensors = {
        "query": leaf(batch, heads, length, head_dim),
        "key": leaf(batch, heads, length, head_dim),
        "value": leaf(batch, heads, length, head_dim),
        "key_table": leaf(1, 2 * k + 1, head_dim),
        "value_table": leaf(1, 2 * k + 1, head_dim),
    }
    upstream = torch.randn(batch, heads, length, head_dim, generator=gen, device=DEVICE).to(dtype)
    return RelativeIndex(length, length, k, k), tensors, upstream


def make_steps(backend, index, tensors, upstream, blocks=None, is_causal=False, dropout_p=0.0):
    """(forward-only step, forward+backward step) for one backend; ``dropout_p`` for SDPA and
    ``triton`` only."""
    q, k, v = tensors["query"], tensors["key"], tensors["value"]
    if backend == "triton-plain":  # the same kernels without tables: plain attention
        leaves = [q, k, v]

        def forward():
            return triton_attention(
                q,
                k,
                v,
                index=index,
                key_table=None,
                value_table=None,
                is_causal=is_causal,
                scale=q.shape[-1] ** -0.5,
                blocks=blocks,
            )
    elif backend == "sdpa":
        leaves = [q, k, v]

        def forward():
            return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, dropout_p=dropout_p)
    else:
        leaves = list(tensors.values())
        fn = {"triton": triton_attention, "eager": eager_attention, "flex": flex_shaw_attention}[
            backend
        ]
        extra = {"blocks": blocks} if backend == "triton" and blocks is not None else {}
        if dropout_p:
            extra["dropout_mask"] = FusedDropout(dropout_p, 7)

        def forward():
            return fn(
                q,
                k,
                v,
                index=index,
                key_table=tensors["key_table"],
                value_table=tensors["value_table"],
                attn_mask=None,
                is_causal=is_causal,
                scale=q.shape[-1] ** -0.5,
                **extra,
            )

    def forward_only():
        with torch.no_grad():
            return forward()

    def forward_backward():
        return torch.autograd.grad(forward(), leaves, upstream)

    return forward_only, forward_backward


def median_ms(step, repeats, warmup) -> float:
    for _ in range(warmup):
        step()
    synchronize()
    times = []
    for _ in range(repeats):
        if DEVICE == "cpu":  # --dry-run
            began = time.perf_counter()
            step()
            times.append((time.perf_counter() - began) * 1e3)
            continue
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def queued_ms(step, calls, rounds=3) -> float:
    """Milliseconds per call with ``calls`` calls queued back to back (the host's own work hidden
    whenever the GPU is the slower side, as in training); the library's measure."""
    return triton_tune.queued_ms(step, torch.device(DEVICE), calls, 1 if DRY_RUN else rounds)


def peak_mib(step) -> float | None:
    """Peak memory one call allocates above what existed before it (inputs excluded); None on
    the CPU (``--dry-run``)."""
    if DEVICE == "cpu":
        step()
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def time_backend(
    backend, length, repeats, blocks=None, forward_only=False, synchronised=True
) -> dict:
    """Forward and forward+backward times (synchronised and queued) and peak memory; with
    ``forward_only`` the forward's times alone (what a forward tile choice changes); without
    ``synchronised`` only the queued times (what the sweep chooses by)."""
    index, tensors, upstream = timing_inputs(length)
    forward, forward_backward = make_steps(backend, index, tensors, upstream, blocks)
    slow = backend == "eager" and length >= 4096  # seconds per call: fewer repeats
    reps, warm = (3, 1) if slow else (repeats, 1 if DRY_RUN else 3)
    row = {"length": length, "backend": backend}
    steps = [("fwd", forward)] + ([] if forward_only else [("fwd_bwd", forward_backward)])
    for name, step in steps:
        if synchronised or slow:
            row[f"{name}_ms"] = median_ms(step, reps, warm)
        if not slow:
            row[f"{name}_ms_queued"] = queued_ms(step, repeats)
    if not forward_only:
        row["peak_fwd_bwd_mib"] = peak_mib(forward_backward)
    return row


def timing(run: Run, lengths: list[int], backends: list[str], repeats: int) -> None:
    section = run.results["sections"].setdefault(
        "timing",
        {
            "setting": f"{setting()}, D=64, k=16, shared tables, key+value terms, no mask; "
            "*_ms: median ms of single calls, synchronised, between CUDA events (includes the "
            "host's work before the first kernel); *_ms_queued: ms per call with calls queued "
            "back to back (host work hidden when the GPU is slower); peak = "
            "max_memory_allocated above the inputs; triton-plain = the kernels without tables",
            "rows": [],
        },
    )
    print(f"\n== timing: {setting()}, D=64, k=16, shared tables, K+V terms ==")
    print("   (per call: synchronised single calls; queued: calls back to back)")
    print(
        f"{'L':>6} {'backend':<12} {'fwd ms':>8} {'xSDPA':>6} {'queued':>8} {'xSDPA':>6} "
        f"{'fwd+bwd':>8} {'xSDPA':>6} {'queued':>8} {'xSDPA':>6} {'peak MiB':>9} {'xSDPA':>6}"
    )
    done = {(r["length"], r["backend"]) for r in section["rows"]}
    baseline = {
        r["length"]: r for r in section["rows"] if r["backend"] == "sdpa" and "error" not in r
    }
    for length in lengths:
        for backend in ["sdpa", *backends]:
            if (length, backend) in done:
                continue  # SDPA, timed once per length by an earlier call
            if not run.has_time(f"timing {backend} L={length}"):
                continue
            try:
                row = time_backend(backend, length, repeats)
            except torch.cuda.OutOfMemoryError:
                row = {"length": length, "backend": backend, "error": "out of memory"}
            except Exception as error:
                row = {
                    "length": length,
                    "backend": backend,
                    "error": f"{type(error).__name__}: {error}",
                }
            finally:
                torch.cuda.empty_cache()
            section["rows"].append(row)
            run.save()
            if backend == "sdpa" and "error" not in row:
                baseline[length] = row
            if "error" in row:
                print(f"{length:>6} {backend:<12} {row['error'][:80]}", flush=True)
                continue
            print(
                f"{length:>6} {backend:<12} {_timing_cells(row, baseline.get(length))}", flush=True
            )


def _timing_cells(row: dict, base: dict | None) -> str:
    """The columns of a timing row: each value and its ratio to SDPA's in the same run."""
    cells = []
    for key, width, digits in (
        ("fwd_ms", 8, 3),
        ("fwd_ms_queued", 8, 3),
        ("fwd_bwd_ms", 8, 3),
        ("fwd_bwd_ms_queued", 8, 3),
        ("peak_fwd_bwd_mib", 9, 1),
    ):
        value = row.get(key)
        cells.append(f"{value:{width}.{digits}f}" if value is not None else f"{'-':>{width}}")
        base_value = (base or {}).get(key)
        ok = value is not None and base_value
        cells.append(f"{value / base_value:6.2f}" if ok else f"{'-':>6}")
    return " ".join(cells)


#: Alternatives for one kernel at a time (the others keep their defaults), and how closely each
#: must reproduce the default's results: the library's own (``relpos.attention.triton_tune``).
SWEEP = triton_tune.CANDIDATES
SWEEP_AGREEMENT = triton_tune.AGREEMENT


def _triton_results(length: int, blocks: TritonBlocks) -> list[torch.Tensor]:
    """Output and the five gradients of one Triton fwd+bwd on the timing inputs, in float32."""
    index, tensors, upstream = timing_inputs(length)
    q, k, v = tensors["query"], tensors["key"], tensors["value"]
    out = triton_attention(
        q,
        k,
        v,
        index=index,
        key_table=tensors["key_table"],
        value_table=tensors["value_table"],
        scale=q.shape[-1] ** -0.5,
        blocks=blocks,
    )
    grads = torch.autograd.grad(out, list(tensors.values()), upstream)
    return [t.detach().float() for t in (out, *grads)]


def sweep(run: Run, length: int, repeats: int) -> TritonBlocks:
    """Alternative tile sizes for the bf16 D=64 kernels, one kernel at a time; returns the
    combination of the fastest forward and the fastest backward pair found among those that
    agree with the default configuration (``SWEEP_AGREEMENT``) and, for the backward, keep peak
    memory within issue 5's 1.5x SDPA's (when this run timed SDPA at this length)."""
    default = default_blocks(64, TIMING["dtype"])
    section = run.results["sections"].setdefault("sweep", {"length": length, "rows": []})
    print(f"\n== Triton tile sizes at L={length} ({setting()}, D=64), one kernel at a time ==")
    best = {"forward": (math.inf, default.forward)}
    best_backward = {
        "grad_query": (math.inf, default.grad_query),
        "grad_key_value": (math.inf, default.grad_key_value),
    }
    candidates = [("default", None, default)]
    for kernel, launches in SWEEP.items():
        for launch in launches:
            blocks = TritonBlocks(
                **{
                    name: launch if name == kernel else getattr(default, name)
                    for name in ("forward", "grad_query", "grad_key_value")
                }
            )
            candidates.append((f"{kernel} {launch.label}", kernel, blocks))
    # Warp-specialised kernels last: Triton's Hopper specialisation is young, and should one
    # hang, the time limit ends the run after every other candidate has been measured.
    candidates.sort(
        key=lambda item: item[1] is not None and getattr(item[2], item[1]).warp_specialize
    )
    default_row = None
    reference = _triton_results(length, default)
    # Issue 5's memory target: a backward candidate over it is timed but not chosen.
    sdpa = [
        r
        for r in run.results["sections"].get("timing", {}).get("rows", [])
        if r.get("backend") == "sdpa" and r.get("length") == length and r.get("peak_fwd_bwd_mib")
    ]
    memory_limit = TARGETS["peak_fwd_bwd_mib"] * sdpa[0]["peak_fwd_bwd_mib"] if sdpa else None
    for label, kernel, blocks in candidates:
        if not run.has_time(f"sweep {label}"):
            break
        try:
            # A forward candidate changes only the forward's time: time that alone; and tiles
            # are chosen by queued times, so only those are measured (the chosen tiles get both
            # kinds in the next section).
            row = time_backend(
                "triton",
                length,
                repeats,
                blocks=blocks,
                forward_only=kernel == "forward",
                synchronised=False,
            )
            row["disagreement"] = triton_tune.disagreement(
                _triton_results(length, blocks), reference
            )
            if not row["disagreement"] <= SWEEP_AGREEMENT:
                row["error"] = f"results differ from the default's by {row['disagreement']:.2e}"
        except Exception as error:
            row = {"error": f"{type(error).__name__}: {error}"}
        row["blocks"] = label
        section["rows"].append(row)
        run.save()
        if "error" in row:
            print(f"{label:<40} {row['error'][:80]}", flush=True)
            continue
        # Tiles change GPU time, not the host's: choose by the queued times.
        forward_ms = row["fwd_ms_queued"]
        if kernel == "forward":
            backward_ms = None
            print(
                f"{label:<40} queued: fwd {forward_ms:8.3f} ms; "
                f"vs default {row['disagreement']:.1e}",
                flush=True,
            )
        else:
            backward_ms = row["fwd_bwd_ms_queued"] - forward_ms
            print(
                f"{label:<40} queued: fwd {forward_ms:8.3f} ms  fwd+bwd "
                f"{row['fwd_bwd_ms_queued']:8.3f} ms (bwd {backward_ms:7.3f}); "
                f"vs default {row['disagreement']:.1e}, "
                f"peak {row['peak_fwd_bwd_mib'] or 0:.1f} MiB",  # None on the CPU (--dry-run)
                flush=True,
            )
        if kernel is None:
            default_row = row
            best["forward"] = (forward_ms, default.forward)
            for name in best_backward:
                best_backward[name] = (backward_ms, getattr(default, name))
        elif kernel == "forward" and forward_ms < best["forward"][0]:
            best["forward"] = (forward_ms, blocks.forward)
        elif kernel in best_backward and backward_ms < best_backward[kernel][0]:
            peak = row.get("peak_fwd_bwd_mib")
            if memory_limit is not None and peak is not None and peak > memory_limit:
                row["not_chosen"] = f"peak {peak:.1f} MiB over {memory_limit:.1f} (1.5x SDPA's)"
                print(f"{'':<40} not chosen: {row['not_chosen']}", flush=True)
                continue
            best_backward[kernel] = (backward_ms, getattr(blocks, kernel))
    chosen = TritonBlocks(
        best["forward"][1], best_backward["grad_query"][1], best_backward["grad_key_value"][1]
    )
    section["chosen"] = {
        name: getattr(chosen, name).label for name in ("forward", "grad_query", "grad_key_value")
    }
    section["default_row"] = default_row
    section["chosen_code"] = repr(chosen)  # to paste into default_blocks
    print("chosen:", section["chosen"], flush=True)
    print("as code:", section["chosen_code"], flush=True)
    run.save()
    return chosen


def timing_chosen(run: Run, blocks: TritonBlocks, lengths: list[int], repeats: int) -> None:
    """The sweep's best tiles at every length, against SDPA measured in the same run."""
    section = run.results["sections"].setdefault("timing_chosen", {"rows": []})
    timed = run.results["sections"]["timing"]["rows"]
    baseline = {r["length"]: r for r in timed if r["backend"] == "sdpa" and "error" not in r}
    print("\n== Triton with the chosen tiles ==")
    for length in lengths:
        if not run.has_time(f"timing chosen L={length}"):
            return
        try:
            row = time_backend("triton", length, repeats, blocks=blocks)
        except Exception as error:
            row = {"length": length, "error": f"{type(error).__name__}: {error}"}
        section["rows"].append(row)
        run.save()
        base = baseline.get(length)
        if "error" in row or base is None:
            print(f"{length:>6} {row.get('error', 'no SDPA baseline')}", flush=True)
            continue
        print(f"{length:>6} {'chosen':<12} {_timing_cells(row, base)}", flush=True)


def warp_specialisation_probe(run: Run, lengths: list[int]) -> None:
    """``benchmarks/ws_probe.py``: plain attention, forward and backward, with and without
    Triton's warp specialisation (and the forward in two interleaved halves), against SDPA."""
    section = run.results["sections"].setdefault("ws_probe", {"rows": []})
    print("\n== plain attention forward, Triton with / without warp specialisation (ws_probe) ==")
    try:
        import ws_probe  # here, not at the top: --dry-run sets the interpreter up first

        options = dict(
            device=DEVICE,
            dtype=TIMING["dtype"],
            batch=TIMING["batch"],
            heads=TIMING["heads"],
            calls=1 if DRY_RUN else 10,
        )
        probe_lengths = [128] if DRY_RUN else lengths  # a multiple of its tiles
        section["rows"] = ws_probe.run_probe(probe_lengths, **options)
        run.save()
        print("(backward: the dQ kernel, then the dK/dV kernel)", flush=True)
        section["backward_rows"] = ws_probe.run_backward_probe(probe_lengths, **options)
    except Exception as error:
        section["error"] = f"{type(error).__name__}: {error}"
        print(f"failed: {section['error'][:200]}", flush=True)
    run.save()


@contextlib.contextmanager
def scale_first_tails():
    """Make the kernels add each tail's key term entry by entry (the cost before commit 7d1ca0b
    folded it into the row maximum), to time that change against itself in one run."""
    original = triton_shaw._meta

    def patched(*args, **kwargs):
        return dict(original(*args, **kwargs), SCALE_FIRST=True)

    triton_shaw._meta = patched
    try:
        yield
    finally:
        triton_shaw._meta = original


def timing_fold(run: Run, lengths: list[int], repeats: int) -> None:
    """Default kernels against the same kernels with the tail terms added entry by entry."""
    section = run.results["sections"].setdefault("fold", {"rows": []})
    print("\n== tails folded into max/lse/delta (default) vs added entry by entry ==")
    for length in lengths:
        if not run.has_time(f"fold L={length}"):
            return
        try:
            folded = time_backend("triton", length, repeats)
            with scale_first_tails():
                unfolded = time_backend("triton", length, repeats)
            row = {"length": length, "folded": folded, "entry_by_entry": unfolded}
            print(
                f"{length:>6} queued: fwd {folded['fwd_ms_queued']:7.3f} vs "
                f"{unfolded['fwd_ms_queued']:7.3f} ms, fwd+bwd {folded['fwd_bwd_ms_queued']:7.3f}"
                f" vs {unfolded['fwd_bwd_ms_queued']:7.3f} ms",
                flush=True,
            )
        except Exception as error:
            row = {"length": length, "error": f"{type(error).__name__}: {error}"}
            print(f"{length:>6} {row['error'][:100]}", flush=True)
        section["rows"].append(row)
        run.save()


def timing_variants(run: Run, length: int, repeats: int) -> None:
    """Causal, other head sizes and attention dropout at one length: Triton (default tiles)
    against SDPA (with the same dropout)."""
    section = run.results["sections"].setdefault("variants", {"length": length, "rows": []})
    print(f"\n== variants at L={length}, {setting()}, k=16 (Triton / SDPA) ==")
    for label, head_dim, causal, dropout_p in (
        ("causal D=64", 64, True, 0.0),
        ("D=128", 128, False, 0.0),
        ("D=32", 32, False, 0.0),
        ("dropout 0.1", 64, False, 0.1),
    ):
        if not run.has_time(f"variant {label}"):
            return
        row = {"variant": label}
        try:
            index, tensors, upstream = timing_inputs(length, head_dim=head_dim)
            for backend in ("sdpa", "triton"):
                forward_only, forward_backward = make_steps(
                    backend, index, tensors, upstream, is_causal=causal, dropout_p=dropout_p
                )
                row[f"{backend}_fwd_ms"] = median_ms(forward_only, repeats, 3)
                row[f"{backend}_fwd_bwd_ms"] = median_ms(forward_backward, repeats, 3)
                row[f"{backend}_fwd_ms_queued"] = queued_ms(forward_only, repeats)
                row[f"{backend}_fwd_bwd_ms_queued"] = queued_ms(forward_backward, repeats)
            print(
                f"{label:<12} {'triton':<8} "
                + _timing_cells(
                    {k[7:]: v for k, v in row.items() if k.startswith("triton_")},
                    {k[5:]: v for k, v in row.items() if k.startswith("sdpa_")},
                ),
                flush=True,
            )
        except Exception as error:
            row["error"] = f"{type(error).__name__}: {error}"
            print(f"{label}: {row['error'][:100]}", flush=True)
        section["rows"].append(row)
        run.save()


def profile(run: Run, length: int) -> None:
    """CUDA time per kernel for one forward+backward of SDPA and of the Triton backend (with
    ``--dry-run``: CPU time per operator)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    on_cpu = DEVICE == "cpu"
    activity = ProfilerActivity.CPU if on_cpu else ProfilerActivity.CUDA
    section = run.results["sections"].setdefault("profile", {"length": length})
    print(f"\n== {DEVICE.upper()} time per kernel, one forward+backward at L={length} ==")
    for backend in ("sdpa", "triton"):
        try:
            index, tensors, upstream = timing_inputs(length)
            _, step = make_steps(backend, index, tensors, upstream)
            for _ in range(3):
                step()
            synchronize()
            with torch_profile(activities=[activity]) as prof:
                for _ in range(5):
                    step()
                synchronize()
            kernels = []
            for event in prof.key_averages():
                if on_cpu:
                    cuda_us = event.self_cpu_time_total
                else:
                    cuda_us = getattr(event, "device_time_total", None)
                    if cuda_us is None:
                        cuda_us = getattr(event, "cuda_time_total", 0.0)
                if cuda_us > 0:
                    kernels.append((event.key, cuda_us / 5 / 1000, event.count // 5))
            kernels.sort(key=lambda item: -item[1])
            section[backend] = [
                {"kernel": name, "ms_per_step": ms, "calls_per_step": calls}
                for name, ms, calls in kernels[:10]
            ]
            for name, ms, calls in kernels[:8]:
                print(f"{backend:<7} {ms:8.3f} ms  x{calls:<3} {name[:90]}", flush=True)
        except Exception as error:
            section[backend] = {"error": f"{type(error).__name__}: {error}"}
            print(f"{backend}: profile failed: {type(error).__name__}: {error}", flush=True)
        run.save()


def memory(run: Run, lengths: list[int]) -> None:
    """What the Triton backend's peak holds, buffer by buffer (``triton_memory.py``), beside the
    allocator's peak: a gap is memory allocated outside PyTorch's operators or rounding. Runs 6
    and 7 measured 142.3 MiB at L = 4096 where the buffers add up to 125.8 MiB."""
    import triton_memory

    section = run.results["sections"].setdefault("memory", {"rows": []})
    print("\n== Triton peak memory, buffer by buffer (fwd+bwd, MiB above the inputs) ==")
    for length in lengths:
        try:
            tracker, allocator_peak = triton_memory.trace(length, DEVICE)
        except Exception as error:  # noqa: BLE001 - a failed section must not end the run
            section["rows"].append({"length": length, "error": repr(error)})
            print(f"L={length}: {error!r}")
            continue
        buffers = sorted(tracker.at_peak, key=lambda b: -b.nbytes)
        row = {
            "length": length,
            "buffers_mib": round(tracker.peak / 2**20, 2),
            "allocator_mib": None
            if math.isnan(allocator_peak)
            else round(allocator_peak / 2**20, 2),
            "largest": [
                [b.name, list(b.shape), str(b.dtype), round(b.nbytes / 2**20, 2)] for b in buffers
            ],
        }
        section["rows"].append(row)
        print(
            f"L={length}: buffers {row['buffers_mib']} MiB, allocator {row['allocator_mib']} MiB; "
            + ", ".join(f"{b.name} {b.nbytes / 2**20:.1f}" for b in buffers[:9])
        )
    run.save()


def host_time(run: Run, length: int, calls: int = 30) -> None:
    """The host's own time per call (CPU wall time to enqueue one call on an idle GPU: what the
    synchronised times add to the queued ones), then where the Triton backend's goes (cProfile
    of a forward+backward, the functions with the most time of their own)."""
    import cProfile
    import pstats

    section = run.results["sections"].setdefault("host", {"length": length, "rows": []})
    print(f"\n== host time per call at L={length} (CPU µs to enqueue on an idle GPU) ==")
    index, tensors, upstream = timing_inputs(length)
    for backend in ("sdpa", "triton", "triton-plain"):
        row = {"backend": backend}
        try:
            for name, step in zip(
                ("fwd", "fwd_bwd"), make_steps(backend, index, tensors, upstream), strict=True
            ):
                for _ in range(3):
                    step()
                times = []
                for _ in range(calls):
                    synchronize()
                    began = time.perf_counter()
                    step()
                    times.append((time.perf_counter() - began) * 1e6)
                row[f"{name}_us"] = statistics.median(times)
            print(
                f"{backend:<13} fwd {row['fwd_us']:8.1f} µs   fwd+bwd {row['fwd_bwd_us']:8.1f} µs"
            )
        except Exception as error:
            row["error"] = f"{type(error).__name__}: {error}"
            print(f"{backend:<13} {row['error'][:100]}")
        section["rows"].append(row)
        run.save()
    try:
        _, step = make_steps("triton", index, tensors, upstream)
        synchronize()
        profiler = cProfile.Profile()
        # On CUDA the autograd engine runs the backward on a thread of its own, which cProfile
        # would not see: here it runs on this one.
        with torch.autograd.set_multithreading_enabled(False):
            profiler.enable()
            for _ in range(calls):
                step()
            profiler.disable()
        synchronize()
        stats = pstats.Stats(profiler)
        top = sorted(stats.stats.items(), key=lambda item: -item[1][2])[:12]  # by own time
        section["triton_top"] = []
        print("triton fwd+bwd, most own time (µs per call, calls per call, function):")
        for (path, line, function), (_, ncalls, own, _, _) in top:
            where = f"{Path(path).name}:{line} {function}"
            section["triton_top"].append(
                {"function": where, "own_us": own / calls * 1e6, "calls": ncalls / calls}
            )
            print(f"  {own / calls * 1e6:8.1f} µs  x{ncalls / calls:<5.1f} {where[:80]}")
    except Exception as error:
        section["triton_top"] = {"error": f"{type(error).__name__}: {error}"}
        print(f"cProfile failed: {type(error).__name__}: {error}")
    run.save()


def bench_smoke(run: Run) -> None:
    """What ``relpos bench --device cuda`` runs: every backend that applies, via shaw_attention."""
    from relpos.bench import BenchConfig, format_table, run_benchmark

    dtype = str(TIMING["dtype"]).removeprefix("torch.")
    print(f"\n== relpos.bench.run_benchmark on {DEVICE} (via shaw_attention, {dtype} inputs) ==")
    try:
        config = BenchConfig(
            lengths=(64,) if DRY_RUN else (1024,),
            batch=TIMING["batch"],
            heads=TIMING["heads"],
            dtype=dtype,
            device=DEVICE,
            repeats=3,
            warmup=1,
        )
        result = run_benchmark(config)
        print(format_table(result["rows"]), flush=True)
        run.results["sections"]["bench"] = result
    except Exception as error:
        print(f"failed: {type(error).__name__}: {error}", flush=True)
        run.results["sections"]["bench"] = {"error": traceback.format_exc(limit=6)}
    run.save()


#: Issue 5's targets, as ratios to SDPA at L = 4096 and 8192.
TARGETS = {"fwd_ms": 1.5, "fwd_bwd_ms": 2.0, "peak_fwd_bwd_mib": 1.5}


def targets(run: Run) -> None:
    """Issue 5's targets against this run: the default tiles and the sweep's choice, each time
    measured both ways (synchronised single calls and queued calls)."""
    sections = run.results["sections"]
    sdpa = {
        r["length"]: r
        for r in sections.get("timing", {}).get("rows", [])
        if r.get("backend") == "sdpa" and "error" not in r
    }
    candidates = [
        ("default tiles", r)
        for r in sections.get("timing", {}).get("rows", [])
        if r.get("backend") == "triton"
    ]
    candidates += [("chosen tiles", r) for r in sections.get("timing_chosen", {}).get("rows", [])]
    verdicts = []
    for label, row in candidates:
        base = sdpa.get(row.get("length"))
        if row.get("length") not in TARGET_LENGTHS or base is None or "error" in row:
            continue
        for key, limit in TARGETS.items():
            # Times were measured both ways; memory once.
            for name in (key, f"{key}_queued") if key.endswith("_ms") else (key,):
                if row.get(name) is None or base.get(name) is None:
                    continue
                ratio = row[name] / base[name]
                verdicts.append(
                    dict(
                        tiles=label,
                        length=row["length"],
                        measure=name,
                        ratio=ratio,
                        limit=limit,
                        met=ratio <= limit,
                    )
                )
    sections["targets"] = verdicts
    if verdicts:
        print("\n== issue 5's targets (ratio to SDPA; met when <= the limit) ==")
        for v in verdicts:
            print(
                f"{v['tiles']:<14} L={v['length']:<5} {v['measure']:<19} {v['ratio']:5.2f} "
                f"<= {v['limit']:.1f}: {'met' if v['met'] else 'NOT met'}",
                flush=True,
            )
    run.save()


# ---------------------------------------------------------------------------- compile only


def compile_only() -> None:
    """Compile the kernels for sm_90 and print registers and spill bytes (no GPU needed)."""
    import triton

    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    for dtype, dropout in ((torch.bfloat16, False), (torch.float32, False), (torch.bfloat16, True)):
        for head_dim in (32, 64, 128):
            compiled = compile_kernels(head_dim, dtype, dropout=dropout)
            blocks = default_blocks(head_dim, dtype)
            if dropout:
                blocks = triton_shaw.dropout_blocks(blocks)
            for name, kernel in compiled.items():
                launch = getattr(blocks, name, KernelLaunch(64, 64))  # grad_prepare: fixed
                with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as handle:
                    handle.write(kernel.asm["ptx"])
                report = subprocess.run(
                    [str(ptxas), "-arch=sm_90a", "-v", handle.name, "-o", os.devnull],
                    capture_output=True,
                    text=True,
                ).stderr
                os.unlink(handle.name)
                registers = re.findall(r"Used (\d+) registers", report)
                spills = re.findall(r"(\d+) bytes spill stores", report)
                label = str(dtype)[6:] + (" dropout" if dropout else "")
                print(
                    f"{label:<17} D={head_dim:<4} {name:<15} "
                    f"{launch.block_m}x{launch.block_n}/{launch.band_block} "
                    f"w{launch.num_warps}: registers {registers}, spill stores {spills} bytes, "
                    f"shared {kernel.metadata.shared} B",
                    flush=True,
                )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--lengths", default=None, help="default 1024,4096,8192 (with --dry-run: 16,64)"
    )
    parser.add_argument("--backends", default="triton,flex,eager")
    parser.add_argument("--repeats", type=int, default=None, help="default 10 (with --dry-run: 1)")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=420.0,
        help="start no new measurement after this many seconds",
    )
    parser.add_argument("--quick", action="store_true", help="versions and correctness only")
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated sections to leave out: "
        "profile,host,memory,eager-flex,sweep,ws_probe,variants,fold,bench",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="no GPU: every section on the CPU under Triton's interpreter at tiny sizes "
        "(finds bugs in this script; its times mean nothing)",
    )
    parser.add_argument(
        "--compile-only",
        action="store_true",
        help="no GPU: compile for sm_90, print registers and spills",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="results file (default: $OUT/gpu_check.json when OUT is set)",
    )
    args = parser.parse_args(argv)
    if args.compile_only:
        compile_only()
        return 0
    json_path = args.json or (
        Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else None
    )
    backends = [b for b in args.backends.split(",") if b]
    skip = {s for s in args.skip.split(",") if s}
    # A dry run exists to find bugs in this script before a GPU call, in a minute on the CPU:
    # the interpreter at the GPU lengths would take hours.
    default_lengths, default_repeats = ("16,64", 1) if args.dry_run else ("1024,4096,8192", 10)
    lengths = [int(x) for x in (args.lengths or default_lengths).split(",") if x]
    args.repeats = default_repeats if args.repeats is None else args.repeats
    if args.dry_run:
        dry_run_setup(lengths)
        if "flex" in backends:
            # Every check and timing here takes gradients, which FlexAttention has only on a
            # GPU; its CPU forward is covered by tests/test_flex.py.
            backends.remove("flex")
            print("--dry-run: flex left out (no backward on the CPU)")
    run = Run(json_path, args.budget_s)
    run.results["versions"] = versions()
    run.results["dry_run"] = DRY_RUN
    print("== versions ==")
    for key, value in run.results["versions"].items():
        print(f"{key:>26}: {value}")
    run.save()
    if not torch.cuda.is_available() and not DRY_RUN:
        print("no CUDA device: nothing to check (try --dry-run or --compile-only)")
        return 1
    # FlexAttention compiles once per shape and mask; allow more graphs than the default 8.
    torch._dynamo.config.cache_size_limit = 64
    # Most important first, since the budget skips what comes last: the Triton kernel's
    # correctness and timings, then the other backends, then tile sizes.
    if "triton" in backends:
        correctness(run, ["triton"])
        if not args.quick:
            timing(run, lengths, ["triton", "triton-plain"], args.repeats)
            if "profile" not in skip and run.has_time("profile"):
                profile(run, 4096 if 4096 in lengths else lengths[0])
            if "host" not in skip and run.has_time("host"):
                host_time(run, 1024 if 1024 in lengths else lengths[0])
            if "memory" not in skip and run.has_time("memory"):
                memory(run, lengths)
    if "eager-flex" not in skip:
        correctness(run, [b for b in ("eager", "flex") if b in backends])
    if not args.quick:
        if "eager-flex" not in skip:
            timing(run, lengths, [b for b in backends if b != "triton"], args.repeats)
        if "triton" in backends and run.has_time("sweep"):
            length = 4096 if 4096 in lengths else lengths[0]
            if "sweep" not in skip:
                chosen = sweep(run, length, args.repeats)
                timing_chosen(run, chosen, lengths, args.repeats)
            if "ws_probe" not in skip and run.has_time("ws_probe"):
                warp_specialisation_probe(run, [n for n in lengths if n >= 4096] or lengths)
            if "variants" not in skip:
                timing_variants(run, length, args.repeats)
            if "fold" not in skip:
                timing_fold(run, [n for n in lengths if n >= 4096] or lengths, args.repeats)
        if "bench" not in skip and run.has_time("bench"):
            bench_smoke(run)
    targets(run)
    checks = run.results["sections"].get("correctness", {}).get("checks", [])
    failed = [c for c in checks if not c["ok"]]
    print(
        f"\n{len(checks) - len(failed)}/{len(checks)} correctness checks passed; "
        f"{run.elapsed():.0f} s" + (f"; results in {json_path}" if json_path else "")
    )
    run.save()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
