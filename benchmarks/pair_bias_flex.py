"""DeBERTa's bias dense (SDPA) or factored (FlexAttention): forward time and peak memory.

The dense path forms the ``(B, H, L, L)`` bias and hands it to SDPA as a float mask; the flex
path gives FlexAttention the ``(B, H, L, R)`` per-token scores and the row of each distance, and
gathers inside ``score_mod`` (``relpos.attention.RelativeScores``). Forward only, no gradients:
FlexAttention has no backward on the CPU. Both are checked against each other first.

    python benchmarks/pair_bias_flex.py                      # CPU, float32, L = 512 1024 2048
    python benchmarks/pair_bias_flex.py --device cuda --dtype bfloat16 --lengths 2048 4096 8192

Default setting: DeBERTa V3's relative positions (``position_buckets=256``,
``max_distance=512``: 512 table rows), B = 1, H = 8, D = 64; SDPA without positions as the
baseline, and FlexAttention without any bias (what the gathers add to). Time: median of
``--repeats`` calls taken in turns (``relpos.bench.time_steps``); peak memory:
``relpos.bench.peak_memory_bytes`` (one extra call each).
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
import torch.nn.functional as F

import relpos
from relpos.attention import flex_bias_attention
from relpos.bench import machine_info, peak_memory_bytes, time_steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--max-distance", type=int, default=512)
    parser.add_argument("--position-buckets", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)

    scheme = relpos.get_scheme(
        "deberta", max_distance=args.max_distance, position_buckets=args.position_buckets
    )
    position = scheme.attention_position(args.heads, args.head_dim, causal=False)
    position = position.to(device=device, dtype=dtype).requires_grad_(False)
    rows_out = []
    print(f"# {machine_info(device)}")
    print(
        f"# DeBERTa position_buckets={args.position_buckets} max_distance={args.max_distance}, "
        f"B={args.batch} H={args.heads} D={args.head_dim} {args.dtype}, forward only"
    )
    print(f"{'L':>6} {'path':<14} {'median ms':>10} {'× SDPA':>7} {'peak MiB':>9}")
    for length in args.lengths:
        generator = torch.Generator(device=device).manual_seed(length)
        shape = (args.batch, args.heads, length, args.head_dim)
        q, k, v = (
            torch.randn(shape, device=device, dtype=dtype, generator=generator) for _ in range(3)
        )
        steps = {
            "sdpa": lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v),
            "dense bias": lambda q=q, k=k, v=v: position.attend(q, k, v, backend="sdpa"),
            "flex": lambda q=q, k=k, v=v: position.attend(q, k, v, backend="flex"),
            # FlexAttention's own cost with no bias at all: what the factored scores add to.
            "flex, no bias": lambda q=q, k=k, v=v: flex_bias_attention(q, k, v),
        }
        with torch.no_grad():
            dense, flex = steps["dense bias"](), steps["flex"]()  # also compiles flex
            error = (dense.float() - flex.float()).abs().max().item()
            times = time_steps(steps, repeats=args.repeats, warmup=1, device=device)
            peaks = {name: peak_memory_bytes(step, device) for name, step in steps.items()}
        baseline = statistics.median(times["sdpa"])
        for name in steps:
            median = statistics.median(times[name])
            peak = peaks[name]
            row = {
                "length": length,
                "path": name,
                "median_ms": round(median, 3),
                "ratio_to_sdpa": round(median / baseline, 2),
                "peak_mib": None if peak is None else round(peak / 2**20, 1),
                "max_abs_diff_dense_flex": error,
            }
            rows_out.append(row)
            peak_text = "n/a" if peak is None else f"{peak / 2**20:.1f}"
            print(
                f"{length:>6} {name:<14} {median:>10.2f} {median / baseline:>7.2f} {peak_text:>9}"
            )
        print(f"{'':>6} max |dense - flex| = {error:.2e}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump({"machine": machine_info(device), "args": vars(args), "rows": rows_out}, file)


if __name__ == "__main__":
    main()
