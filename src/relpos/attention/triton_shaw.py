"""Fused Triton kernels for Shaw et al. (2018) relative attention: keys and values, fwd and bwd.

For one batch·head, with query row ``r``, key column ``c``, table row (bucket) ``b`` and
``shift = query_offset - key_offset``::

    bucket(r, c) = clip(c - r - shift, -max_left, max_right) + max_left
    s_rc = scale · (q_r · k_c + QA[r, bucket(r, c)]),  QA = Q A_Kᵀ  (Lq, R)      key term (Eq. 4)
    p_r  = softmax_c(s_r + mask)
    o_r  = Σ_c p_rc v_c + Σ_b M[r, b] A_V[b],  M[r, b] = Σ_{c in bucket b} p_rc   value term (Eq. 3)

No ``Lq × Lk`` tensor is ever formed. The kernels use the shape of the index: along a row it is
bucket 0 for every key at least ``max_left`` to the left, bucket ``R - 1`` for every key at
least ``max_right`` to the right, and one key per bucket in between. A query block therefore
walks its key tiles in three phases (the online softmax does not care about their order):

* left tiles (all bucket 0) and right tiles (all bucket ``R - 1``): a FlashAttention loop whose
  key term is one number per row (``QA[r, 0]`` or ``QA[r, R - 1]``); the rows' running sums at
  the end of each phase give the two tail masses ``M[r, 0]`` and ``M[r, R - 1]``;
* band tiles (the few crossing ``|c - r - shift| < k``): the key term ``QA[r, bucket(r, c)]`` is
  read by bucket from the ``(Lq, R)`` table ``QA`` that the kernel wrote first (a cached
  load, contiguous along each row); the tail entries of the band are summed per row, and each
  interior bucket's logit (one key per row and bucket) is written to its ``(r, b)`` slot.

At the end the block reads the interior slots back as ``M[r, b] = exp2(s - max) / sum`` and adds
``M A_V`` with one dot, plus ``M[r, 0] A_V[0] + M[r, R-1] A_V[R-1]`` for the tails. (A first
version gathered from register tiles with ``tl.gather``; on an H200 its band tiles cost ~25 times
a plain tile, see ``benchmarks/RESULTS.md``.) The forward stores the output, the base-2
log-sum-exp, ``QA`` and the tail masses (``Lq × R`` and ``Lq × 2``, small).
The backward, with ``dP_rc = dO_r · (v_c + a^V_rc) = (dO Vᵀ)[r, c] + (dO A_Vᵀ)[r, bucket]``,
``dS = P ⊙ (dP - δ)`` and ``δ_r = dO_r · o_r``, is three kernels:

* per query block, a small one: ``δ``, ``dO A_Vᵀ`` (``Lq × R``), and each tail's ``lse`` and
  ``δ`` with its key and value terms folded in (``4 × Lq``; the tails' tiles read them as plain
  vectors);
* per key block: ``dK = scale dSᵀ Q`` and ``dV = Pᵀ dO``, reading both ``(Lq, R)`` tables by
  bucket;
* per query block: ``dQ = scale (dS K + dS_b A_K)``, ``dS_b[r, b]`` being ``dS`` summed per
  bucket (tails as row sums; interior buckets written to ``(r, b)`` slots by the band tiles, as
  are the masses ``M[r, b]``, over the ``dO A_Vᵀ`` entries they were computed from, which is why
  this kernel runs last), and the block's share of both table gradients, ``scale dS_bᵀ Q`` and
  ``Mᵀ dO`` (``R × D`` each; one per group of ``KernelLaunch.group`` blocks), summed
  afterwards — deterministic, no atomics.

Dropout (``FusedDropout``: probability ``p`` and a seed) is drawn in the kernels: weight
``(r, c)`` of batch·head ``n`` is kept when a Philox draw with counter ``(c, r, n, 0)`` under
the seed is ``>= p``, so each kernel draws the same mask on its own and nothing ``Lq × Lk`` is
stored. With ``m_rc = keep / (1 - p)``, the output uses ``P ⊙ m`` in both value terms (the
forward tracks the kept tail weights' sum beside the softmax's normaliser; a dropped interior
weight's slot gets ``-inf``), ``dV = (P ⊙ m)ᵀ dO``, the masses for ``dA_V`` are ``P ⊙ m``, and
``dS = P ⊙ (m ⊙ dP - δ)`` with ``δ_r = dO_r · o_r`` as before; because ``m`` multiplies a
tail's value term, that term is added per entry instead of being folded into ``δ``. Dropout
runs in the plain fused kernels only (:func:`dropout_blocks`).

Launch options per kernel are in :class:`KernelLaunch`: tile sizes, warps, pipeline stages, TMA
loads of the tails' streamed tiles (Hopper), query blocks per program for the dQ kernel, and for
the forward two interleaved halves of each query block (one half's matrix products overlap the
other's softmax) or, for the forward and the key/value gradient, the tails in a kernel of their
own whose loop Triton warp-specialises.

The kernels are in :mod:`relpos.attention._triton_shaw_kernels`, imported on first use, so
``import relpos`` works without Triton or a GPU. With ``TRITON_INTERPRET=1`` they run on CPU
tensors (slowly: that is how the tests check them; Triton 3.6's interpreter turns loop bounds
into ints in a way NumPy >= 2.4 refuses, which :func:`_kernels` works around on first use), except
bfloat16 ones, which the interpreter cannot multiply and :func:`triton_attention` hands to eager.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import re
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import checks
from .api import FusedDropout, register_backend
from .eager import eager_attention
from .index import RelativeIndex

__all__ = [
    "check_triton_device",
    "compile_kernels",
    "KernelLaunch",
    "TritonBlocks",
    "default_blocks",
    "dropout_blocks",
    "triton_attention",
    "triton_applies",
    "triton_dropout_mask",
    "triton_available",
    "triton_refusal",
    "triton_version",
]

#: exp(x) = exp2(x · log2 e); the kernels work in base 2 because ``exp2`` is one instruction.
LOG2E = 1.4426950408889634

#: largest head size the kernels keep in registers; larger ones fall back (see ``triton_applies``).
MAX_HEAD_DIM = 128

_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
#: oldest compute capability ``auto`` picks the kernel on (see ``triton_applies``).
MIN_CAPABILITY = (8, 0)

#: oldest Triton ``auto`` picks the kernel with: the default tiles compile for sm_90 with Triton
#: 3.4, 3.5, 3.6 and 3.9 (checked on the CPU) and ran on an H200 with 3.6; older versions are not
#: checked (the compile-without-a-GPU tooling needs 3.4's internals).
MIN_TRITON = (3, 4)

#: most batch × heads the kernels take: they put that product on the launch grid's second axis,
#: which CUDA limits to 65,535 programs; more run the eager path.
MAX_BATCH_HEADS = 65535


@dataclass(frozen=True)
class KernelLaunch:
    """Tile sizes and launch options of one kernel."""

    block_m: int  # query rows per tile
    block_n: int  # key columns per tile
    band_block: int = 32  # the loop dimension's tile size inside the band (<= its block size)
    num_warps: int = 4
    num_stages: int = 2
    # Load the tiles the tails stream (keys and values in the forward and query-gradient
    # kernels, queries and output gradients in the key/value one) through TMA tensor
    # descriptors (Hopper and later) where the layout allows it (last stride 1, other strides
    # and the base 16-byte aligned); otherwise, and in the band, plain pointer loads.
    tma: bool = False
    # Query-gradient kernel only: query blocks per program. Their table-gradient partials are
    # summed in place, so the (blocks, R, D) partials buffer shrinks by this factor: small
    # blocks at the memory of large ones.
    group: int = 1
    # Forward kernel only: 2 splits each block of query rows into two halves whose tail tiles
    # are interleaved: both halves' Q Kᵀ are issued before either softmax, so the tensor cores
    # work on one half while the other's exponentials are computed (in the sm_90 code the
    # matrix instructions of one half sit between the exp2 of the other; a plain loop waits).
    halves: int = 1
    # With tma: the kernel's tails run in a kernel of their own whose loop Triton
    # warp-specialises (a producer warp issues the TMA loads, the others compute, so that loads,
    # matrix products and softmax can overlap); the usual kernel then adds the band (and the
    # epilogue) to its partial result. Where TMA falls back, the fused kernel runs.
    # Experimental: on an H200 with Triton 3.6 every configuration timed was slower than the
    # fused kernels, num_stages=3 gave wrong (infinite) results, and a 64x128 key/value launch
    # hung (benchmarks/RESULTS.md); so num_stages must be <= 2, and the tuner leaves it out.
    warp_specialize: bool = False
    # With tma: the same split into a tails kernel and a band kernel, the tails' loop left plain.
    # The point is registers: the fused kernels hold the band's state and need 230-255 per
    # thread (two 4-warp programs per SM), a tails kernel alone ~110 (four per SM), and more
    # programs per SM overlap one program's exponentials with another's matrix products. It
    # costs one pass over the partial result (about (D + 3) floats per query row).
    split_tails: bool = False
    # Cap on registers per thread (ptxas ``maxnreg``); None: the compiler's choice. The fused
    # kernels take 246-255, which leaves room for two 4-warp programs per SM; at 168, three fit.
    # Spills, if any, fall where pressure peaks (the band); `benchmarks/sass_loops.py
    # --candidate KERNEL:LABEL` shows them per loop for the tuner's capped tiles.
    max_registers: int | None = None

    @property
    def label(self) -> str:
        """Short form, e.g. ``64x64/32 w4 s3 tma g2`` (rows x columns / band tile, warps,
        stages, then the options that are on)."""
        return (
            f"{self.block_m}x{self.block_n}/{self.band_block} w{self.num_warps} "
            f"s{self.num_stages}"
            + (" tma" if self.tma else "")
            + (f" g{self.group}" if self.group > 1 else "")
            + (" h2" if self.halves == 2 else "")
            + (" ws" if self.warp_specialize else " split" if self.split_tails else "")
            + (f" r{self.max_registers}" if self.max_registers is not None else "")
        )

    @property
    def splits(self) -> bool:
        """Whether the tails run in a kernel of their own (``split_tails`` or
        ``warp_specialize``; only where the tensors allow TMA loads)."""
        return self.split_tails or self.warp_specialize

    def __post_init__(self) -> None:
        if isinstance(self.group, bool) or not isinstance(self.group, int) or self.group < 1:
            raise ValueError(f"group must be an int >= 1, got {self.group!r}")
        if self.halves not in (1, 2) or isinstance(self.halves, bool):
            raise ValueError(f"halves must be 1 or 2, got {self.halves!r}")
        if self.warp_specialize and (not self.tma or self.halves != 1):
            raise ValueError(
                "warp_specialize=True needs tma=True (its producer warp loads by TMA) and halves=1"
            )
        if self.split_tails and (not self.tma or self.halves != 1):
            raise ValueError(
                "split_tails=True needs tma=True (the tails kernel loads by TMA) and halves=1"
            )
        if self.warp_specialize and self.num_stages > 2:
            raise ValueError(
                "warp_specialize=True needs num_stages <= 2 (with 3 stages the H200 run gave "
                f"infinite results), got num_stages={self.num_stages}"
            )
        if self.halves == 2 and self.block_m < 32:
            raise ValueError(
                f"halves=2 needs block_m >= 32 (two halves of >= 16 rows), got {self.block_m}"
            )
        if self.max_registers is not None and (
            isinstance(self.max_registers, bool)
            or not isinstance(self.max_registers, int)
            or not 32 <= self.max_registers <= 255
        ):
            raise ValueError(
                f"max_registers must be None or an int in [32, 255], got {self.max_registers!r}"
            )
        for name in ("block_m", "block_n", "band_block"):
            size = getattr(self, name)
            if size < 16 or size & (size - 1):
                raise ValueError(
                    f"{name} must be a power of two >= 16 (tl.dot needs it), got {size}"
                )


@dataclass(frozen=True)
class TritonBlocks:
    """Launch options of the three kernels (forward, query gradient, key/value gradient)."""

    forward: KernelLaunch
    grad_query: KernelLaunch
    grad_key_value: KernelLaunch

    def __post_init__(self) -> None:
        for name in ("grad_query", "grad_key_value"):
            if getattr(self, name).halves != 1:
                raise ValueError(f"{name}.halves must be 1: only the forward kernel has halves")
        # The band is walked in smaller tiles along each kernel's loop dimension.
        for name, loop_block in (
            ("forward", self.forward.block_n),
            ("grad_query", self.grad_query.block_n),
            ("grad_key_value", self.grad_key_value.block_m),
        ):
            if getattr(self, name).band_block > loop_block:
                raise ValueError(
                    f"{name}.band_block must be <= its loop block {loop_block}, "
                    f"got {getattr(self, name).band_block}"
                )


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def default_blocks(head_dim: int, dtype: torch.dtype = torch.bfloat16) -> TritonBlocks:
    """Tile sizes for a head size and dtype; 16×16 tiles under the interpreter.

    Half precision with ``D <= 64``: timed on an H200 (``benchmarks/gpu_check.py``, one kernel's
    tiles swept at a time; ``benchmarks/RESULTS.md``). Other head sizes and float32 (3xTF32
    matmuls): chosen to fit shared memory and limit register spills in an sm_90 compile made
    before ``compile_kernels`` specialised like a launch, not tuned by timings; as launched,
    ``gpu_check.py --compile-only`` reports at most 28 B spilled for bf16 D=128 but up to
    ~5 KiB for float32 D=128, and the fewest-spill float32 tiles are tiny (16 rows), so they
    await timings. Pass your own :class:`TritonBlocks` to :func:`triton_attention` to tune.
    """
    if _interpreting():
        tiny = KernelLaunch(16, 16, band_block=16)  # small tests still cross several tiles
        return TritonBlocks(tiny, tiny, tiny)
    if dtype == torch.float32:
        # 3xTF32 matmuls hold every operand twice; these tiles keep shared memory under the
        # 227 KiB of an H100 (measured from the sm_90 compile), at the cost of spills.
        if head_dim <= 64:
            return TritonBlocks(
                forward=KernelLaunch(64, 16, band_block=16, num_warps=4),
                grad_query=KernelLaunch(32, 32, band_block=16, num_warps=4),
                grad_key_value=KernelLaunch(16, 32, band_block=16, num_warps=4),
            )
        return TritonBlocks(
            forward=KernelLaunch(32, 32, band_block=16, num_warps=4),
            grad_query=KernelLaunch(32, 16, band_block=16, num_warps=4),
            grad_key_value=KernelLaunch(16, 32, band_block=16, num_warps=4),
        )
    if head_dim <= 64:
        # Timed on an H200 (benchmarks/RESULTS.md): the fastest of the swept forward tiles (two
        # interleaved 64-row halves, 7 % faster than one 64-row block in run 6's sweep) and
        # key/value tiles; for the query gradient 128-row blocks, which halve the per-block
        # table-gradient partials (peak memory 1.36x SDPA's instead of 1.54x) for ~2-4 % of
        # backward time.
        return TritonBlocks(
            forward=KernelLaunch(128, 64, band_block=32, num_warps=4, num_stages=2, halves=2),
            grad_query=KernelLaunch(128, 64, band_block=32, num_warps=8, num_stages=3),
            grad_key_value=KernelLaunch(64, 64, band_block=32, num_warps=4),
        )
    return TritonBlocks(
        forward=KernelLaunch(128, 32, band_block=16, num_warps=8),
        grad_query=KernelLaunch(64, 32, band_block=16, num_warps=8),
        grad_key_value=KernelLaunch(16, 128, band_block=16, num_warps=8),
    )


def dropout_blocks(blocks: TritonBlocks) -> TritonBlocks:
    """``blocks`` as the kernels run them with dropout: no kernel with its tails split off
    (``split_tails``, ``warp_specialize``), and a forward in ``halves`` becomes blocks of one
    half's rows (a 128-row block in two halves: 64-row blocks; as one 128-row block the sm_90
    compile spills 1 KiB). Dropout is drawn only in the plain fused kernels; other tile sizes,
    warps, stages, TMA and groups stay as given."""
    forward = blocks.forward
    forward = dataclasses.replace(
        forward,
        block_m=forward.block_m // forward.halves,
        halves=1,
        split_tails=False,
        warp_specialize=False,
    )
    return TritonBlocks(
        forward,
        *(
            dataclasses.replace(launch, split_tails=False, warp_specialize=False)
            for launch in (blocks.grad_query, blocks.grad_key_value)
        ),
    )


@functools.cache
def triton_available() -> bool:
    """Whether Triton is installed (it is not imported). Asked once: a module search stats the
    import path, ~0.1 ms, which would otherwise be paid on every call."""
    return importlib.util.find_spec("triton") is not None


@functools.cache
def triton_version() -> tuple[int, int]:
    """Triton's ``(major, minor)`` (imports it; asked once). ``(0, 0)`` if its version string
    does not start with two numbers."""
    import triton

    found = re.match(r"(\d+)\.(\d+)", triton.__version__)
    return (int(found[1]), int(found[2])) if found else (0, 0)


def check_triton_device(device: torch.device) -> None:
    """``ValueError`` unless the triton backend can run on ``device``: CUDA (or any device under
    ``TRITON_INTERPRET=1``), with Triton installed."""
    if not (device.type == "cuda" or _interpreting()):
        raise ValueError(
            f"the triton backend needs CUDA tensors (got device {device}); set "
            "TRITON_INTERPRET=1 to run it on the CPU for testing, or use backend='eager'"
        )
    if not triton_available():
        raise ValueError("the triton backend needs Triton: pip install triton (or relpos[triton])")


def triton_applies(
    *,
    query: Tensor,
    key_query: bool = False,
    dropout: bool = False,
    has_mask: bool = False,
    value_dim: int | None = None,
    **_: object,
) -> bool:
    """Whether ``auto`` may pick the kernel: a CUDA card of compute capability 8.0 or later
    (Ampere on), Triton 3.4 or later, no key-query term, head size <= 128, batch × heads <=
    65,535. :func:`triton_refusal` says which of these fails. Dropout is drawn in the kernels.

    Boolean and float masks of any broadcastable shape run natively; ``has_mask`` does not matter.
    Older cards are left to the eager path: compiled for sm_75 (T4, RTX 20xx), the default
    query-gradient tiles need 96 KiB of shared memory per block, where those cards give 64 KiB
    (``benchmarks/shared_memory.py``). ``backend="triton"`` is still allowed there, with ``blocks``
    that fit (untested on such a card).
    """
    return (
        triton_refusal(query=query, key_query=key_query, dropout=dropout, value_dim=value_dim)
        is None
    )


def triton_refusal(
    *,
    query: Tensor,
    key_query: bool = False,
    dropout: bool = False,
    value_dim: int | None = None,
    **_: object,
) -> str | None:
    """Why ``auto`` does not pick the kernel for these inputs (the first reason, in words), or
    ``None`` if it does (:func:`triton_applies`). ``relpos info`` prints it. ``dropout`` is
    accepted and never a reason: the kernels draw it themselves."""
    head_dim = query.shape[-1]
    value_dim = head_dim if value_dim is None else value_dim
    batch_heads = query.shape[0] * query.shape[1]
    if not query.is_cuda:
        return f"the inputs are on {query.device.type}, and the kernels run on CUDA"
    if key_query:
        return "key_query=True, a term the kernels do not compute"
    if query.dtype not in _KERNEL_DTYPES:
        return f"{query.dtype} inputs; the kernels take float16, bfloat16 and float32"
    if max(head_dim, value_dim) > MAX_HEAD_DIM:
        return f"head size {max(head_dim, value_dim)} > {MAX_HEAD_DIM}, the most they hold"
    if batch_heads > MAX_BATCH_HEADS:
        return f"batch × heads = {batch_heads} > {MAX_BATCH_HEADS}, a CUDA grid axis's limit"
    capability = _capability(query.device)
    if capability < MIN_CAPABILITY:
        return (
            f"compute capability {capability[0]}.{capability[1]} < 8.0: the default tiles need "
            "more shared memory than such a card gives a block"
        )
    if not triton_available():
        return "Triton is not installed (pip install triton)"
    if triton_version() < MIN_TRITON:
        major, minor = triton_version()
        return f"Triton {major}.{minor} < 3.4, the oldest the kernels were compiled with"
    return None


@functools.cache
def _cached_capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def _capability(device: torch.device) -> tuple[int, int]:
    """The CUDA card's compute capability, asked once per card (``auto`` asks on every call)."""
    return _cached_capability(torch.cuda.current_device() if device.index is None else device.index)


