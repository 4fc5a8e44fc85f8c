"""What the Triton Shaw backend holds in memory at its peak, one buffer at a time.

    python benchmarks/triton_memory.py                  # no GPU: the kernels replaced by no-ops
    python benchmarks/triton_memory.py --device cuda    # the real kernels, and the allocator's peak

Issue 5 asks for a forward + backward within 1.5x SDPA's peak memory, with no ``L x L`` tensor
stored. ``gpu_check.py`` measures the peak (``torch.cuda.max_memory_allocated`` above the
inputs); this script says what makes it up. Every tensor the call allocates is recorded as it is
created (a ``TorchDispatchMode``) and forgotten when freed, and the live set at the highest total
is printed, each buffer named by the variable ``triton_shaw.py`` assigns it to. Sizes do not
depend on what the kernels compute, so on the CPU the kernels are skipped: the listing is exact
for the tiles given, at any length, in seconds. On CUDA the allocator's own peak is printed
beside it; a gap between the two is memory allocated outside PyTorch's operators (Triton's
scratch) or the allocator's rounding.

Setting as in ``gpu_check.py``: bf16 (its 16-bit sizes on the CPU), B = 2, H = 16, D = 64,
k = 16, tables shared by the heads, key and value terms, no mask; the default GPU tiles.
"""

from __future__ import annotations

import argparse
import ast
import functools
import os
import sys
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from relpos.attention import RelativeIndex, triton_shaw

MiB = 2**20


@dataclass
class Buffer:
    name: str  # the variable triton_shaw.py assigns it to, or the operator that made it
    shape: tuple[int, ...]
    dtype: torch.dtype
    nbytes: int


@functools.cache
def _assigned_names(path: str) -> dict[int, str]:
    """Line number -> the names an assignment spanning that line binds, for one source file."""
    names: dict[int, str] = {}
    for node in ast.walk(ast.parse(Path(path).read_text())):
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            label = ", ".join(ast.unparse(t) for t in targets)
            for line in range(node.lineno, node.end_lineno + 1):
                names.setdefault(line, label)
    return names


def _allocation_site(func) -> str:
    """The variable in ``triton_shaw.py`` being assigned when the current allocation happens."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename == triton_shaw.__file__:
            name = _assigned_names(triton_shaw.__file__).get(frame.f_lineno)
            if name:
                return name
        frame = frame.f_back
    return str(func)


class PeakTracker(TorchDispatchMode):
    """Live tensor storages allocated under this mode, and the set alive at the highest total."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, Buffer] = {}
        self.total = 0
        self.peak = 0
        self.at_peak: list[Buffer] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(tensor, torch.Tensor):
                self._record(tensor, func)
        return out

    def _record(self, tensor: torch.Tensor, func) -> None:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if storage.nbytes() == 0 or key in self.live:  # a view, or an empty placeholder
            return
        self.live[key] = Buffer(
            _allocation_site(func), tuple(tensor.shape), tensor.dtype, storage.nbytes()
        )
        self.total += storage.nbytes()
        if self.total > self.peak:
            self.peak, self.at_peak = self.total, list(self.live.values())
        weakref.finalize(tensor, self._free, key)

    def _free(self, key: int) -> None:
        buffer = self.live.pop(key, None)
        if buffer is not None:
            self.total -= buffer.nbytes


class _NoKernels:
    """Stands in for the kernels module: every ``kernel[grid](...)`` launch does nothing."""

    def __getattr__(self, name):
        return self

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def inputs(length: int, device: str, batch=2, heads=16, head_dim=64, k=16, dtype=torch.bfloat16):
    """Leaves ``query, key, value, key_table, value_table`` and the upstream gradient."""
    gen = torch.Generator(device=device).manual_seed(0)

    def leaf(*shape):
        return torch.randn(*shape, generator=gen, device=device).to(dtype).requires_grad_()

    leaves = [leaf(batch, heads, length, head_dim) for _ in range(3)]
    leaves += [leaf(1, 2 * k + 1, head_dim) for _ in range(2)]
    upstream = torch.randn(batch, heads, length, head_dim, generator=gen, device=device)
    return leaves, upstream.to(dtype), RelativeIndex(length, length, k, k)


def default_gpu_blocks(head_dim: int, dtype: torch.dtype) -> triton_shaw.TritonBlocks:
    """The tiles a GPU would use, even under ``TRITON_INTERPRET`` (which picks tiny ones)."""
    saved = os.environ.pop("TRITON_INTERPRET", None)
    try:
        return triton_shaw.default_blocks(head_dim, dtype)
    finally:
        if saved is not None:
            os.environ["TRITON_INTERPRET"] = saved


def trace(length: int, device: str = "cpu", blocks=None, **shape) -> tuple[PeakTracker, float]:
    """One forward + backward of the Triton path under a :class:`PeakTracker`; with
    ``device="cpu"`` the kernels are skipped. Returns the tracker and, on CUDA, the allocator's
    peak above the inputs in bytes (else nan)."""
    leaves, upstream, index = inputs(length, device, **shape)
    query = leaves[0]
    problem = triton_shaw._Problem(
        index=index,
        scale=query.shape[-1] ** -0.5,
        is_causal=False,
        mask_kind=0,
        mask_rowwise=False,
        blocks=blocks or default_gpu_blocks(query.shape[-1], query.dtype),
    )
    kernels = triton_shaw._kernels
    if device == "cpu":
        triton_shaw._kernels = _NoKernels
    allocator_peak = float("nan")
    try:
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        with PeakTracker() as tracker:
            # _ShawTriton is what triton_attention launches after its checks (which refuse CPU
            # tensors unless Triton's interpreter runs).
            out = triton_shaw._ShawTriton.apply(*leaves, None, problem)
            grads = torch.autograd.grad(out, leaves, upstream)
            del out, grads
        if device == "cuda":
            torch.cuda.synchronize()
            allocator_peak = torch.cuda.max_memory_allocated() - before
    finally:
        triton_shaw._kernels = kernels
    return tracker, allocator_peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="1024,4096,8192")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args(argv)
    for length in (int(s) for s in args.lengths.split(",")):
        tracker, allocator_peak = trace(length, args.device)
        line = f"L = {length}: {tracker.peak / MiB:.1f} MiB above the inputs at the peak"
        if args.device == "cuda":
            line += f"; the allocator's peak {allocator_peak / MiB:.1f} MiB"
        print(line)
        for buffer in sorted(tracker.at_peak, key=lambda b: -b.nbytes):
            dtype = str(buffer.dtype).removeprefix("torch.")
            print(f"  {buffer.nbytes / MiB:8.2f} MiB  {buffer.name:<32} {buffer.shape} {dtype}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
