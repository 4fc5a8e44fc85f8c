"""Does ``torch.compile`` of the eager path close the gap to SDPA? (issue 5's question)

Times forward + backward, in turns, of: SDPA without positions; the ``eager`` backend's fast
path (hand-written backward); the plain gather/scatter formulation, as written and under
``torch.compile``; and the fast path under ``torch.compile``. Setting as ``relpos bench``
(float32, B = 1, H = 4, D = 64, k = 16, shared tables, key and value terms).

    python benchmarks/compile_eager.py --lengths 512,1024,2048 --repeats 10 --json out.json

Compilation happens in the untimed warm-up calls (one graph per length; ``dynamic=False``).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from relpos.attention import RelativeIndex
from relpos.attention.eager import eager_attention, gather_scatter_attention
from relpos.bench import machine_info, time_steps


def time_length(length: int, repeats: int) -> dict[str, list[float]]:
    """Milliseconds per call of every variant at sequence length ``length``."""
    batch, heads, head_dim, k = 1, 4, 64, 16
    gen = torch.Generator().manual_seed(length)
    query, key, value = (
        torch.randn(batch, heads, length, head_dim, generator=gen).requires_grad_(True)
        for _ in range(3)
    )
    key_table, value_table = (
        torch.randn(1, 2 * k + 1, head_dim, generator=gen).requires_grad_(True) for _ in range(2)
    )
    upstream = torch.randn(batch, heads, length, head_dim, generator=gen)
    leaves = [query, key, value, key_table, value_table]
    common = dict(
        index=RelativeIndex(length, length, k, k),
        attn_mask=None,
        is_causal=False,
        scale=head_dim**-0.5,
    )

    def fast(q, k_, v, kt, vt):
        return eager_attention(q, k_, v, key_table=kt, value_table=vt, **common)

    def gather_scatter(q, k_, v, kt, vt):
        return gather_scatter_attention(q, k_, v, key_table=kt, value_table=vt, **common)

    def sdpa():
        output = F.scaled_dot_product_attention(query, key, value)
        return torch.autograd.grad(output, [query, key, value], upstream)

    variants = {
        "eager (fast path)": fast,
        "gather/scatter": gather_scatter,
        "gather/scatter + compile": torch.compile(gather_scatter, dynamic=False),
        "fast path + compile": torch.compile(fast, dynamic=False),
    }
    steps = {"sdpa": sdpa}
    for name, fn in variants.items():
        steps[name] = functools.partial(_grad_step, fn, leaves, upstream)
    return time_steps(steps, repeats=repeats, warmup=2)


def _grad_step(fn, leaves, upstream):
    return torch.autograd.grad(fn(*leaves), leaves, upstream)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="512,1024,2048")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for length in (int(x) for x in args.lengths.split(",")):
        start = time.perf_counter()
        times = time_length(length, args.repeats)
        sdpa = statistics.median(times["sdpa"])
        print(f"L={length} (with warm-up and compilation: {time.perf_counter() - start:.0f} s)")
        for name, values in times.items():
            median = statistics.median(values)
            ratio = median / sdpa
            rows.append(
                {
                    "length": length,
                    "variant": name,
                    "median_ms": round(median, 3),
                    "ratio_to_sdpa": round(ratio, 3),
                    "times_ms": [round(t, 3) for t in values],
                }
            )
            print(f"  {name:<26} {median:9.2f} ms  {ratio:6.2f} x SDPA", flush=True)
    if args.json:
        results = {"machine": machine_info("cpu"), "rows": rows}
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