def _pad(size: int) -> int:
    """Smallest power of two >= size and >= 16 (``tl.arange`` and ``tl.dot`` need both)."""
    return max(16, 1 << max(size - 1, 0).bit_length())


def _dot_precision(dtype: torch.dtype) -> str:
    # float32 follows torch's matmul setting: "highest" (the default) gets 3xTF32, which keeps
    # float32 accuracy on tensor cores (plain FMA "ieee" dots spill registers massively);
    # "high"/"medium" allow plain TF32. Half-precision inputs ignore this.
    if dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest":
        return "tf32x3"
    return "tf32"


def _kernels():
    """The Triton kernels, imported on first use so that ``import relpos`` never imports Triton."""
    from . import _triton_shaw_kernels

    if _interpreting():
        _interpreter_loop_bounds()
    return _triton_shaw_kernels


@functools.cache
def _interpreter_loop_bounds() -> None:
    """Let Triton's interpreter run loops with computed bounds under NumPy >= 2.4.

    The interpreter turns a loop bound into a Python int with ``int(array)`` on a 1-element
    array, which NumPy 2.4 refuses; read the element instead. Applied once, only when
    ``TRITON_INTERPRET`` is set; compiled kernels never go through this path. Triton 3.6 added a
    ``scope`` argument through which the patch must go; earlier versions set the attribute.
    """
    from triton.runtime import interpreter

    original = interpreter._patch_lang_tensor

    def element(self):
        return int(self.handle.data.reshape(-1)[0])

    def patched(tensor, *scope):
        original(tensor, *scope)
        if scope:
            scope[0].set_attr(tensor, "__index__", element)
        else:
            tensor.__index__ = element

    interpreter._patch_lang_tensor = patched


