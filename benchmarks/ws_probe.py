"""Does warp specialisation, or interleaving two halves, make Triton's plain attention faster?

Triton 3.6 warp-specialises a loop for Hopper (``tl.range(..., warp_specialize=True)``) only in
a kernel with no other matrix product, so the Shaw forward gets it only with its tails in a
kernel of their own (``KernelLaunch(warp_specialize=True)``; ``benchmarks/RESULTS.md``). This
probe measures the specialisation apart from the relative terms: it times a plain attention
forward (no positions, no masks; the loop the Shaw tails run) with and without warp
specialisation, and with two interleaved halves of rows (what ``KernelLaunch(halves=2)`` does
in the Shaw forward), next to SDPA, on bfloat16 (B, H, L, 64) inputs, and checks each output
against SDPA's.

    python benchmarks/ws_probe.py                     # on a GPU: a table, L = 4096 and 8192
    TRITON_INTERPRET=1 python benchmarks/ws_probe.py --lengths 128 --device cpu  # the code path

``benchmarks/gpu_check.py`` runs it as one of its sections.
"""

from __future__ import annotations

import argparse
import functools
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from relpos.attention import triton_shaw
from relpos.attention.triton_tune import queued_ms

LOG2E = 1.4426950408889634


@triton.jit
def online_softmax_step(scores, value, acc, row_sum, row_max, qk_scale):
    new_max = tl.maximum(row_max, tl.max(scores, 1) * qk_scale)
    probs = tl.exp2(scores * qk_scale - new_max[:, None])
    rescale = tl.exp2(row_max - new_max)
    row_sum = row_sum * rescale + tl.sum(probs, 1)
    acc = tl.dot(probs.to(value.dtype), value, acc * rescale[:, None])
    return acc, row_sum, new_max


@triton.jit
def store_rows(OUT, first_row, rows, acc, row_sum, HEAD_DIM: tl.constexpr):
    dims = tl.arange(0, HEAD_DIM)
    out = acc / row_sum[:, None]
    tl.store(
        OUT + (first_row + rows[:, None]) * HEAD_DIM + dims[None, :], out.to(OUT.dtype.element_ty)
    )


