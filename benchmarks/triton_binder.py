"""Triton's own host work per launch of the Shaw kernels, without a GPU: binding the arguments
and computing the compiled-kernel cache key.

Every ``kernel[grid](...)`` call first binds its ~20-50 arguments (checking each pointer's and
integer's alignment for the specialisation) and looks the compiled kernel up by that key; then
the driver launches it. This script records the arguments of one forward+backward at the
benchmark setting (bf16, B=2, H=16, D=64, k=16, default tiles) with the launches intercepted,
and times the first part alone, per kernel (median of 5 x 200 calls, this machine's CPU). The
launch itself (``launch_metadata``, the driver call) needs a GPU and is not included.

Uses Triton internals (``JITFunction.device_caches``, ``compute_cache_key``) as of Triton 3.6.

    python benchmarks/triton_binder.py
"""

from __future__ import annotations

import os
import statistics
import time

os.environ.pop("TRITON_INTERPRET", None)  # the real JIT functions, not the interpreter's

import torch  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.runtime.driver import driver  # noqa: E402
from triton.runtime.jit import compute_cache_key  # noqa: E402

from relpos.attention import RelativeIndex, triton_shaw  # noqa: E402


def recorded_launches(length: int = 1024, head_dim: int = 64) -> list[tuple]:
    """``(kernel, arguments, keyword arguments)`` of every launch of one forward+backward."""
    launches = []

    def record(kernel, grid, launch, *args, **meta):
        options = dict(meta, BLOCK_M=launch.block_m, BLOCK_N=launch.block_n)
        options.update(num_warps=launch.num_warps, num_stages=launch.num_stages)
        launches.append((kernel, args, options))

    kernels = triton_shaw._kernels()
    prepare = kernels.grad_prepare_kernel

    class _RecordPrepare:  # launched directly, not through _launch
        def __getitem__(self, grid):
            return lambda *args, **meta: launches.append((prepare, args, meta))

    triton_shaw._launch, kernels.grad_prepare_kernel = record, _RecordPrepare()
    try:
        dtype = torch.bfloat16

        def leaf(*shape):
            return torch.empty(*shape, dtype=dtype).requires_grad_()

        query, key, value = (leaf(2, 16, length, head_dim) for _ in range(3))
        key_table, value_table = leaf(1, 33, head_dim), leaf(1, 33, head_dim)
        problem = triton_shaw._Problem(
            index=RelativeIndex(length, length, 16, 16),
            scale=head_dim**-0.5,
            is_causal=False,
            mask_kind=0,
            mask_rowwise=False,
            blocks=triton_shaw.default_blocks(head_dim, dtype),
        )
        out = triton_shaw._ShawTriton.apply(
            query, key, value, key_table, value_table, None, problem
        )
        leaves = [query, key, value, key_table, value_table]
        torch.autograd.grad(out, leaves, torch.empty_like(out))
    finally:
        kernels.grad_prepare_kernel = prepare
    return launches


def binder_us(kernel, args, options) -> float:
    """Median µs of one argument binding and cache-key computation for this launch."""
    options = dict(options, debug=False, instrumentation_mode="")
    _, key_cache, _, _, binder = kernel.device_caches[0]

    def once():
        _, specialization, launch_options = binder(*args, **options)
        compute_cache_key(key_cache, specialization, launch_options)

    for _ in range(50):
        once()
    rounds = []
    for _ in range(5):
        began = time.perf_counter()
        for _ in range(200):
            once()
        rounds.append((time.perf_counter() - began) / 200 * 1e6)
    return statistics.median(rounds)


def main() -> None:
    driver.set_active(triton_shaw.NoGpuDriver(GPUTarget("cuda", 90, 32)))
    total = 0.0
    print("Triton's binding + cache key per launch (µs, this CPU; the driver launch excluded)")
    for kernel, args, options in recorded_launches():
        us = binder_us(kernel, args, options)
        total += us
        print(f"{kernel.fn.__name__:<24} {len(args):>3} arguments  {us:6.1f}")
    print(f"{'all launches':<38} {total:6.1f}")


if __name__ == "__main__":
    main()