# ------------------------------------------------------------------------------ host side


@dataclass(frozen=True)
class _Problem:
    """Everything about one call that is not a tensor."""

    index: RelativeIndex
    scale: float
    is_causal: bool
    mask_kind: int  # 0 none, 1 boolean, 2 float
    mask_rowwise: bool
    blocks: TritonBlocks
    dropout: FusedDropout | None = None

    def dropout_args(self) -> tuple:
        """The kernels' ``seed, dropout_p, keep_scale`` arguments (inert without dropout)."""
        if self.dropout is None:
            return 0, 0.0, 1.0
        return self.dropout.seed, self.dropout.p, 1.0 / (1.0 - self.dropout.p)


def _prepare_mask(
    attn_mask: Tensor | None, batch: int, heads: int, q_len: int, k_len: int
) -> tuple[Tensor | None, int, bool]:
    """A ``(B, H, Lq, Lk)`` *view* of the mask (broadcast dimensions get stride 0), its kind, and
    whether it ignores the query row (a key-padding mask)."""
    if attn_mask is None:
        return None, 0, False
    if attn_mask.dtype == torch.bool:
        mask, kind = attn_mask.view(torch.uint8), 1  # same bytes; Triton loads them as integers
    else:
        mask, kind = attn_mask, 2
    while mask.dim() < 4:
        mask = mask.unsqueeze(0)
    mask = mask.expand(batch, heads, q_len, k_len)
    return mask, kind, (mask.stride(2) == 0 or q_len == 1)


