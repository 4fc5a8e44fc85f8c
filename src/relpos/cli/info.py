"""``relpos info``: what this machine has, and which attention backend ``auto`` runs on it.

The answer to "is the fused kernel running?": versions (relpos, Python, torch, Triton), the
devices torch sees (for CUDA cards their compute capability and memory), and, for Shaw attention
on each device in each dtype, the backend ``shaw_attention(backend="auto")`` picks and, when it
passes over the Triton kernel, why (``triton_shaw.triton_refusal``).
"""

from __future__ import annotations

import argparse
import platform

from .flags import positive_int

__all__ = ["register", "run", "describe"]

DTYPES = ("bfloat16", "float16", "float32")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "info",
        help="versions, devices, and which attention backend auto runs here",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "--head-dim",
        "-D",
        type=positive_int,
        default=64,
        help="head size of the inputs auto is asked about (default 64)",
    )
    parser.set_defaults(func=run)


def describe(head_dim: int = 64) -> list[str]:
    """The lines ``relpos info`` prints."""
    import torch

    from .. import __version__
    from ..attention import auto_backend
    from ..attention.triton_shaw import triton_available, triton_refusal

    if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim < 1:
        raise ValueError(f"--head-dim must be a positive int, got {head_dim!r}")
    triton = "not installed"
    if triton_available():
        import triton as triton_module

        triton = triton_module.__version__
    lines = [
        f"relpos {__version__}, Python {platform.python_version()}, torch {torch.__version__} "
        f"(CUDA build: {torch.version.cuda or 'none'}), Triton {triton}",
        f"cpu: {torch.get_num_threads()} threads",
    ]
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            lines.append(
                f"cuda:{index}: {props.name}, compute capability {props.major}.{props.minor}, "
                f"{props.total_memory / 2**30:.1f} GiB"
            )
            devices.append(torch.device("cuda", index))
    else:
        lines.append("cuda: not available to this torch")
    lines.append(f"shaw_attention(backend='auto'), inputs (2, 16, L, {head_dim}), no dropout:")
    for device in devices:
        # on the CPU the dtype changes nothing: one line
        for dtype_name in DTYPES if device.type == "cuda" else DTYPES[-1:]:
            query = torch.empty(2, 16, 1, head_dim, device=device, dtype=getattr(torch, dtype_name))
            chosen = auto_backend(query=query, key_query=False, dropout=False, has_mask=False)
            refusal = triton_refusal(query=query)
            why = f" (not triton: {refusal})" if chosen != "triton" and refusal else ""
            lines.append(f"  {device} {dtype_name}: {chosen}{why}")
    return lines


def run(args: argparse.Namespace) -> int:
    for line in describe(args.head_dim):
        print(line)
    return 0
