"""What each loop of the Triton kernels costs per iteration, read from the sm_90 machine code
(no GPU needed).

Compiles the kernels as a launch would (``relpos.attention.triton_shaw.compile_kernels``),
disassembles each with ``nvdisasm`` (shipped with Triton), finds the loops (backward branches)
and prints, per loop, its instruction count per iteration, the main instruction kinds, and its
local-memory traffic (``LDL``/``STL``: register spills); per kernel, its registers (``ptxas
-v``), shared memory and how many of its programs fit on one SM. A static count, not a timing:
it shows whether a loop is bloated next to another, not how fast it runs.

    python benchmarks/sass_loops.py                           # bf16, D=64, the default tiles
    python benchmarks/sass_loops.py --kernels forward --head-dim 128
    python benchmarks/sass_loops.py --candidate "forward:64x64/32 w4 s3 r168"  # a tuner candidate
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


def ptxas_usage(ptx: str) -> tuple[int, int]:
    """(registers per thread, spill-store bytes) that ptxas reports for sm_90a."""
    import triton

    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as handle:
        handle.write(ptx)
    try:
        report = subprocess.run(
            [str(ptxas), "-arch=sm_90a", "-v", handle.name, "-o", os.devnull],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
    finally:
        os.unlink(handle.name)
    registers = max(int(n) for n in re.findall(r"Used (\d+) registers", report))
    spills = max(int(n) for n in re.findall(r"(\d+) bytes spill stores", report))
    return registers, spills


def programs_per_sm(registers: int, shared_bytes: int, num_warps: int) -> int:
    """How many programs (thread blocks) of a kernel fit on one H100/H200 SM at once: 64 K
    registers (allocated per warp in units of 256), 228 KiB of shared memory (1 KiB of it
    reserved per block), 64 warps."""
    per_warp = -(-registers * 32 // 256) * 256
    by_registers = 65536 // (per_warp * num_warps)
    by_shared = 228 * 1024 // (shared_bytes + 1024)
    return min(by_registers, by_shared, 64 // num_warps)


def opcode(instruction: str) -> str:
    """``@P0 FFMA.FTZ R1, ...`` -> ``FFMA``."""
    return re.sub(r"^@!?U?P\w+\s+", "", instruction).split()[0].split(".")[0]


def loops(listing: list[tuple[str | None, str]]) -> list[dict]:
    """Every loop with a body of more than a few instructions: a conditional branch back to an
    earlier label, the body being the instructions from that label to the branch. (Unconditional
    ones are not loops: they return from the out-of-line stubs that spin on a TMA barrier.)"""
    where = {label: i for i, (label, _) in enumerate(listing) if label}
    found = []
    for i, (_, instruction) in enumerate(listing):
        target = instruction.startswith("@") and re.search(r"BRA\s+`\((\.L_x_\d+)\)", instruction)
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
    parser.add_argument(
        "--kernels",
        default=None,
        help="comma-separated (default: every kernel a fwd+bwd launches but grad_prepare, the "
        "tails kernels of a split candidate included)",
    )
    parser.add_argument(
        "--candidate",
        default=None,
        metavar="KERNEL:N|LABEL",
        help="compile one of the tuner's candidates for KERNEL (triton_tune.CANDIDATES), by "
        "position from 0 or by label ('64x64/32 w4 s3 r168'); default tiles for the others",
    )
    args = parser.parse_args(argv)
    dtype = DTYPES[args.dtype]
    blocks = default_blocks(args.head_dim, dtype)
    if args.candidate:
        kernel, which = args.candidate.split(":", 1)
        if which.isdigit():
            launch = CANDIDATES[kernel][int(which)]
        else:
            matches = [c for c in CANDIDATES[kernel] if c.label == which]
            if not matches:
                labels = ", ".join(c.label for c in CANDIDATES[kernel])
                parser.error(f"no {kernel} candidate labelled {which!r}; there are: {labels}")
            launch = matches[0]
        blocks = TritonBlocks(
            **{
                name: launch if name == kernel else getattr(blocks, name)
                for name in ("forward", "grad_query", "grad_key_value")
            }
        )
        print(f"{kernel} tiles: {launch.label}")
    compiled = compile_kernels(args.head_dim, dtype, blocks=blocks)
    names = (
        args.kernels.split(",") if args.kernels else [n for n in compiled if n != "grad_prepare"]
    )
    for name in names:
        kernel = compiled[name]
        listing = disassemble(kernel.asm["cubin"])
        loops_of = loops(listing)
        registers, spills = ptxas_usage(kernel.asm["ptx"])
        warps = kernel.metadata.num_warps
        print(f"{name}: {len(listing)} instructions, {len(loops_of)} loops")
        print(
            f"  {registers} registers, {spills} B spilled, {kernel.metadata.shared} B shared, "
            f"{warps} warps: {programs_per_sm(registers, kernel.metadata.shared, warps)} "
            "programs per SM"
        )
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