def _strides(t: Tensor | None) -> tuple[int, ...]:
    return (0, 0, 0, 0) if t is None else tuple(t.stride())


def _meta(problem: _Problem, query: Tensor, value: Tensor, has_key: bool, has_value: bool) -> dict:
    index = problem.index
    return dict(
        HEAD_DIM=query.shape[-1],
        VALUE_DIM=value.shape[-1],
        D_PAD=_pad(query.shape[-1]),
        DV_PAD=_pad(value.shape[-1]),
        R_PAD=_pad(index.num_buckets),
        HAS_KEY_TABLE=has_key,
        HAS_VALUE_TABLE=has_value,
        IS_CAUSAL=problem.is_causal,
        MASK_KIND=problem.mask_kind,
        MASK_ROWWISE=problem.mask_rowwise,
        # Tail tiles take the row maximum of unscaled logits unless a float mask must be added
        # to scaled ones or the scale is not positive (then scaling would not commute with max).
        SCALE_FIRST=problem.mask_kind == 2 or problem.scale <= 0,
        DOT_PRECISION=_dot_precision(query.dtype),
    )


def _shape_args(problem: _Problem, heads: int) -> tuple:
    index = problem.index
    return (
        heads,
        index.query_len,
        index.key_len,
        index.diagonal_shift,
        index.max_left,
        index.max_right,
        index.num_buckets,
    )


def _launch(kernel, grid, launch: KernelLaunch, *args, **meta) -> None:
    if launch.max_registers is not None:
        meta["maxnreg"] = launch.max_registers
    kernel[grid](
        *args,
        BLOCK_M=launch.block_m,
        BLOCK_N=launch.block_n,
        num_warps=launch.num_warps,
        num_stages=launch.num_stages,
        **meta,
    )


#: Tails-kernel configurations Triton failed to warp-specialise in this process.
_UNSPECIALISABLE: set = set()


def _specialisable(launch: KernelLaunch, dtype: torch.dtype, meta: dict) -> bool:
    """What Triton 3.6 warp-specialises in the tails kernels (sm_90 compiles): ``block_m = 64``
    (query rows; 128 fails), 4 warps, 16-bit inputs, no dense mask tile in the loop. Anything
    else it may refuse, so those run unspecialised."""
    return (
        launch.block_m == 64
        and launch.num_warps == 4
        and dtype != torch.float32
        and (meta["MASK_KIND"] == 0 or meta["MASK_ROWWISE"])
    )


#: The compile-time flags every tails kernel takes from ``_meta``.
_TAILS_META = (
    "HEAD_DIM",
    "VALUE_DIM",
    "D_PAD",
    "DV_PAD",
    "IS_CAUSAL",
    "MASK_KIND",
    "MASK_ROWWISE",
    "SCALE_FIRST",
    "DOT_PRECISION",
)


def _tails_options(meta: dict, **extra) -> dict:
    return {name: meta[name] for name in _TAILS_META} | extra


def _launch_tails(kernel, grid, launch, arguments, options, specialise, dtype) -> None:
    """Launch a tails kernel warp-specialised if ``specialise``; should Triton's compiler refuse
    the split, run it unspecialised, now and for that configuration from then on."""
    key = (kernel, launch, tuple(sorted(options.items())), dtype)
    if specialise and key not in _UNSPECIALISABLE:
        try:
            _launch(kernel, grid, launch, *arguments, WARP_SPECIALIZE=True, **options)
            return
        except Exception:  # the compiler refused: once, then never again
            _UNSPECIALISABLE.add(key)
    _launch(kernel, grid, launch, *arguments, WARP_SPECIALIZE=False, **options)


def _forward_tails(query, key_rows, value_rows, key_table, mask, problem, meta, heads, grid):
    """``KernelLaunch(split_tails=True)`` or ``warp_specialize=True``: the tails in a kernel of
    their own (whose loop Triton can warp-specialise: a producer warp issues the TMA loads, the
    others compute); its partial online softmax goes to ``forward_kernel`` (``FROM_TAILS``) for
    the band and the epilogue. Returns that partial state: ``(B·H·Lq, DV_PAD)`` sums and
    ``(B·H·Lq, 3)`` row maximum, row sum and the left tiles' share of it."""
    batch, _, q_len, _ = query.shape
    f32 = dict(device=query.device, dtype=torch.float32)
    rows = batch * heads * q_len
    launch = problem.blocks.forward
    specialise = launch.warp_specialize and _specialisable(launch, query.dtype, meta)
    # Each row's tail key terms q·w^K_0 and q·w^K_{R-1}, in base 2 and scaled: computed in the
    # kernel, unless it is to be warp-specialised (its query block may then serve only the
    # loop's matrix products) or there is no key table (zeros).
    in_kernel = key_table is not None and not specialise
    if key_table is None:
        tail_bias = torch.zeros(rows, 2, **f32)
    elif in_kernel:
        tail_bias = torch.empty(0, **f32)  # unused
    else:
        ends = key_table[:, [0, -1]].float().transpose(-1, -2)  # (Ht, D, 2)
        tail_bias = (query.float() @ ends).mul_(problem.scale * LOG2E).reshape(rows, 2)
    partial_acc = torch.empty(rows, meta["DV_PAD"], **f32)
    partial_stats = torch.empty(rows, 3, **f32)
    arguments = (
        _row_descriptor(query, launch.block_m, meta["D_PAD"]),
        key_rows,
        value_rows,
        tail_bias,
        query if key_table is None else key_table,  # unused pointer when there is no table
        query if mask is None else mask,
        partial_acc,
        partial_stats,
        *_strides(mask),
        _table_head_stride(key_table),
        *_shape_args(problem, heads),
        problem.scale * LOG2E,
    )
    options = _tails_options(
        meta,
        CHECK_COLS=problem.index.key_len % launch.block_n != 0,
        TAIL_BIAS_IN_KERNEL=in_kernel,
    )
    _launch_tails(
        _kernels().forward_tails_kernel, grid, launch, arguments, options, specialise, query.dtype
    )
    return partial_acc, partial_stats


