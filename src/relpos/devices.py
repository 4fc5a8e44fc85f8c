"""Which device a run asked for, checked before any work starts.

``torch.device("cuda")`` is accepted by a CPU-only build of torch; the failure comes later, deep
in the first allocation, as ``AssertionError: Torch not compiled with CUDA enabled``. Training,
``relpos compare`` and ``relpos bench`` call :func:`available_device` first instead, so that a
device this machine lacks is a ``ValueError`` naming the argument and what is available.
"""

from __future__ import annotations

import torch

__all__ = ["available_device"]


def available_device(device: str | torch.device, *, argument: str = "device") -> torch.device:
    """``device`` as a ``torch.device``, or a ``ValueError`` if this machine cannot run on it."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"{argument} must name a device such as 'cpu', 'cuda' or 'cuda:1', got {device!r}"
        ) from error
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            why = "a CPU-only build" if torch.version.cuda is None else "no GPU is visible"
            raise ValueError(
                f"{argument}={str(device)!r}, but this torch ({torch.__version__}) cannot use "
                f"CUDA: {why}; use {argument}='cpu'"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(
                f"{argument}={str(device)!r}, but only {count} CUDA device(s) are visible "
                f"(cuda:0 … cuda:{count - 1})"
            )
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{argument}={str(device)!r}, but MPS is not available on this machine")
    elif resolved.type == "meta":
        raise ValueError(f"{argument}='meta' holds shapes, not values: nothing can train on it")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        backend = getattr(torch, resolved.type, None)  # torch.xpu, ...
        if backend is None or not getattr(backend, "is_available", lambda: False)():
            raise ValueError(
                f"{argument}={str(device)!r}, but this torch ({torch.__version__}) cannot use "
                f"{resolved.type} devices; use {argument}='cpu'"
            )
    return resolved
