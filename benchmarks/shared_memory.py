"""Shared memory per block that the Triton kernels' default tiles need, card by card (no GPU
needed).

``backend="auto"`` runs the kernel on CUDA cards from Ampere on (compute capability 8.0, see
``triton_applies``) with tiles timed on an H200. A launch whose
tiles need more shared memory than the card gives one block fails (Triton's ``OutOfResources``),
so this compiles the default tiles as a launch would (``compile_kernels``) for each architecture
and prints what each kernel needs against the card's per-block limit. Static, not a timing.

    python benchmarks/shared_memory.py        # sm_70 to sm_90; bf16/fp16/fp32; D 32/64/128
    python benchmarks/shared_memory.py --arch 86 --head-dims 128
"""

from __future__ import annotations

import argparse

import torch

from relpos.attention.triton_shaw import MIN_CAPABILITY, compile_kernels

# Shared memory one block may opt into (CUDA programming guide, compute capabilities table).
BLOCK_LIMIT_KIB = {70: 96, 75: 64, 80: 163, 86: 99, 89: 99, 90: 227}
CARDS = {
    70: "V100",
    75: "T4, RTX 20xx",
    80: "A100, A30",
    86: "RTX 30xx, A10, A40",
    89: "RTX 40xx, L4, L40",
    90: "H100, H200",
}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
KERNELS = ("forward", "grad_prepare", "grad_query", "grad_key_value")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, nargs="+", default=list(BLOCK_LIMIT_KIB))
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--head-dims", type=int, nargs="+", default=[32, 64, 128])
    args = parser.parse_args()
    unknown = sorted(set(args.arch) - set(BLOCK_LIMIT_KIB))
    if unknown:
        parser.error(f"--arch {unknown}: limits known for {sorted(BLOCK_LIMIT_KIB)} only")

    print(f"torch {torch.__version__}, triton {__import__('triton').__version__}")
    print("| arch (cards) | dtype | D | " + " | ".join(KERNELS) + " | largest / limit KiB |")
    print("|---" * (len(KERNELS) + 4) + "|")
    for arch in args.arch:
        for dtype_name in args.dtypes:
            for head_dim in args.head_dims:
                kernels = compile_kernels(head_dim, DTYPES[dtype_name], length=1000, arch=arch)
                shared = [kernels[name].metadata.shared / 1024 for name in KERNELS]
                largest = max(shared)
                verdict = "fits" if largest <= BLOCK_LIMIT_KIB[arch] else "**does not fit**"
                if (arch // 10, arch % 10) < MIN_CAPABILITY:
                    verdict += " (auto runs eager here)"
                cells = " | ".join(f"{kib:.1f}" for kib in shared)
                print(
                    f"| sm_{arch} ({CARDS[arch]}) | {dtype_name} | {head_dim} | {cells} | "
                    f"{largest:.1f} / {BLOCK_LIMIT_KIB[arch]}: {verdict} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