class _ShawTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query, key, value, key_table, value_table, mask, problem: _Problem):
        batch, heads, q_len, _ = query.shape
        rows = problem.index.num_buckets
        needs_grad = any(
            t is not None and t.requires_grad for t in (query, key, value, key_table, value_table)
        )
        out = query.new_empty(batch, heads, q_len, value.shape[-1])
        f32 = dict(device=query.device, dtype=torch.float32)
        empty = torch.empty(0, **f32)
        lse = torch.empty(batch * heads, q_len, **f32) if needs_grad else empty
        # Q A_Kᵀ (Lq × R per batch·head): the band tiles read it back by bucket, and the
        # backward reuses it.
        query_rel = (
            torch.empty(batch * heads, q_len, rows, **f32) if key_table is not None else empty
        )
        # M[r, 0] and M[r, R - 1], the mass of each row's two tails (the interior masses are
        # recomputed by the backward from its band tiles).
        tail_mass = (
            torch.empty(batch * heads, q_len, 2, **f32)
            if needs_grad and value_table is not None
            else empty
        )
        # Scratch for the interior buckets' logits (one key per row and bucket), forward only.
        band_logits = (
            torch.empty(batch * heads, q_len, rows, **f32) if value_table is not None else empty
        )
        meta = _meta(problem, query, value, key_table is not None, value_table is not None)
        launch = problem.blocks.forward
        grid = (_cdiv(q_len, launch.block_m), batch * heads)
        use_tma, (key_rows, value_rows) = _row_descriptors(
            launch.tma, launch.block_n, (key, meta["D_PAD"]), (value, meta["DV_PAD"])
        )
        partial_acc = partial_stats = empty
        split = launch.splits and use_tma and _tma_compatible(query)
        if split:
            partial_acc, partial_stats = _forward_tails(
                query, key_rows, value_rows, key_table, mask, problem, meta, heads, grid
            )
        _launch(
            _kernels().forward_kernel,
            grid,
            launch,
            query,
            key,
            value,
            key_rows,
            value_rows,
            query if key_table is None else key_table,  # unused pointer when there is no table
            query if value_table is None else value_table,
            query if mask is None else mask,
            out,
            lse,
            query_rel,
            tail_mass,
            band_logits,
            partial_acc,
            partial_stats,
            *_strides(query),
            *_strides(key),
            *_strides(value),
            *_strides(out),
            *_strides(mask),
            _table_head_stride(key_table),
            _table_head_stride(value_table),
            *_shape_args(problem, heads),
            problem.scale * LOG2E,
            *problem.dropout_args(),
            BAND_BLOCK_N=launch.band_block,
            CHECK_COLS=problem.index.key_len % launch.block_n != 0,
            SAVE_FOR_BACKWARD=needs_grad,
            USE_TMA=use_tma,
            HALVES=launch.halves,
            FROM_TAILS=split,
            DROPOUT=problem.dropout is not None,
            **meta,
        )
        del band_logits, partial_acc, partial_stats
        ctx.problem = problem
        ctx.meta = meta  # the same compile-time flags serve the backward's kernels
        ctx.has_tables = (key_table is not None, value_table is not None)
        ctx.save_for_backward(
            query, key, value, key_table, value_table, mask, out, lse, query_rel, tail_mass
        )
        return out

    @staticmethod
    @checks.backward_without_autocast
    @once_differentiable
    def backward(ctx, grad_out):
        (query, key, value, key_table, value_table, mask, out, lse, query_rel, tail_mass) = (
            ctx.saved_tensors
        )
        problem: _Problem = ctx.problem
        has_key, has_value = ctx.has_tables
        batch, heads, q_len, head_dim = query.shape
        k_len, value_dim = key.shape[2], value.shape[-1]
        rows = problem.index.num_buckets
        grad_out = grad_out.contiguous()
        f32 = dict(device=query.device, dtype=torch.float32)

        grad_q = torch.empty_like(query)
        grad_k = torch.empty_like(key)
        grad_v = torch.empty_like(value)
        delta = torch.empty(batch * heads, q_len, **f32)
        # Each tail's lse and δ with its key and value terms folded in, (4, B·H·Lq): the tail
        # tiles of both gradient kernels read them as contiguous vectors.
        tail_rows = torch.empty(4, batch * heads * q_len, **f32)
        # dO A_Vᵀ (Lq × R): read by both kernels; the query kernel, which runs last, overwrites
        # its interior slots with the masses M[r, b] it recomputes.
        grad_rel = torch.empty(batch * heads, q_len, rows, **f32) if has_value else delta
        meta = ctx.meta
        kernels = _kernels()
        prepare_rows = 64
        kernels.grad_prepare_kernel[(_cdiv(q_len, prepare_rows), batch * heads)](
            out,
            grad_out,
            query if value_table is None else value_table,
            lse,
            query_rel if has_key else delta,
            delta,
            grad_rel,
            tail_rows,
            *_strides(out),
            *_strides(grad_out),
            _table_head_stride(value_table),
            heads,
            q_len,
            rows,
            problem.scale * LOG2E,
            VALUE_DIM=meta["VALUE_DIM"],
            DV_PAD=meta["DV_PAD"],
            R_PAD=meta["R_PAD"],
            BLOCK_M=prepare_rows,
            HAS_KEY_TABLE=has_key,
            HAS_VALUE_TABLE=has_value,
            DOT_PRECISION=meta["DOT_PRECISION"],
            DROPOUT=problem.dropout is not None,
            num_warps=4,
        )
        launch = problem.blocks.grad_key_value
        use_tma, (query_rows, grad_out_rows) = _row_descriptors(
            launch.tma, launch.block_m, (query, meta["D_PAD"]), (grad_out, meta["DV_PAD"])
        )
        split = launch.splits and use_tma and _tma_compatible(key) and _tma_compatible(value)
        if split:  # the tails' share first, in a kernel Triton can warp-specialise
            _launch_tails(
                kernels.grad_key_value_tails_kernel,
                (_cdiv(k_len, launch.block_n), batch * heads),
                launch,
                (
                    query_rows,
                    _row_descriptor(key, launch.block_n, meta["D_PAD"]),
                    _row_descriptor(value, launch.block_n, meta["DV_PAD"]),
                    grad_out_rows,
                    query if mask is None else mask,
                    tail_rows,
                    grad_k,
                    grad_v,
                    *_strides(key),
                    *_strides(value),
                    *_strides(mask),
                    *_shape_args(problem, heads)[:-1],
                    problem.scale * LOG2E,
                    problem.scale,
                ),
                _tails_options(meta),
                launch.warp_specialize and _specialisable(launch, query.dtype, meta),
                query.dtype,
            )
        _launch(
            kernels.grad_key_value_kernel,
            (_cdiv(k_len, launch.block_n), batch * heads),
            launch,
            query,
            key,
            value,
            grad_out,
            query_rows,
            grad_out_rows,
            query if mask is None else mask,
            lse,
            delta,
            tail_rows,
            query_rel if has_key else delta,
            grad_rel,
            grad_k,
            grad_v,
            *_strides(query),
            *_strides(key),
            *_strides(value),
            *_strides(grad_out),
            *_strides(mask),
            *_shape_args(problem, heads),
            problem.scale * LOG2E,
            problem.scale,
            *problem.dropout_args(),
            BAND_BLOCK_M=launch.band_block,
            USE_TMA=use_tma,
            FROM_TAILS=split,
            DROPOUT=problem.dropout is not None,
            **meta,
        )
        launch = problem.blocks.grad_query
        q_groups = _cdiv(_cdiv(q_len, launch.block_m), launch.group)  # one partial each
        # dS per interior bucket (Lq × R), written by the band tiles and read at the end. In the
        # inputs' dtype: the kernel rounds it to that dtype for its last two dots anyway.
        grad_scores_rel = (
            torch.empty(batch * heads, q_len, rows, device=query.device, dtype=query.dtype)
            if has_key
            else delta
        )
        # Each group's (R, D) share of the table gradients; summed below.
        partial_key = (
            torch.empty(batch * heads * q_groups, rows, head_dim, **f32) if has_key else delta
        )
        partial_value = (
            torch.empty(batch * heads * q_groups, rows, value_dim, **f32) if has_value else delta
        )
        use_tma, (key_rows, value_rows) = _row_descriptors(
            launch.tma, launch.block_n, (key, meta["D_PAD"]), (value, meta["DV_PAD"])
        )
        split = launch.splits and use_tma and _tma_compatible(query) and _tma_compatible(grad_out)
        tail_sums = delta  # unused unless split
        if split:  # the tails' share first, in a kernel Triton can warp-specialise
            tail_sums = torch.empty(batch * heads * q_len, 2, **f32)
            _launch_tails(
                kernels.grad_query_tails_kernel,
                (_cdiv(q_len, launch.block_m), batch * heads),
                launch,
                (
                    _row_descriptor(query, launch.block_m, meta["D_PAD"]),
                    key_rows,
                    value_rows,
                    _row_descriptor(grad_out, launch.block_m, meta["DV_PAD"]),
                    query if mask is None else mask,
                    tail_rows,
                    grad_q,
                    tail_sums,
                    *_strides(query),
                    *_strides(mask),
                    *_shape_args(problem, heads)[:-1],
                    problem.scale * LOG2E,
                    problem.scale,
                ),
                _tails_options(
                    meta,
                    CHECK_COLS=k_len % launch.block_n != 0,
                    HAS_KEY_TABLE=meta["HAS_KEY_TABLE"],
                ),
                launch.warp_specialize and _specialisable(launch, query.dtype, meta),
                query.dtype,
            )
        _launch(
            kernels.grad_query_kernel,
            (q_groups, batch * heads),
            launch,
            query,
            key,
            value,
            key_rows,
            value_rows,
            grad_out,
            query if key_table is None else key_table,
            query if mask is None else mask,
            lse,
            delta,
            tail_rows,
            query_rel if has_key else delta,
            grad_rel,
            tail_mass if has_value else delta,
            grad_scores_rel,
            grad_q,
            partial_key,
            partial_value,
            tail_sums,
            *_strides(query),
            *_strides(key),
            *_strides(value),
            *_strides(grad_out),
            *_strides(mask),
            _table_head_stride(key_table),
            *_shape_args(problem, heads),
            problem.scale * LOG2E,
            problem.scale,
            *problem.dropout_args(),
            BAND_BLOCK_N=launch.band_block,
            CHECK_COLS=k_len % launch.block_n != 0,
            USE_TMA=use_tma,
            GROUP=launch.group,
            FROM_TAILS=split,
            DROPOUT=problem.dropout is not None,
            **meta,
        )
        grad_key_table = grad_value_table = None
        if has_key:
            grad_key_table = _sum_partials(partial_key, key_table, batch, heads, q_groups)
        if has_value:
            grad_value_table = _sum_partials(partial_value, value_table, batch, heads, q_groups)
        return grad_q, grad_k, grad_v, grad_key_table, grad_value_table, None, None


