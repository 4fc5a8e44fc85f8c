"""Training and evaluation precision: float32, or bfloat16 under ``torch.autocast``.

Under bf16 autocast the matrix products run in bfloat16 while the weights, the optimizer state
and the loss stay in float32, so no loss scaling is needed (bfloat16 has float32's exponent
range; float16 would need a gradient scaler, and is not offered). Attention inputs reach
``shaw_attention`` in bfloat16: on a GPU the Triton kernel takes them as they are, the other
backends compute in float32 (see ``relpos.attention.api``).
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["PRECISIONS", "autocast"]

#: ``TrainConfig.precision`` values: float32 throughout, or bfloat16 autocast.
PRECISIONS = ("fp32", "bf16")


def autocast(precision: str, device: str | torch.device):
    """The context in which a run of ``precision`` computes its forward passes."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
