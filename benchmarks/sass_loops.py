"""What each loop of the Triton kernels costs per iteration, read from the sm_90 machine code
(no GPU needed).

Compiles the kernels as a launch would (``relpos.attention.triton_shaw.compile_kernels``),
disassembles each with ``nvdisasm`` (shipped with Triton), finds the loops (backward branches)
and prints, per loop, its instruction count per iteration, the main instruction kinds, and its
local-memory traffic (``LDL``/``STL``: register spills). A static count, not a timing: it shows
whether a loop is bloated next to another, not how fast it runs.

    python benchmarks/sass_loops.py                           # bf16, D=64, the default tiles
    python benchmarks/sass_loops.py --kernels forward --head-dim 128
    python benchmarks/sass_loops.py --candidate forward:2     # the tuner's third forward tiles
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from relpos.attention.triton_shaw import TritonBlocks, compile_kernels, default_blocks
from relpos.attention.triton_tune import CANDIDATES

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def disassemble(cubin: bytes) -> list[tuple[str | None, str]]:
    """``(label or None, instruction)`` for every instruction of the cubin, in order."""
    import triton

    nvdisasm = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "nvdisasm"
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as handle:
        handle.write(cubin)
    try:
        text = subprocess.run(
            [str(nvdisasm), "-c", handle.name], capture_output=True, text=True, check=True
        ).stdout
    finally:
        os.unlink(handle.name)
    listing, label = [], None
    for line in text.splitlines():
        if found := re.match(r"\s*(\.L_x_\d+):", line):
            label = found.group(1)
        elif found := re.match(r"\s*/\*[0-9a-f]{4,}\*/\s+(.*?)\s*;", line):
            listing.append((label, found.group(1)))
            label = None
    return listing


def opcode(instruction: str) -> str:
    """``@P0 FFMA.FTZ R1, ...`` -> ``FFMA``."""
    return re.sub(r"^@!?U?P\w+\s+", "", instruction).split()[0].split(".")[0]


def loops(listing: list[tuple[str | None, str]]) -> list[dict]:
    """Every loop with a body of more than a few instructions: a branch back to an earlier
    label, the body being the instructions from that label to the branch."""
    where = {label: i for i, (label, _) in enumerate(listing) if label}
    found = []
    for i, (_, instruction) in enumerate(listing):
        target = re.search(r"BRA\s+`\((\.L_x_\d+)\)", instruction)
        start = where.get(target.group(1)) if target else None
        if start is None or start > i or i - start < 8:
            continue
        kinds = collections.Counter(opcode(body) for _, body in listing[start : i + 1])
        found.append({"start": start, "instructions": i - start + 1, "kinds": kinds})
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--dtype", choices=DTYPES, default="bfloat16")
    parser.add_argument("--kernels", default="forward,grad_query,grad_key_value")
    parser.add_argument(
        "--candidate",
        default=None,
        metavar="KERNEL:N",
        help="compile the tuner's N-th candidate for KERNEL (triton_tune.CANDIDATES, from 0), "
        "the default tiles for the other kernels",
    )
    args = parser.parse_args(argv)
    dtype = DTYPES[args.dtype]
    blocks = default_blocks(args.head_dim, dtype)
    if args.candidate:
        kernel, number = args.candidate.split(":")
        launch = CANDIDATES[kernel][int(number)]
        blocks = TritonBlocks(
            **{
                name: launch if name == kernel else getattr(blocks, name)
                for name in ("forward", "grad_query", "grad_key_value")
            }
        )
        print(f"{kernel} tiles: {launch.label}")
    compiled = compile_kernels(args.head_dim, dtype, blocks=blocks)
    for name in args.kernels.split(","):
        listing = disassemble(compiled[name].asm["cubin"])
        loops_of = loops(listing)
        print(f"{name}: {len(listing)} instructions, {len(loops_of)} loops")
        for loop in loops_of:
            kinds = loop["kinds"]
            top = ", ".join(f"{kind} {count}" for kind, count in kinds.most_common(10))
            print(
                f"  at {loop['start']:>5}: {loop['instructions']:>5} per iteration; "
                f"spills LDL {kinds['LDL']} STL {kinds['STL']}; HGMMA {kinds['HGMMA']} "
                f"MUFU {kinds['MUFU']}\n      {top}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