def _cdiv(a: int, b: int) -> int:
    """Number of tiles of size ``b`` covering ``a``."""
    return -(-a // b)


def _tma_compatible(t: Tensor) -> bool:
    """Whether a TMA descriptor can address ``t``: last dimension contiguous, the base and every
    other stride a multiple of 16 bytes."""
    size = t.element_size()
    return (
        t.stride(-1) == 1
        and t.data_ptr() % 16 == 0
        and all(stride * size % 16 == 0 for stride in t.stride()[:-1])
    )


def _row_descriptor(t: Tensor, block_rows: int, dim_pad: int):
    """A TMA descriptor over a ``(B, H, L, D)`` tensor that loads ``(1, 1, block_rows, dim_pad)``
    blocks, zero past ``L`` and ``D``."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    return TensorDescriptor(t, list(t.shape), list(t.stride()), [1, 1, block_rows, dim_pad])


def _check_tma_device(device: torch.device) -> None:
    """TMA needs Hopper or later; asking for it elsewhere is a configuration error."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if major < 9:
            raise ValueError(
                "KernelLaunch(tma=True) needs a GPU with TMA (compute capability 9.0 or later, "
                f"e.g. H100); this one has {major}.{minor}: use tma=False"
            )


def _row_descriptors(
    wanted: bool, block_rows: int, *tensors: tuple[Tensor, int]
) -> tuple[bool, list]:
    """``(True, descriptors)`` for the ``(tensor, dim_pad)`` pairs a kernel streams, if TMA is
    wanted and every one of them allows it; else ``(False, tensors)`` (the kernel ignores them)."""
    if wanted:
        _check_tma_device(tensors[0][0].device)
    if wanted and all(_tma_compatible(t) for t, _ in tensors):
        return True, [_row_descriptor(t, block_rows, pad) for t, pad in tensors]
    return False, [t for t, _ in tensors]


def _is_dense(t: Tensor) -> bool:
    """Whether ``t`` fills its memory without gaps or overlaps in some order of its dimensions
    (a permuted contiguous tensor is; an expanded or sliced view is not). Only for such a tensor
    does ``empty_like`` return the same strides."""
    if t.is_contiguous():  # the usual case, answered without the Python loop below
        return True
    expected = 1
    for size, stride in sorted(zip(t.shape, t.stride(), strict=True), key=lambda p: p[1]):
        if size == 1:
            continue
        if stride != expected:
            return False
        expected *= size
    return True


def _table_head_stride(table: Tensor | None) -> int:
    # A table shared by all heads is (1, R, D): every head reads the same rows.
    return 0 if table is None or table.shape[0] == 1 else table.stride(0)


def _sum_partials(partials: Tensor, table: Tensor, batch: int, heads: int, blocks: int) -> Tensor:
    """``(B·H·blocks, R, D)`` per-block table gradients → the table's own shape ``(Ht, R, D)``."""
    if table.shape[0] == 1:  # shared table: every head's rows add up, one reduction
        return partials.sum(dim=0, keepdim=True).to(table.dtype)
    per_head = partials.view(batch, heads, blocks, *partials.shape[1:]).sum(dim=(0, 2))  # (H, R, D)
    return per_head.to(table.dtype)


class NoGpuDriver:
    """Stands in for Triton's CUDA driver where there is no GPU: what Triton's launch path asks
    of a driver before it compiles (device, stream, target). For :func:`compile_kernels` and the
    host-time benchmarks."""

    def __init__(self, target) -> None:
        self.target = target

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device) -> int:
        return 0

    def get_current_target(self):
        return self.target


