"""Dropout drawn inside the Triton kernels: what the reference comparisons in ``test_triton.py``
do not pin down (found by mutation testing of the dropout code).

Those comparisons give the reference the mask ``triton_dropout_mask`` writes out, so any change
to the draw that every kernel shares (which Philox word, which counter holds the row, ``>`` for
``>=``) passes them. Here the mask is checked against Philox-4x32-10 written out in numpy from
its definition (counter ``(c, r, batch·head, 0)``, key ``seed``), and the edges of the checks
and of the eager fallback are pinned. Under the interpreter on the CPU, or on CUDA.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

triton = pytest.importorskip("triton")

from backend_cases import make_case  # noqa: E402

from relpos.attention import FusedDropout, api, triton_shaw  # noqa: E402
from relpos.attention.eager import eager_attention  # noqa: E402
from relpos.attention.triton_shaw import (  # noqa: E402
    KernelLaunch,
    TritonBlocks,
    triton_attention,
    triton_dropout_mask,
)

INTERPRETING = triton_shaw._interpreting()
DEVICE = "cpu" if INTERPRETING else "cuda"
pytestmark = pytest.mark.skipif(
    not INTERPRETING and not torch.cuda.is_available(),
    reason="needs CUDA or TRITON_INTERPRET=1",
)

# ------------------------------------------------------------ Philox-4x32-10, from its definition

_WORD = np.uint64(0xFFFFFFFF)


def _philox(seed, c0, c1, c2, c3):
    """The first output word of Philox-4x32 with 10 rounds (Salmon et al. 2011; the constants
    are the paper's) for counters ``(c0, c1, c2, c3)`` (broadcast) and the 64-bit key ``seed``."""
    c0, c1, c2, c3 = np.broadcast_arrays(
        *(np.asarray(c, dtype=np.uint64) for c in (c0, c1, c2, c3))
    )
    k0, k1 = np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32)
    for _ in range(10):
        high_b, high_a = np.uint64(0xCD9E8D57) * c2, np.uint64(0xD2511F53) * c0
        c0, c1, c2, c3 = (
            (high_b >> np.uint64(32)) ^ c1 ^ k0,
            high_b & _WORD,
            (high_a >> np.uint64(32)) ^ c3 ^ k1,
            high_a & _WORD,
        )
        k0, k1 = (k0 + np.uint64(0x9E3779B9)) & _WORD, (k1 + np.uint64(0xBB67AE85)) & _WORD
    return c0


def _uniform(bits):
    """Triton's ``uint_to_uniform_float`` of 32-bit words: the word as an int32 ``x``, folded to
    ``x`` or ``-x - 1`` (>= 0), times 2**-31 in float32."""
    signed = bits.astype(np.uint32).view(np.int32).astype(np.int64)
    folded = np.where(signed < 0, -signed - 1, signed)
    return folded.astype(np.float32) * np.float32(4.6566127342e-10)


def _draws(seed, batch_heads, q_len, k_len):
    """``(B·H, Lq, Lk)`` uniform draws: weight ``(r, c)`` of batch·head ``n`` gets counter
    ``(c, r, n, 0)``."""
    n = np.arange(batch_heads)[:, None, None]
    r = np.arange(q_len)[None, :, None]
    c = np.arange(k_len)[None, None, :]
    return _uniform(_philox(seed, c, r, n, 0))


@pytest.mark.parametrize("seed", [5, 2**40 + 3])  # the second one has a high key word
def test_the_mask_is_philox_of_column_row_and_batch_head(seed):
    """Every kept weight is exactly where the documented draw (counter ``(c, r, n, 0)``, the
    first Philox word, kept when ``>= p``) says, with ``1 / (1 - p)`` there and 0 elsewhere."""
    drop = FusedDropout(0.3, seed)
    mask = triton_dropout_mask(drop, 2, 2, 5, 7, DEVICE).cpu()
    keep = torch.from_numpy(_draws(seed, 4, 5, 7) >= np.float32(0.3)).view(2, 2, 5, 7)
    assert 0 < keep.sum() < keep.numel()
    expected = keep.float() / (1 - 0.3)
    torch.testing.assert_close(mask, expected, rtol=0, atol=0)


def test_a_weight_whose_draw_equals_p_is_kept():
    """Kept when the draw is ``>= p``: with ``p`` set to the draw of weight (0, 0) itself it is
    kept, and with the next float32 above it dropped."""
    seed = 11
    draw = _draws(seed, 1, 1, 1)[0, 0, 0]
    at, above = float(draw), float(np.nextafter(draw, np.float32(1)))
    assert 0.0 < at < above < 1.0
    kept = triton_dropout_mask(FusedDropout(at, seed), 1, 1, 1, 1, DEVICE)
    assert kept.item() == pytest.approx(1 / (1 - at), rel=1e-6)
    assert triton_dropout_mask(FusedDropout(above, seed), 1, 1, 1, 1, DEVICE).item() == 0.0


# ------------------------------------------------------------ the checks, at their edges


def test_fused_dropout_seed_bounds_are_exact():
    """Seeds are the ints of ``[0, 2**63)``, both ends exact (0 is a seed), and a bool is no
    seed."""
    for seed in (0, 2**63 - 1):
        assert FusedDropout(0.5, seed).seed == seed
    with pytest.raises(
        ValueError, match=r"seed must be in \[0, 2\*\*63\), got 9223372036854775808"
    ):
        FusedDropout(0.5, 2**63)
    for seed in (True, False):
        with pytest.raises(TypeError, match="seed must be an int, got"):
            FusedDropout(0.5, seed)