@triton.jit
def plain_forward(
    Q_DESC,
    K_DESC,
    V_DESC,
    OUT,
    length,
    qk_scale,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    WARP_SPECIALIZE: tl.constexpr,
    HALVES: tl.constexpr,
):
    """Softmax(Q Kᵀ · scale) V for one block of query rows; Q, K, V are ``(B·H·L, D)`` row
    blocks through TMA descriptors (Q's of ``BLOCK_M // HALVES`` rows), ``length`` a multiple
    of both block sizes. ``HALVES = 2``: two halves of the rows, both ``Q Kᵀ`` issued before
    either softmax (as ``KernelLaunch(halves=2)`` does in the Shaw forward)."""
    HALF: tl.constexpr = BLOCK_M // HALVES
    block = tl.program_id(0)
    first_row = tl.program_id(1) * length  # this (batch, head)'s first row
    rows = block * BLOCK_M + tl.arange(0, HALF)
    q = Q_DESC.load([first_row + block * BLOCK_M, 0])
    row_max = tl.full((HALF,), float("-inf"), tl.float32)
    row_sum = tl.zeros((HALF,), tl.float32)
    acc = tl.zeros((HALF, HEAD_DIM), tl.float32)
    if HALVES == 1:
        for tile in tl.range(0, length // BLOCK_N, warp_specialize=WARP_SPECIALIZE):
            key = K_DESC.load([first_row + tile * BLOCK_N, 0])
            value = V_DESC.load([first_row + tile * BLOCK_N, 0])
            acc, row_sum, row_max = online_softmax_step(
                tl.dot(q, tl.trans(key)), value, acc, row_sum, row_max, qk_scale
            )
    else:
        q_b = Q_DESC.load([first_row + block * BLOCK_M + HALF, 0])
        row_max_b = tl.full((HALF,), float("-inf"), tl.float32)
        row_sum_b = tl.zeros((HALF,), tl.float32)
        acc_b = tl.zeros((HALF, HEAD_DIM), tl.float32)
        for tile in tl.range(0, length // BLOCK_N, warp_specialize=WARP_SPECIALIZE):
            key = K_DESC.load([first_row + tile * BLOCK_N, 0])
            value = V_DESC.load([first_row + tile * BLOCK_N, 0])
            scores = tl.dot(q, tl.trans(key))
            scores_b = tl.dot(q_b, tl.trans(key))
            acc, row_sum, row_max = online_softmax_step(
                scores, value, acc, row_sum, row_max, qk_scale
            )
            acc_b, row_sum_b, row_max_b = online_softmax_step(
                scores_b, value, acc_b, row_sum_b, row_max_b, qk_scale
            )
        store_rows(OUT, first_row, rows + HALF, acc_b, row_sum_b, HEAD_DIM)
    store_rows(OUT, first_row, rows, acc, row_sum, HEAD_DIM)


@triton.jit
def plain_grad_query(
    Q_DESC,
    K_DESC,
    V_DESC,
    G_DESC,
    LSE,
    DELTA,
    GRAD_Q,
    length,
    qk_scale,
    scale,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    WARP_SPECIALIZE: tl.constexpr,
):
    """dQ = scale · dS K for one block of query rows (``LSE`` in base 2, ``DELTA`` the rows'
    dO·O)."""
    block = tl.program_id(0)
    first_row = tl.program_id(1) * length
    rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
    q = Q_DESC.load([first_row + block * BLOCK_M, 0])
    grad_out = G_DESC.load([first_row + block * BLOCK_M, 0])
    lse = tl.load(LSE + first_row + rows)
    delta = tl.load(DELTA + first_row + rows)
    grad_q = tl.zeros((BLOCK_M, HEAD_DIM), tl.float32)
    for tile in tl.range(0, length // BLOCK_N, warp_specialize=WARP_SPECIALIZE):
        key = K_DESC.load([first_row + tile * BLOCK_N, 0])
        value = V_DESC.load([first_row + tile * BLOCK_N, 0])
        probs = tl.exp2(tl.dot(q, tl.trans(key)) * qk_scale - lse[:, None])
        grad_probs = tl.dot(grad_out, tl.trans(value))
        grad_scores = probs * (grad_probs - delta[:, None])
        grad_q = tl.dot(grad_scores.to(key.dtype), key, grad_q)
    dims = tl.arange(0, HEAD_DIM)
    tl.store(
        GRAD_Q + (first_row + rows[:, None]) * HEAD_DIM + dims[None, :],
        (grad_q * scale).to(GRAD_Q.dtype.element_ty),
    )


@triton.jit
def plain_grad_key_value(
    Q_DESC,
    K_DESC,
    V_DESC,
    G_DESC,
    LSE,
    DELTA,
    GRAD_K,
    GRAD_V,
    length,
    qk_scale,
    scale,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    WARP_SPECIALIZE: tl.constexpr,
):
    """dK = scale · dSᵀ Q and dV = Pᵀ dO for one block of ``BLOCK_N`` keys, looping over query
    tiles of ``BLOCK_M`` rows."""
    block = tl.program_id(0)
    first_row = tl.program_id(1) * length
    cols = block * BLOCK_N + tl.arange(0, BLOCK_N)
    key = K_DESC.load([first_row + block * BLOCK_N, 0])
    value = V_DESC.load([first_row + block * BLOCK_N, 0])
    grad_k = tl.zeros((BLOCK_N, HEAD_DIM), tl.float32)
    grad_v = tl.zeros((BLOCK_N, HEAD_DIM), tl.float32)
    for tile in tl.range(0, length // BLOCK_M, warp_specialize=WARP_SPECIALIZE):
        rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
        q = Q_DESC.load([first_row + tile * BLOCK_M, 0])
        grad_out = G_DESC.load([first_row + tile * BLOCK_M, 0])
        lse = tl.load(LSE + first_row + rows)
        delta = tl.load(DELTA + first_row + rows)
        probs_t = tl.exp2(tl.dot(key, tl.trans(q)) * qk_scale - lse[None, :])
        grad_v = tl.dot(probs_t.to(grad_out.dtype), grad_out, grad_v)
        grad_probs_t = tl.dot(value, tl.trans(grad_out))
        grad_scores_t = probs_t * (grad_probs_t - delta[None, :])
        grad_k = tl.dot(grad_scores_t.to(q.dtype), q, grad_k)
    dims = tl.arange(0, HEAD_DIM)
    offsets = (first_row + cols[:, None]) * HEAD_DIM + dims[None, :]
    tl.store(GRAD_K + offsets, (grad_k * scale).to(GRAD_K.dtype.element_ty))
    tl.store(GRAD_V + offsets, grad_v.to(GRAD_V.dtype.element_ty))


@dataclass(frozen=True)
class Config:
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    warp_specialize: bool
    halves: int = 1

    @property
    def label(self) -> str:
        return (
            f"{self.block_m}x{self.block_n} w{self.num_warps} s{self.num_stages}"
            + (" ws" if self.warp_specialize else "")
            + (" h2" if self.halves == 2 else "")
        )


#: Each tile configuration without and with warp specialisation (the ones that compile with it
#: for sm_90 under Triton 3.6; with 8 warps Triton leaves the loop unspecialised), the usual
#: 8-warp Hopper tile, and two interleaved halves of 64 rows. The specialised ones come last:
#: should one hang (Triton's Hopper specialisation is young), the others are measured.
TILES = ((64, 64, 3), (128, 64, 3), (128, 128, 2))
CONFIGS = (
    [Config(bm, bn, 4, stages, False) for bm, bn, stages in TILES]
    + [
        Config(128, 128, 8, 2, False),
        Config(128, 64, 4, 3, False, halves=2),
        Config(128, 64, 4, 2, False, halves=2),
    ]
    + [Config(bm, bn, 4, stages, True) for bm, bn, stages in TILES]
)


def plain_attention(q, k, v, config: Config):
    batch, heads, length, head_dim = q.shape
    if length % config.block_m or length % config.block_n:
        raise ValueError(f"length {length} must be a multiple of the blocks ({config.label})")
    flat = [t.reshape(batch * heads * length, head_dim) for t in (q, k, v)]
    query_rows = config.block_m // config.halves
    descriptors = [
        TensorDescriptor(t, list(t.shape), list(t.stride()), [rows, head_dim])
        for t, rows in zip(flat, (query_rows, config.block_n, config.block_n), strict=True)
    ]
    out = torch.empty_like(q)
    plain_forward[(length // config.block_m, batch * heads)](
        *descriptors,
        out,
        length,
        head_dim**-0.5 * LOG2E,
        BLOCK_M=config.block_m,
        BLOCK_N=config.block_n,
        HEAD_DIM=head_dim,
        WARP_SPECIALIZE=config.warp_specialize,
        HALVES=config.halves,
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )
    return out


#: The backward pair (dQ kernel, then dK/dV kernel), without and then with warp specialisation.
BACKWARD_CONFIGS = [
    Config(bm, bn, 4, 2, ws) for ws in (False, True) for bm, bn in ((64, 64), (64, 128))
]


def _descriptor(t: torch.Tensor, rows: int):
    flat = t.reshape(-1, t.shape[-1])
    return TensorDescriptor(flat, list(flat.shape), list(flat.stride()), [rows, t.shape[-1]])


def plain_backward(q, k, v, grad_out, lse, delta, config: Config):
    """dQ, dK, dV of plain attention by the two probe kernels (``lse`` in base 2)."""
    batch, heads, length, head_dim = q.shape
    if length % config.block_m or length % config.block_n:
        raise ValueError(f"length {length} must be a multiple of the blocks ({config.label})")
    scale = head_dim**-0.5
    grads = [torch.empty_like(t) for t in (q, k, v)]
    inputs = (
        _descriptor(q, config.block_m),
        _descriptor(k, config.block_n),
        _descriptor(v, config.block_n),
        _descriptor(grad_out, config.block_m),
        lse,
        delta,
    )
    scales = (length, scale * LOG2E, scale)
    options = dict(
        BLOCK_M=config.block_m,
        BLOCK_N=config.block_n,
        HEAD_DIM=head_dim,
        WARP_SPECIALIZE=config.warp_specialize,
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )
    grid = (length // config.block_m, batch * heads)
    plain_grad_query[grid](*inputs, grads[0], *scales, **options)
    grid = (length // config.block_n, batch * heads)
    plain_grad_key_value[grid](*inputs, grads[1], grads[2], *scales, **options)
    return grads


def _row_statistics(q, k, out, grad_out, chunk=256):
    """Base-2 log-sum-exp of each row's scaled logits, and rowsum(dO · O); float32, flat."""
    scale = q.shape[-1] ** -0.5
    keys_t = k.float().transpose(-1, -2)
    lse = torch.cat(
        [
            torch.logsumexp((q[..., i : i + chunk, :].float() @ keys_t) * scale, -1)
            for i in range(0, q.shape[-2], chunk)
        ],
        dim=-1,
    )
    delta = (grad_out.float() * out.float()).sum(-1)
    return (lse * LOG2E).reshape(-1).contiguous(), delta.reshape(-1).contiguous()


def _sdpa_forward(q, k, v):
    with torch.no_grad():
        return F.scaled_dot_product_attention(q, k, v)


def _sdpa_forward_backward(leaves, grad_out):
    return torch.autograd.grad(F.scaled_dot_product_attention(*leaves), leaves, grad_out)


def run_backward_probe(
    lengths,
    *,
    device="cuda",
    dtype=torch.bfloat16,
    batch=2,
    heads=16,
    calls=10,
    configs=BACKWARD_CONFIGS,
    report=print,
) -> list[dict]:
    """One row per (length, config): queued ms of the two backward kernels, its ratio to SDPA's
    backward (its forward+backward minus its forward), and the largest difference of dQ, dK, dV
    from SDPA's, relative to each one's largest entry."""
    device = torch.device(device)
    if triton_shaw._interpreting():
        triton_shaw._interpreter_loop_bounds()
    rows = []
    for length in lengths:
        gen = torch.Generator().manual_seed(length)
        q, k, v, grad_out = (
            torch.randn(batch, heads, length, 64, generator=gen).to(device, dtype) for _ in range(4)
        )
        leaves = [t.detach().requires_grad_() for t in (q, k, v)]
        out = F.scaled_dot_product_attention(*leaves)
        want = torch.autograd.grad(out, leaves, grad_out)
        lse, delta = _row_statistics(q, k, out.detach(), grad_out)

        sdpa_ms = queued_ms(
            functools.partial(_sdpa_forward_backward, leaves, grad_out), device, calls, 3
        ) - queued_ms(functools.partial(_sdpa_forward, q, k, v), device, calls, 3)
        rows.append({"length": length, "kernel": "sdpa backward", "bwd_ms_queued": sdpa_ms})
        report(f"{length:>6} {'sdpa backward':<22} {sdpa_ms:8.3f} ms (fwd+bwd minus fwd)")
        for config in configs:
            row = {"length": length, "kernel": f"backward {config.label}"}
            try:
                got = plain_backward(q, k, v, grad_out, lse, delta, config)
                row["max_error"] = max(
                    ((g.float() - w.float()).abs().max() / w.float().abs().max()).item()
                    for g, w in zip(got, want, strict=True)
                )
                step = functools.partial(plain_backward, q, k, v, grad_out, lse, delta, config)
                row["bwd_ms_queued"] = queued_ms(step, device, calls, 3)
                row["x_sdpa"] = row["bwd_ms_queued"] / sdpa_ms
                report(
                    f"{length:>6} {row['kernel']:<22} {row['bwd_ms_queued']:8.3f} ms "
                    f"{row['x_sdpa']:6.2f}x SDPA  max |error| {row['max_error']:.1e} (relative)"
                )
            except Exception as error:
                row["error"] = f"{type(error).__name__}: {str(error)[:200]}"
                report(f"{length:>6} {row['kernel']:<22} {row['error'][:100]}")
            rows.append(row)
    return rows


def run_probe(
    lengths,
    *,
    device="cuda",
    dtype=torch.bfloat16,
    batch=2,
    heads=16,
    calls=10,
    configs=CONFIGS,
    report=print,
) -> list[dict]:
    """One row per (length, config): queued ms per forward, its ratio to SDPA's, and the largest
    difference from SDPA's output; SDPA's own row first at each length."""
    device = torch.device(device)
    if triton_shaw._interpreting():
        triton_shaw._interpreter_loop_bounds()  # the interpreter under NumPy >= 2.4
    rows = []
    for length in lengths:
        gen = torch.Generator().manual_seed(length)
        q, k, v = (
            torch.randn(batch, heads, length, 64, generator=gen).to(device, dtype) for _ in range(3)
        )
        want = F.scaled_dot_product_attention(q, k, v)
        sdpa = functools.partial(F.scaled_dot_product_attention, q, k, v)
        sdpa_ms = queued_ms(sdpa, device, calls, 3)
        rows.append({"length": length, "kernel": "sdpa", "fwd_ms_queued": sdpa_ms})
        report(f"{length:>6} {'sdpa':<22} {sdpa_ms:8.3f} ms")
        for config in configs:
            row = {"length": length, "kernel": config.label}
            try:
                got = plain_attention(q, k, v, config)
                row["max_error"] = (got.float() - want.float()).abs().max().item()
                step = functools.partial(plain_attention, q, k, v, config)
                row["fwd_ms_queued"] = queued_ms(step, device, calls, 3)
                row["x_sdpa"] = row["fwd_ms_queued"] / sdpa_ms
                report(
                    f"{length:>6} {config.label:<22} {row['fwd_ms_queued']:8.3f} ms "
                    f"{row['x_sdpa']:6.2f}x SDPA  max |error| {row['max_error']:.1e}"
                )
            except Exception as error:  # a configuration this card or compiler refuses
                row["error"] = f"{type(error).__name__}: {str(error)[:200]}"
                report(f"{length:>6} {config.label:<22} {row['error'][:100]}")
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="4096,8192")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    on_cpu = args.device == "cpu"
    print(f"triton {triton.__version__}, torch {torch.__version__}, {args.device}")
    options = dict(
        device=args.device,
        # the interpreter's bfloat16 dot is wrong; tiny shapes there
        dtype=torch.float16 if on_cpu else torch.bfloat16,
        batch=1 if on_cpu else 2,
        heads=2 if on_cpu else 16,
        calls=1 if on_cpu else 10,
    )
    lengths = [int(n) for n in args.lengths.split(",")]
    run_probe(lengths, **options)
    run_backward_probe(lengths, **options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