def compile_kernels(
    head_dim: int = 64,
    dtype: torch.dtype = torch.bfloat16,
    *,
    num_buckets: int = 33,
    length: int = 4096,
    blocks: TritonBlocks | None = None,
    arch: int = 90,
    is_causal: bool = False,
    mask_kind: int = 0,
    constexprs: dict | None = None,
    dropout: bool = False,
) -> dict:
    """Compile the four kernels for an NVIDIA architecture (``arch=90``: H100/H200) without a GPU,
    exactly as a forward and backward at ``length`` would launch them.

    The host code runs for real on empty CPU tensors of shape ``(1, 2, length, head_dim)`` with
    Triton's launches intercepted just before compilation, so every kernel is compiled with the
    specialisation a GPU launch gets (unit strides as constants, 16-divisible pointers, strides
    and lengths marked as such: what lets Triton vectorise and pipeline the loads). Returns
    ``{name: triton CompiledKernel}`` (``.asm["ptx"]``, ``.asm["cubin"]``,
    ``.metadata.shared``): a check that the kernels lower, and material for choosing tile sizes
    (``ptxas -v`` on the PTX reports registers and spills). ``constexprs`` overrides compile-time
    flags (e.g. ``{"HAS_VALUE_TABLE": False}``) to see what a feature costs; ``dropout=True``
    compiles the kernels a call with dropout launches (``blocks`` reduced by
    :func:`dropout_blocks`). Needs a process in which the kernels were not built for the
    interpreter (``TRITON_INTERPRET`` unset).
    """
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.driver import driver

    kernels = _kernels()
    if not hasattr(kernels.forward_kernel, "device_caches") or _interpreting():
        raise ValueError(
            "compile_kernels needs TRITON_INTERPRET unset (the kernels were built "
            "for the interpreter in this process)"
        )
    target = GPUTarget("cuda", arch, 32)
    launches = []

    def capture(*, fn, compile, **_):
        launches.append((fn.jit_function, compile))
        return True  # "handled": Triton neither compiles nor launches

    names = {
        kernels.forward_kernel: "forward",
        kernels.forward_tails_kernel: "forward_tails",
        kernels.grad_key_value_tails_kernel: "grad_key_value_tails",
        kernels.grad_query_tails_kernel: "grad_query_tails",
        kernels.grad_prepare_kernel: "grad_prepare",
        kernels.grad_query_kernel: "grad_query",
        kernels.grad_key_value_kernel: "grad_key_value",
    }
    # Saved and put back by hand: reset_active() would build the CUDA driver, which needs a GPU.
    # (Triton 3.4 keeps it in ``driver.active``; later versions in ``_active``.)
    slot = "_active" if "_active" in vars(driver) else "active"
    saved_driver, saved_hook = getattr(driver, slot), knobs.runtime.jit_cache_hook
    driver.set_active(NoGpuDriver(target))
    knobs.runtime.jit_cache_hook = capture
    try:

        def empty(*shape):
            return torch.empty(*shape, dtype=dtype).requires_grad_()

        query, key, value = (empty(1, 2, length, head_dim) for _ in range(3))
        key_table, value_table = empty(1, num_buckets, head_dim), empty(1, num_buckets, head_dim)
        attn_mask = None
        if mask_kind == 1:
            attn_mask = torch.ones(1, 1, 1, length, dtype=torch.bool)
        elif mask_kind == 2:
            attn_mask = torch.zeros(1, 1, 1, length, dtype=dtype)
        mask, kind, rowwise = _prepare_mask(attn_mask, 1, 2, length, length)
        half = (num_buckets - 1) // 2
        problem = _Problem(
            index=RelativeIndex(length, length, half, num_buckets - 1 - half),
            scale=head_dim**-0.5,
            is_causal=is_causal,
            mask_kind=kind,
            mask_rowwise=rowwise,
            blocks=blocks or default_blocks(head_dim, dtype),
        )
        if dropout:
            problem = dataclasses.replace(
                problem, blocks=dropout_blocks(problem.blocks), dropout=FusedDropout(0.1, 12345)
            )
        out = _ShawTriton.apply(query, key, value, key_table, value_table, mask, problem)
        torch.autograd.grad(out, [query, key, value, key_table, value_table], torch.empty_like(out))
    finally:
        setattr(driver, slot, saved_driver)
        knobs.runtime.jit_cache_hook = saved_hook
        for kernel in names:
            kernel.device_caches.clear()  # they hold the stand-in driver's target

    compiled = {}
    for kernel, launch in launches:
        # The launch options the hook does not pass on: this kernel's register cap, if any
        # (a tails kernel shares its kernel's KernelLaunch; grad_prepare has none).
        own = getattr(problem.blocks, names[kernel].removesuffix("_tails"), None)
        constants = dict(launch["constants"])
        for name, value in (constexprs or {}).items():
            if name in kernel.arg_names:  # a flag only some of the kernels have
                constants[(kernel.arg_names.index(name),)] = value
        compiled[names[kernel]] = triton.compile(
            ASTSource(
                fn=kernel,
                signature=launch["signature"],
                constexprs=constants,
                attrs=launch["configs"][0],
            ),
            target=target,
            options=dict(
                num_warps=launch["num_warps"],
                num_stages=launch["num_stages"],
                maxnreg=None if own is None else own.max_registers,
            ),
        )
    return compiled


_UNCOMPILED: dict = {}


def _outside_compile(function):
    """Run ``function`` behind ``torch.compiler.disable``, so that a compiled model calls the
    kernels as they are instead of tracing their host code and launches (which Dynamo cannot do
    under Triton's interpreter and need not do on a GPU). Disabled on first call, as
    ``eager._fast_path_outside_compile`` is, to keep ``torch._dynamo`` out of ``import relpos``;
    kept in a dict rather than ``functools.cache``, whose wrapper Dynamo warns about."""

    @functools.wraps(function)
    def call(*args, **kwargs):
        disabled = _UNCOMPILED.get(function)
        if disabled is None:
            disabled = _UNCOMPILED[function] = torch.compiler.disable(function)
        return disabled(*args, **kwargs)

    return call