def test_the_mask_refuses_bool_sizes_and_takes_the_largest_grid(monkeypatch):
    """``triton_dropout_mask`` refuses a bool for a size (``True`` is no count), and its limit on
    batch × heads is inclusive: exactly ``MAX_BATCH_HEADS`` runs (here lowered to 6, so that the
    interpreter runs few programs), one more is refused, unless the mask is empty (then nothing
    is launched)."""
    drop = FusedDropout(0.5, 1)
    for sizes in ((True, 1, 4, 4), (1, 1, 4, False)):
        with pytest.raises(ValueError, match="must be an int >= 0, got (True|False)"):
            triton_dropout_mask(drop, *sizes, DEVICE)
    monkeypatch.setattr(triton_shaw, "MAX_BATCH_HEADS", 6)
    assert triton_dropout_mask(drop, 2, 3, 2, 2, DEVICE).shape == (2, 3, 2, 2)
    with pytest.raises(ValueError, match="batch × heads = 7 > 6"):
        triton_dropout_mask(drop, 7, 1, 2, 2, DEVICE)
    assert triton_dropout_mask(drop, 7, 1, 0, 2, DEVICE).shape == (7, 1, 0, 2)


def test_dropout_blocks_drop_warp_specialisation_from_every_kernel():
    """``warp_specialize`` runs the tails in a kernel of their own, which has no dropout:
    ``dropout_blocks`` turns it off in all three launches and keeps the rest."""
    ws = KernelLaunch(64, 32, band_block=32, num_stages=2, tma=True, warp_specialize=True)
    plain = KernelLaunch(64, 32, band_block=32, num_stages=2, tma=True)
    assert triton_shaw.dropout_blocks(TritonBlocks(ws, ws, ws)) == TritonBlocks(plain, plain, plain)


def test_compile_kernels_with_dropout_launches_the_dropout_kernels():
    """``compile_kernels(dropout=True)`` (what the sm_90 register and spill figures are taken
    from) compiles every kernel with ``DROPOUT`` set, the forward in one-half blocks without a
    tails kernel. Run in a fresh process without the interpreter, with Triton's compiler
    replaced by a stand-in that returns the compile-time flags it was given (nothing is
    compiled: a second or two)."""
    script = (
        "import json, triton, triton.compiler\n"
        "from relpos.attention.triton_shaw import compile_kernels, default_blocks\n"
        "class Source:\n"
        "    def __init__(self, fn, signature, constexprs, attrs):\n"
        "        self.flags = {fn.arg_names[i]: v for (i,), v in constexprs.items()}\n"
        "triton.compiler.ASTSource = Source\n"
        "triton.compile = lambda source, target, options: source.flags\n"
        "flags = {d: compile_kernels(16, dropout=d) for d in (False, True)}\n"
        "asked = default_blocks(16).forward\n"
        "print(json.dumps([flags[False], flags[True], asked.block_m // asked.halves]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    plain, dropout, half_rows = json.loads(result.stdout.strip().splitlines()[-1])
    assert sorted(dropout) == ["forward", "grad_key_value", "grad_prepare", "grad_query"]
    assert all(flags["DROPOUT"] for flags in dropout.values())
    assert not any(flags["DROPOUT"] for flags in plain.values())
    forward = dropout["forward"]
    assert (forward["HALVES"], forward["FROM_TAILS"], forward["BLOCK_M"]) == (1, False, half_rows)
    assert not dropout["grad_query"]["FROM_TAILS"] and not dropout["grad_key_value"]["FROM_TAILS"]


# ------------------------------------------------------------ the eager fallback's mask


def test_dense_mask_drops_with_probability_p():
    """``FusedDropout.dense_mask`` keeps each weight with probability ``1 - p`` at ``1 / (1 - p)``
    (at ``p = 0.25``, not ``p``: the symmetric ``p = 0.5`` cannot tell them apart)."""
    mask = FusedDropout(0.25, 3).dense_mask((4, 4, 16, 16), dtype=torch.float64, device="cpu")
    assert set(mask.unique().tolist()) == {0.0, 4 / 3}
    kept = (mask > 0).double().mean().item()  # 4,096 draws: standard deviation 0.007
    assert abs(kept - 0.75) < 0.04, kept


def test_the_fallback_draws_a_mask_per_batch_entry_in_the_inputs_precision():
    """Float64 inputs are not the kernels' (on either device): the eager backend runs on the
    ``(B, H, Lq, Lk)`` mask ``dense_mask`` draws from the seed, in float64, and the result is
    bit for bit that of the eager backend given that mask."""
    index, tensors = make_case(
        batch=2, q_len=6, k_len=6, head_dim=8, dtype=torch.float64, device=DEVICE
    )
    q, k, v = (tensors[name] for name in ("query", "key", "value"))
    tables = dict(key_table=tensors["key_table"], value_table=tensors["value_table"])
    common = dict(index=index, attn_mask=None, is_causal=False, scale=0.3, **tables)
    drop = FusedDropout(0.3, 21)
    out = triton_attention(q, k, v, **common, dropout_mask=drop)
    dense = drop.dense_mask((2, 2, 6, 6), dtype=torch.float64, device=q.device)
    assert not torch.equal(dense[0], dense[1])
    expected = eager_attention(q, k, v, **common, dropout_mask=dense)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="a CUDA generator needs CUDA")
def test_the_seed_comes_from_a_cuda_generator_on_its_device():
    """``shaw_attention(generator=)`` may be given a CUDA generator: the seed is drawn on the
    generator's device (torch refuses a CUDA generator for a CPU draw)."""
    seed = api._dropout_seed(torch.Generator("cuda").manual_seed(3))
    again = torch.randint(
        2**31 - 1, (), generator=torch.Generator("cuda").manual_seed(3), device="cuda"
    )
    assert seed == int(again)
