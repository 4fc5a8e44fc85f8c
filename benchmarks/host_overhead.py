"""Host (Python) time of one ``triton`` backend call, without a GPU.

On a GPU a call's host work runs before its first kernel starts; when single calls are timed
synchronised it adds to the measured time (``gpu_check.py`` reports those times and queued ones
side by side). This script measures that host work on the CPU: the backend runs for real on
small CPU tensors, with its four Triton launches replaced by no-ops, so what is timed is the
wrapper, the autograd function, the buffer allocations and the table-gradient sums. Triton's own
launch cost is not included (it needs a driver).

    python benchmarks/host_overhead.py                # median µs per call, 2000 calls each

Numbers are for this machine's CPU; only ratios between versions run back to back mean much.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ["TRITON_INTERPRET"] = "1"  # lets CPU tensors past the backend's device check

import torch  # noqa: E402

from relpos.attention import RelativeIndex, triton_shaw  # noqa: E402


class _NoLaunch:
    """Stands in for a Triton kernel: ``kernel[grid](*args, **meta)`` does nothing."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


class _NoKernels:
    forward_kernel = grad_prepare_kernel = grad_query_kernel = grad_key_value_kernel = _NoLaunch()


def median_us(step, calls: int, rounds: int = 5) -> float:
    for _ in range(50):
        step()
    per_round = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls // rounds):
            step()
        per_round.append((time.perf_counter() - start) / (calls // rounds) * 1e6)
    return statistics.median(per_round)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    triton_shaw._kernels = lambda: _NoKernels
    length, head_dim, k = 64, 64, 16
    query, key, value = (torch.randn(1, 2, length, head_dim, requires_grad=True) for _ in range(3))
    key_table, value_table = (
        torch.randn(1, 2 * k + 1, head_dim, requires_grad=True) for _ in range(2)
    )
    upstream = torch.randn(1, 2, length, head_dim)
    index = RelativeIndex(length, length, k, k)
    leaves = [query, key, value, key_table, value_table]

    def forward():
        return triton_shaw.triton_attention(
            query, key, value, index=index, key_table=key_table, value_table=value_table
        )

    def forward_no_grad():
        with torch.no_grad():
            forward()

    def forward_backward():
        torch.autograd.grad(forward(), leaves, upstream)

    print(f"host µs per call (kernel launches mocked out; torch {torch.__version__}, 1 thread)")
    for label, step in (
        ("forward, no grad", forward_no_grad),
        ("forward + backward", forward_backward),
    ):
        print(f"{label:<20} {median_us(step, args.calls):8.1f}")


if __name__ == "__main__":
    main()