@_outside_compile
def triton_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    *,
    index: RelativeIndex,
    key_table: Tensor | None,
    value_table: Tensor | None,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    dropout_mask: Tensor | FusedDropout | None = None,
    key_query: bool = False,
    blocks: TritonBlocks | None = None,
) -> Tensor:
    """Shaw relative attention (keys and values) by the fused Triton kernels; differentiable.

    Same contract as :func:`relpos.attention.reference.reference_attention`: ``query (B, H, Lq,
    D)``, ``key (B, H, Lk, D)``, ``value (B, H, Lk, Dv)``, ``key_table (Ht, R, D)``,
    ``value_table (Ht, R, Dv)`` with ``Ht ∈ {1, H}``, masks as in SDPA (boolean or float, any
    shape broadcasting to ``(B, H, Lq, Lk)``); returns ``(B, H, Lq, Dv)``. Inputs may be float16,
    bfloat16 or float32 and are computed in their own dtype with float32 accumulation
    (``shaw_attention`` passes half-precision inputs through as they are: this backend declares
    them native).

    Dropout: ``dropout_mask=FusedDropout(p, seed)`` (what ``shaw_attention`` passes) drops
    each weight inside the kernels with a Philox draw keyed by ``seed`` and the weight's
    position, and the backward draws the same mask again: nothing of size ``Lq × Lk`` is made.
    :func:`triton_dropout_mask` writes that mask out (for tests). The forward then runs without
    ``halves`` or a tails kernel (``blocks`` are reduced to the plain fused kernels, see
    :func:`dropout_blocks`). A dense mask tensor runs the eager backend.

    The kernels have no key-query term, and keep at most 128-wide heads in registers; for those
    inputs, a dense dropout mask, float64, empty sequences, more than 65,535 batch × heads
    (CUDA's grid limit, :data:`MAX_BATCH_HEADS`), and bfloat16 under Triton's interpreter
    (``TRITON_INTERPRET=1``, whose bfloat16 ``tl.dot`` returns garbage: triton-lang/triton#11584)
    this runs the eager backend, which computes the same function (with a ``FusedDropout``, on
    a mask torch draws from its seed: :meth:`FusedDropout.dense_mask`). ``blocks`` overrides the
    tile sizes (:func:`default_blocks`). Inside ``torch.compile`` it runs as it is, uncompiled.
    """
    # Called directly (not through shaw_attention), wrong shapes would make the kernels read
    # and write out of bounds: check them here as well.
    batch, heads, q_len, k_len, head_dim = checks.check_qkv(query, key, value)
    for table, name, dim in (
        (key_table, "key_table", head_dim),
        (value_table, "value_table", value.shape[-1]),
    ):
        if table is not None and table.dim() == 3 and table.shape[0] == 1:
            table = table[0]  # shared by the heads
        checks.check_table(table, name, rows=index.num_buckets, dim=dim, heads=heads, like=query)
    checks.check_attn_mask(
        attn_mask, batch=batch, heads=heads, q_len=q_len, k_len=k_len, like=query
    )
    scale = head_dim**-0.5 if scale is None else float(scale)
    if dropout_mask is not None and not isinstance(dropout_mask, (Tensor, FusedDropout)):
        raise TypeError(
            "dropout_mask must be None, a FusedDropout (drawn in the kernels) or a (B, H, Lq, Lk) "
            f"tensor, got {type(dropout_mask).__name__}"
        )
    fused_dropout = dropout_mask if isinstance(dropout_mask, FusedDropout) else None
    unsupported = (
        isinstance(dropout_mask, Tensor)
        or key_query
        or query.dtype not in _KERNEL_DTYPES
        or query.shape[-1] > MAX_HEAD_DIM
        or value.shape[-1] > MAX_HEAD_DIM
        or 0 in (index.query_len, index.key_len, query.shape[0], query.shape[1])
        or batch * heads > MAX_BATCH_HEADS
        or (attn_mask is not None and attn_mask.requires_grad)
        # The interpreter's bfloat16 dot is wrong (finite, ~1e9 off), not merely slow.
        or (_interpreting() and query.dtype == torch.bfloat16)
    )
    if unsupported:
        # Half inputs reach this backend uncast (it accumulates in float32 itself); the eager
        # fallback wants float32 copies, as shaw_attention gives every other backend.
        def upcast(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(torch.promote_types(t.dtype, torch.float32))

        if fused_dropout is not None:
            dropout_mask = fused_dropout.dense_mask(
                (batch, heads, q_len, k_len),
                dtype=torch.promote_types(query.dtype, torch.float32),
                device=query.device,
            )

        return eager_attention(
            upcast(query),
            upcast(key),
            upcast(value),
            index=index,
            key_table=upcast(key_table),
            value_table=upcast(value_table),
            attn_mask=attn_mask,
            is_causal=is_causal,
            scale=scale,
            dropout_mask=upcast(dropout_mask),
            key_query=key_query,
        ).to(query.dtype)
    check_triton_device(query.device)
    if (q_len, k_len) != (index.query_len, index.key_len):
        raise ValueError(
            f"index is for (Lq, Lk) = ({index.query_len}, {index.key_len}) but query/key have "
            f"lengths ({q_len}, {k_len})"
        )
    mask, mask_kind, rowwise = _prepare_mask(attn_mask, batch, heads, q_len, index.key_len)
    problem = _Problem(
        index=index,
        scale=scale,
        is_causal=bool(is_causal),
        mask_kind=mask_kind,
        mask_rowwise=rowwise,
        blocks=blocks or default_blocks(max(query.shape[-1], value.shape[-1]), query.dtype),
        dropout=fused_dropout,
    )
    if fused_dropout is not None:
        problem = dataclasses.replace(problem, blocks=dropout_blocks(problem.blocks))
    # Gradients are written with their input's strides into ``empty_like`` buffers, which have
    # the same strides only for a dense input: an expanded one (stride 0, e.g. keys shared across
    # heads) or a sliced one (rows with gaps) is copied first. Tables are always made contiguous.
    query, key, value = (t if _is_dense(t) else t.contiguous() for t in (query, key, value))
    key_table = None if key_table is None else key_table.contiguous()
    value_table = None if value_table is None else value_table.contiguous()
    return _ShawTriton.apply(query, key, value, key_table, value_table, mask, problem)


def triton_dropout_mask(
    dropout: FusedDropout, batch: int, heads: int, q_len: int, k_len: int, device
) -> Tensor:
    """The dropout multiplier the kernels apply under ``dropout`` to ``(B, H, Lq, Lk)`` weights,
    written out as a float32 tensor: ``1 / (1 - p)`` where a weight is kept, 0 where dropped.

    For tests and inspection (it is the ``Lq × Lk`` tensor the kernels never form): pass it to
    :func:`relpos.attention.reference.reference_attention` as ``dropout_mask`` to check the
    kernels against the paper. The mask depends on the position ``(b·H + h, r, c)`` and the
    seed only, not on tile sizes, so every launch configuration draws the same one. Runs the
    same Philox draw as the attention kernels (on CUDA, or under ``TRITON_INTERPRET=1``).
    """
    if not isinstance(dropout, FusedDropout):
        raise TypeError(f"dropout must be a FusedDropout, got {type(dropout).__name__}")
    device = torch.device(device)
    check_triton_device(device)
    for value, name in ((batch, "batch"), (heads, "heads"), (q_len, "q_len"), (k_len, "k_len")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    out = torch.empty(batch * heads, q_len, k_len, device=device, dtype=torch.float32)
    if out.numel():
        if batch * heads > MAX_BATCH_HEADS:
            raise ValueError(
                f"batch × heads = {batch * heads} > {MAX_BATCH_HEADS}: the kernels' grid axis "
                "holds no more (and they run the eager path, with torch's mask, for such inputs)"
            )
        block = 16 if _interpreting() else 64
        _kernels().dropout_mask_kernel[(_cdiv(q_len, block), batch * heads)](
            out,
            dropout.seed,
            q_len,
            k_len,
            dropout.p,
            1.0 / (1.0 - dropout.p),
            BLOCK_M=block,
            BLOCK_N=block,
        )
    return out.view(batch, heads, q_len, k_len)


register_backend(
    "triton",
    triton_attention,
    applies=triton_applies,
    auto_priority=0,
    native_dtypes=(torch.float16, torch.bfloat16),
    fused_dropout=True,
)
