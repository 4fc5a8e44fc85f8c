"""Figures that explain: the encodings themselves, what a trained model learned, and how well it
generalised.

Every function writes one PNG and returns its path. matplotlib is imported lazily (it is an
optional dependency) and always with the non-interactive Agg backend, so the figures render on
headless machines.

* :func:`plot_sinusoidal` — the sinusoidal encoding as a heatmap, and the dot products between
  positions (they depend on the distance ``p - q`` only: the absolute encoding hides a relative
  one, Vaswani et al. Sec. 3.5);
* :func:`plot_randomized` — which positions a sequence gets with and without Ruoss et al.'s
  random draws, and how often training reaches each position (:func:`position_coverage` has the
  numbers);
* :func:`plot_index` — the seed's relative index matrix ``clip(j - i, -k, k) + k``;
* :func:`plot_distances` — what each scheme makes of the distance ``j - i`` (table rows,
  buckets, biases, RoPE's decay), side by side (:func:`distance_profiles` has the numbers);
* :func:`plot_window` — Swin's 2D window index, and which rows of its ``(2Wh - 1)(2Ww - 1)``
  table one query patch reads (:func:`window_views` has the numbers);
* :func:`plot_vectors` — cosine similarity of a trained model's ``2k + 1`` relative key vectors;
* :func:`plot_attention` — attention maps of a trained model on one example;
* :func:`plot_accuracy` — exact-match accuracy against length from a ``relpos compare`` folder.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import torch

from ..attention.index import relative_position_index
from ..schemes.randomized import random_ordered_positions
from ..schemes.sinusoidal import sinusoidal_encoding

__all__ = [
    "plot_sinusoidal",
    "position_coverage",
    "plot_randomized",
    "plot_index",
    "distance_profiles",
    "plot_distances",
    "window_views",
    "plot_window",
    "plot_vectors",
    "plot_attention",
    "plot_accuracy",
    "relative_key_tables",
    "attention_maps",
    "find_run",
    "plot_run_vectors",
    "plot_run_attention",
]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: never open a window, also under a display
    import matplotlib.pyplot as plt

    return plt


#: file types the figures can be written as (matplotlib picks the format from the suffix).
FORMATS = (".png", ".pdf", ".svg")


def _save(fig, out: str | Path) -> Path:
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise ValueError(f"out must end in {', '.join(FORMATS)}, got {str(out)!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    return out


#: the largest sequence length (or span) a figure draws: beyond it an L x L panel is no longer
#: readable, and its tensors grow past memory (L = 100,000 asks for 80 GB).
MAX_FIGURE_LENGTH = 4096


def _check_positive(value: int, name: str, *, most: int = MAX_FIGURE_LENGTH) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= most:
        raise ValueError(f"{name} must be an int in 1..{most}, got {value!r}")


# --------------------------------------------------------------------------- the encodings


def plot_sinusoidal(
    out: str | Path, *, length: int = 64, dim: int = 64, base: float = 10000.0
) -> Path:
    """Heatmap of ``PE(p, i)`` for ``p < length``, ``i < dim``, beside ``PE(p)·PE(q)``."""
    _check_positive(length, "length")
    _check_positive(dim, "dim")
    plt = _pyplot()
    encoding = sinusoidal_encoding(torch.arange(length), dim, base=base)  # (L, dim)
    similarity = encoding @ encoding.T  # (L, L)

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5))
    image = left.imshow(encoding.numpy(), aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1)
    left.set_xlabel("channel i (even: sin, odd: cos)")
    left.set_ylabel("position p")
    left.set_title(
        f"PE(p, 2t) = sin(p·ω_t), PE(p, 2t+1) = cos(p·ω_t)\nω_t = {base:g}^(−2t/d), d = {dim}",
        fontsize=10,
    )
    fig.colorbar(image, ax=left, fraction=0.046)

    image = right.imshow(similarity.numpy(), cmap="viridis")
    right.set_xlabel("position q")
    right.set_ylabel("position p")
    right.set_title(
        "PE(p) · PE(q) = Σ_t cos((p − q)·ω_t)\nconstant along diagonals: it depends on p − q only",
        fontsize=10,
    )
    fig.colorbar(image, ax=right, fraction=0.046)
    fig.suptitle(
        "Sinusoidal absolute positions (Vaswani et al. 2017): one fixed vector per position"
    )
    return _save(fig, out)


def position_coverage(
    train_length: int, max_position: int, *, sequences: int = 20_000, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """How often a training sequence holds each position ``p < max_position``: ``(consecutive,
    randomized)``, each ``(max_position,)``, over ``sequences`` training sequences whose lengths
    are uniform in ``1..train_length``.

    Consecutive positions ``0..n-1`` reach ``p`` only when ``n > p``; sorted random draws from
    ``[0, max_position)`` (:func:`~relpos.schemes.randomized.random_ordered_positions`) reach every
    ``p`` equally, ``E[n] / max_position`` of the time.
    """
    _check_positive(train_length, "train_length")
    _check_positive(max_position, "max_position")
    if train_length > max_position:
        raise ValueError(
            f"train_length ({train_length}) must be <= max_position ({max_position}): a sequence "
            "needs that many distinct positions"
        )
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, train_length + 1, (sequences,), generator=generator)
    drawn = random_ordered_positions(lengths, train_length, max_position, generator=generator)
    real = torch.arange(train_length)[None, :] < lengths[:, None]  # (N, n): not padding
    randomized = torch.bincount(drawn[real], minlength=max_position).double() / sequences
    consecutive = torch.zeros(max_position, dtype=torch.float64)
    consecutive[:train_length] = (
        torch.bincount(torch.arange(train_length).expand_as(real)[real], minlength=train_length)
        .double()
        .div(sequences)
    )
    return consecutive, randomized


def plot_randomized(
    out: str | Path,
    *,
    train_length: int = 8,
    max_position: int = 64,
    draws: int = 4,
    seed: int = 0,
) -> Path:
    """Ruoss et al. (2023) in two panels: the positions a training and a test sequence get, as
    ``0, 1, 2, …`` and as sorted random draws from ``[0, max_position)``; and how often training
    reaches each position either way (:func:`position_coverage`)."""
    _check_positive(draws, "draws", most=16)
    consecutive, randomized = position_coverage(train_length, max_position, seed=seed)
    test_length = min(2 * train_length, max_position)
    generator = torch.Generator().manual_seed(seed + 1)
    rows = [  # (label, positions, drawn at random?)
        (f"0, 1, 2, … (train, n = {train_length})", list(range(train_length)), False),
        (f"0, 1, 2, … (test, n = {test_length})", list(range(test_length)), False),
    ]
    for draw in range(draws):
        lengths = torch.tensor([train_length if draw < draws - 1 else test_length])
        positions = random_ordered_positions(
            lengths, int(lengths[0]), max_position, generator=generator
        )[0].tolist()
        kind = "train" if draw < draws - 1 else "test"
        rows.append((f"random draw {draw + 1} ({kind}, n = {len(positions)})", positions, True))
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 0.45 * len(rows) + 3.2))
    for y, (_, positions, drawn) in enumerate(reversed(rows)):
        if drawn:  # every position below max_position is trained
            left.scatter(positions, [y] * len(positions), color="tab:orange", s=22, zorder=3)
        else:
            seen = [p for p in positions if p < train_length]
            unseen = [p for p in positions if p >= train_length]
            left.scatter(seen, [y] * len(seen), color="tab:blue", s=22, zorder=3)
            left.scatter(unseen, [y] * len(unseen), color="tab:red", marker="x", s=30, zorder=3)
        left.axhline(y, color="0.9", lw=0.8, zorder=1)
    left.set_yticks(range(len(rows)), [label for label, _, _ in reversed(rows)], fontsize=8)
    left.set_xlim(-1, max_position)
    left.set_xlabel(f"position (range [0, {max_position}))")
    left.set_title(
        "Which positions a sequence gets\n"
        "blue: trained, red ×: never trained (0, 1, 2, … past the training length)",
        fontsize=10,
    )
    right.bar(range(max_position), consecutive.numpy(), color="tab:blue", alpha=0.7,
              label="0, 1, 2, …")  # fmt: skip
    right.bar(range(max_position), randomized.numpy(), color="tab:orange", alpha=0.7,
              label="random sorted draws")  # fmt: skip
    right.set_xlabel("position p")
    right.set_ylabel("share of training sequences holding p")
    right.set_title(
        f"How often training reaches each position (lengths 1–{train_length}, uniform)\n"
        f"0, 1, 2, …: only p < {train_length}; random draws: every p < {max_position}, rarely",
        fontsize=10,
    )
    right.legend(fontsize=8)
    fig.suptitle(
        "Randomized positions (Ruoss et al. 2023): an absolute encoding whose every position "
        "is trained"
    )
    return _save(fig, out)


def plot_index(
    out: str | Path, *, length: int = 10, max_distance: int = 3, tokens: list[str] | None = None
) -> Path:
    """The relative index matrix, every cell annotated (default: the seed's ``L = 10, k = 3``)."""
    if tokens is not None:
        if not tokens:
            raise ValueError("tokens must not be empty")
        length = len(tokens)
    _check_positive(length, "length")
    if isinstance(max_distance, bool) or not isinstance(max_distance, int) or max_distance < 0:
        raise ValueError(f"max_distance must be an int >= 0, got {max_distance!r}")
    labels = tokens or [str(i) for i in range(length)]
    k = max_distance
    index = relative_position_index(length, length, k)  # (L, L)
    plt = _pyplot()
    size = min(max(4.0, 0.55 * length + 2), 12.0)  # past ~18 tokens the cells just shrink
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(index.numpy(), cmap="coolwarm", vmin=0, vmax=max(2 * k, 1))
    fontsize = 10 if length <= 16 else 7 if length <= 32 else 0
    if fontsize:
        for i in range(length):
            for j in range(length):
                value = int(index[i, j])
                # Bold marks the clipped cells: every distance beyond k shares one vector.
                clipped = abs(j - i) > k
                ax.text(
                    j,
                    i,
                    str(value),
                    ha="center",
                    va="center",
                    fontsize=fontsize,
                    color="white" if value in (0, 2 * k) and k > 0 else "black",
                    fontweight="bold" if clipped else "normal",
                )
    # At most ~32 ticks per axis: beyond that every label would overlap its neighbours.
    ticks = range(0, length, math.ceil(length / 32))
    ax.set_xticks(ticks, [labels[t] for t in ticks], rotation=45 if tokens else 0)
    ax.set_yticks(ticks, [labels[t] for t in ticks])
    ax.set_xlabel("key position j")
    ax.set_ylabel("query position i (the centre)")
    ax.xaxis.set_label_position("top")
    ax.xaxis.tick_top()
    colorbar = fig.colorbar(
        image, ax=ax, fraction=0.046, ticks=range(0, 2 * k + 1, math.ceil((2 * k + 1) / 20))
    )
    colorbar.set_label(f"table row (0 … {2 * k}); row {k} is the token itself")
    note = "\n(bold: distance beyond k, clipped to the first/last row)" if fontsize else ""
    ax.set_title(
        f"clip(j − i, −{k}, {k}) + {k}: {2 * k + 1} learned vectors cover every length{note}",
        fontsize=10,
        pad=28,
    )
    return _save(fig, out)


def window_views(
    window: tuple[int, int], query: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Swin's window index seen from one query patch ``query = (y, x)`` of a ``window = (Wh, Ww)``.

    Returns ``index (N, N)`` (:func:`~relpos.schemes.swin.swin_relative_position_index`,
    ``N = Wh·Ww``), ``key_rows (Wh, Ww)``: the table row each key patch uses for this query (its
    row of ``index``, laid out as the window), and ``reads (2Wh - 1, 2Ww - 1)``: which rows of the
    table, laid out by offset ``(dy, dx) = (y_q - y_k, x_q - x_k)``, the query reads — a
    ``Wh x Ww`` block whose place depends on where the query sits.
    """
    from ..schemes.swin import swin_relative_position_index

    window_h, window_w = window
    y, x = query
    if not (0 <= y < window_h and 0 <= x < window_w):
        raise ValueError(f"query patch must lie in the {window_h}x{window_w} window, got {query}")
    index = swin_relative_position_index(window_h, window_w)  # (N, N)
    key_rows = index[y * window_w + x].view(window_h, window_w)  # (Wh, Ww)
    reads = torch.zeros((2 * window_h - 1) * (2 * window_w - 1), dtype=torch.bool)
    reads[key_rows.flatten()] = True
    return index, key_rows, reads.view(2 * window_h - 1, 2 * window_w - 1)


def plot_window(
    out: str | Path, *, window: tuple[int, int] = (4, 4), query: tuple[int, int] | None = None
) -> Path:
    """Swin's 2D relative position index (Liu et al. 2021, Sec. 3.2) in three panels: the
    ``(N, N)`` index of a window, the table row each key patch uses for one query patch (default:
    the centre), and where those rows sit in the ``(2Wh - 1) x (2Ww - 1)`` table."""
    from ..schemes.swin import window_size_pair

    window_h, window_w = window_size_pair(window)
    if max(window_h, window_w) > 16:
        raise ValueError(f"window sides must be <= 16 to draw, got {window_h}x{window_w}")
    query = query if query is not None else ((window_h - 1) // 2, (window_w - 1) // 2)
    index, key_rows, reads = window_views((window_h, window_w), query)
    tokens = window_h * window_w
    rows = reads.numel()
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.8), gridspec_kw={"width_ratios": [1.3, 1, 1.3]})

    ax = axes[0]
    ax.imshow(index.numpy(), cmap="viridis", vmin=0, vmax=rows - 1)
    if tokens <= 16:
        for i in range(tokens):
            for j in range(tokens):
                ax.text(j, i, int(index[i, j]), ha="center", va="center", fontsize=7, color="w")
    ticks = range(0, tokens, math.ceil(tokens / 16))
    labels = [f"{n // window_w},{n % window_w}" for n in ticks]
    ax.set_xticks(ticks, labels, rotation=90, fontsize=7)
    ax.set_yticks(ticks, labels, fontsize=7)
    ax.set_xlabel("key patch (y,x)")
    ax.set_ylabel("query patch (y,x)")
    focus = query[0] * window_w + query[1]
    ax.axhline(focus - 0.5, color="red", lw=1)
    ax.axhline(focus + 0.5, color="red", lw=1)
    ax.set_title(
        f"index of a {window_h}×{window_w} window: {tokens}² pairs, {rows} table rows\n"
        f"(dy + {window_h - 1})·{2 * window_w - 1} + (dx + {window_w - 1}); "
        f"red: query {query[0]},{query[1]}",
        fontsize=10,
    )

    ax = axes[1]
    ax.imshow(key_rows.numpy(), cmap="viridis", vmin=0, vmax=rows - 1)
    for y in range(window_h):
        for x in range(window_w):
            ax.text(x, y, int(key_rows[y, x]), ha="center", va="center", fontsize=9, color="w")
    ax.add_patch(
        plt.Rectangle((query[1] - 0.5, query[0] - 0.5), 1, 1, fill=False, ec="red", lw=2.5)
    )
    ax.set_xticks(range(window_w))
    ax.set_yticks(range(window_h))
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(
        f"the window as query {query[0]},{query[1]} (red) sees it:\n"
        "each key patch's table row (its row of the index)",
        fontsize=10,
    )

    ax = axes[2]
    table = torch.arange(rows).view(2 * window_h - 1, 2 * window_w - 1)
    ax.imshow(reads.numpy(), cmap="Greys", vmin=0, vmax=1.6)
    if rows <= 225:
        for dy in range(2 * window_h - 1):
            for dx in range(2 * window_w - 1):
                ax.text(dx, dy, int(table[dy, dx]), ha="center", va="center", fontsize=7,
                        color="w" if reads[dy, dx] else "0.5")  # fmt: skip
    ax.set_xticks(range(2 * window_w - 1), range(-(window_w - 1), window_w), fontsize=7)
    ax.set_yticks(range(2 * window_h - 1), range(-(window_h - 1), window_h), fontsize=7)
    ax.set_xlabel("dx = x_query − x_key")
    ax.set_ylabel("dy = y_query − y_key")
    ax.set_title(
        f"the bias table by offset: query {query[0]},{query[1]} reads the dark "
        f"{window_h}×{window_w} block\n"
        f"(every query reads {tokens} of the {rows} rows; "
        "the centre row is dy = dx = 0)",
        fontsize=10,
    )
    fig.suptitle(
        "Swin's relative position bias: a 2D offset (dy, dx) names one learned scalar per head; "
        "every window of the image reads the same table"
    )
    fig.tight_layout()
    return _save(fig, out)


# --------------------------------------------------------------------------- trained models


def distance_profiles(
    span: int = 48, max_distance: int = 4, heads: int = 8, head_dim: int = 64
) -> dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """What each scheme makes of the distance ``d = j - i`` for ``|d| <= span``: a panel name →
    curves, each ``(distances, values)`` (both 1-D). Built from the schemes' own functions.

    * ``shaw``: the distance its table sees, ``clip(d, -k, k)`` (row minus ``k``), and ``d``
      itself for a table as long as the input (no clipping);
    * ``deberta``: its row ``δ = clamp(i - j + k, 0, 2k - 1)``, and with log buckets;
    * ``t5``: the bucket of T5's default bias (32 buckets up to 128, bidirectional);
    * ``alibi``: the bias ``-m_h·|d|`` of the first and last of ``heads`` heads, and a middle one;
    * ``rope``: ``q·R_d k / |q||k|`` for ``q = k`` all ones (Su et al.'s long-term decay) — also
      ``PE(p)·PE(p + d)`` of the sinusoidal encoding, normalised: the same sum of cosines.
    """
    from ..schemes.alibi import alibi_slopes
    from ..schemes.deberta import deberta_distance_rows
    from ..schemes.rope import rope_frequencies
    from ..schemes.t5 import t5_relative_bucket

    _check_positive(span, "span")
    if isinstance(max_distance, bool) or not isinstance(max_distance, int) or max_distance < 1:
        raise ValueError(f"max_distance must be an int >= 1, got {max_distance!r}")
    k = max_distance
    distances = torch.arange(-span, span + 1)  # d = j - i
    # Query 0 at position span, keys 0..2·span: key c is at distance c - span, smallest first.
    shaw_rows = relative_position_index(1, 2 * span + 1, k, query_offset=span)[0]
    huang_rows = relative_position_index(1, 2 * span + 1, span, query_offset=span)[0]
    deberta_rows = deberta_distance_rows(1, 2 * span + 1, max_distance=k, query_offset=span)
    log_k = max(k + 2, span)  # log buckets need max_distance > position_buckets // 2 + 1
    deberta_log = deberta_distance_rows(
        1, 2 * span + 1, max_distance=log_k, position_buckets=2 * k, query_offset=span
    )
    slopes = alibi_slopes(heads).double()
    frequencies = rope_frequencies(head_dim).double()  # (D/2,)
    decay = torch.cos(distances.double()[:, None] * frequencies[None, :]).mean(-1)
    return {
        "shaw": {  # as the distance the table sees, row - k, so both share one scale
            f"shaw, k = {k}: clip(j − i, −k, k)": (distances, shaw_rows - k),
            "unclipped (k ≥ the length)": (distances, huang_rows - span),
        },
        "deberta": {
            f"deberta, k = {k}": (distances, deberta_rows),
            f"log buckets: {2 * k} per side, up to {log_k}": (distances, deberta_log),
        },
        "t5": {"t5: 32 buckets up to 128": (distances, t5_relative_bucket(distances))},
        "alibi": {
            f"head {h + 1}, m = {float(slopes[h]):.3g}": (distances, -slopes[h] * distances.abs())
            for h in sorted({0, heads // 2, heads - 1})
        },
        "rope": {f"D = {head_dim}, base 10000": (distances, decay)},
    }


def plot_distances(out: str | Path, *, span: int = 48, max_distance: int = 4) -> Path:
    """One panel per scheme: what it makes of the distance ``j - i`` (:func:`distance_profiles`),
    and Swin's 2D index for a 4×4 window."""
    from ..schemes.swin import swin_relative_position_index

    profiles = distance_profiles(span, max_distance)
    plt = _pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    k = max_distance
    panels = [
        (
            "shaw",
            "Shaw: the distance its table sees (a learned vector each)\n"
            "every |j − i| > k shares an end row",
        ),
        ("deberta", "DeBERTa: row δ(i, j), asymmetric\n(log buckets: V2/V3)"),
        ("t5", "T5: bucket (one learned scalar per head each)\nexact up to 8, then log-spaced"),
        ("alibi", "ALiBi: fixed bias −m_h·|j − i|\nno parameters, no left/right"),
        (
            "rope",
            "RoPE: q·R(j − i)k for q = k = (1, …, 1), normalised\n"
            "= sinusoidal PE(p)·PE(p + j − i): a sum of cosines",
        ),
    ]
    for ax, (name, title) in zip(axes.flat, panels, strict=False):
        for label, (x, y) in profiles[name].items():
            ax.plot(x.numpy(), y.numpy(), drawstyle="steps-mid" if name != "rope" else "default",
                    label=label)  # fmt: skip
        if name in ("shaw", "deberta"):
            ax.axvspan(-k, k, color="0.9", zorder=0)
        ax.axvline(0, color="0.6", lw=0.8)
        ax.set_xlabel("distance j − i (key minus query)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("table row − k")
    axes[0][1].set_ylabel("table row / bucket")
    axes[1][0].set_ylabel("logit bias")
    axes[1][1].set_ylabel("normalised score")
    window = swin_relative_position_index(4, 4)
    swin_ax = axes[1][2]
    image = swin_ax.imshow(window.numpy(), cmap="viridis")
    swin_ax.set_title(
        "Swin: 2D offset index in a 4×4 window\n(2·4 − 1)² = 49 table rows", fontsize=10
    )
    swin_ax.set_xlabel("key patch (row-major)")
    swin_ax.set_ylabel("query patch")
    fig.colorbar(image, ax=swin_ax, fraction=0.046)
    fig.suptitle(
        "What each relative scheme makes of the distance j − i (absolute schemes see positions, "
        "not distances)"
    )
    fig.tight_layout()
    return _save(fig, out)


def relative_key_tables(model: torch.nn.Module) -> list[tuple[str, torch.Tensor, int]]:
    """``(module name, key table, max_left)`` for every Shaw self-attention layer of ``model``.

    Tables come back as ``(H or 1, R, D)`` float tensors, whether shared or per head; row ``b``
    is distance ``b - max_left`` (``max_left = k`` unless the clipping is asymmetric).
    """
    from ..schemes.shaw import ShawRelativePosition

    tables = []
    for name, module in model.named_modules():
        if isinstance(module, ShawRelativePosition) and module.key_table is not None:
            table = module.key_table.detach().float()
            tables.append((name, table if table.dim() == 3 else table[None], module.max_left))
    return tables


def _cosine_similarity(table: torch.Tensor) -> torch.Tensor:
    """``(R, D)`` rows → ``(R, R)`` cosine similarities."""
    unit = torch.nn.functional.normalize(table, dim=-1)
    return unit @ unit.T


def plot_vectors(model: torch.nn.Module, out: str | Path, *, title: str = "") -> Path:
    """Cosine similarity of the ``2k + 1`` relative key vectors ``w^K`` of every layer.

    Per-head tables are shown averaged over heads (the per-head similarity matrices are averaged,
    not the vectors, which would mix unrelated bases).
    """
    tables = relative_key_tables(model)
    if not tables:
        raise ValueError(
            "this model has no Shaw relative key tables to plot (scheme 'shaw' with key_term=True "
            "is needed); train one with e.g. `relpos compare --schemes shaw`"
        )
    plt = _pyplot()
    columns = min(len(tables), 4)
    rows = math.ceil(len(tables) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 4 * rows), squeeze=False)
    for ax in axes.flat[len(tables) :]:
        ax.axis("off")
    for ax, (name, table, max_left) in zip(axes.flat, tables, strict=False):
        similarity = torch.stack([_cosine_similarity(head) for head in table]).mean(0)  # (R, R)
        rows_in_table = similarity.shape[0]
        image = ax.imshow(similarity.numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
        # At most ~9 labels, always one at distance 0 and the rest at multiples of the step.
        step = math.ceil(rows_in_table / 9)
        ticks = [t for t in range(rows_in_table) if (t - max_left) % step == 0]
        labels = [f"{t - max_left:+d}" if t != max_left else "0" for t in ticks]
        ax.set_xticks(ticks, labels, fontsize=8)
        ax.set_yticks(ticks, labels, fontsize=8)
        heads = f", mean of {table.shape[0]} heads" if table.shape[0] > 1 else ""
        ax.set_title(f"{name.removesuffix('.position')}{heads}", fontsize=9)
        ax.set_xlabel("relative distance j − i")
    for ax in axes[:, 0]:
        ax.set_ylabel("relative distance j − i")
    fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.02)
    fig.suptitle(
        title or "Cosine similarity of the learned relative key vectors w^K (per layer)", y=1.02
    )
    return _save(fig, out)


def attention_maps(
    model: torch.nn.Module, forward: Callable[[], object]
) -> list[tuple[str, torch.Tensor]]:
    """Call ``forward()`` (one pass of ``model``, in eval mode) and return every attention
    layer's weights.

    Returns ``(layer name, weights (H, Lq, Lk))`` for the first batch row, in call order.
    Self-attention weights are what the layer's position module computes, whatever the scheme
    (biases, rotations, Shaw's key term): its ``attend`` is run a second time with the identity
    matrix as values, so the output *is* the weight matrix (Shaw's value term, which adds to
    the output, is switched off for that second call only). Cross-attention is content-only
    (:mod:`relpos.models.transformer`), so its weights are ``softmax(q·k / sqrt(D))``.
    """
    from ..layers import MultiheadAttention

    maps: list[tuple[str, torch.Tensor]] = []
    handles, patched = [], {}
    current = {"name": ""}  # the attention layer running now (T5 shares one module per stack)

    def self_attention(position, original):
        def attend(query, key, value, **options):
            output = original(query, key, value, **options)
            batch, heads, _, key_len = (*query.shape[:3], key.shape[2])
            eye = torch.eye(key_len, dtype=query.dtype, device=query.device)
            eye = eye.expand(batch, heads, key_len, key_len)  # (B, H, Lk, Lk)
            value_table = getattr(position, "value_table", None)
            if value_table is not None:
                position.value_table = None
            try:
                weights = original(query, key, eye, **{**options, "dropout_p": 0.0})
            finally:
                if value_table is not None:
                    position.value_table = value_table
            maps.append((current["name"], weights[0].detach().float()))  # (H, Lq, Lk)
            return output

        return attend

    def enter(name):
        def hook(module, args, kwargs):
            current["name"] = name

        return hook

    def cross_attention(name):
        def hook(module, args, kwargs, output):
            key = args[1] if len(args) > 1 else kwargs.get("key")
            if key is None or key is args[0]:
                return  # self-attention: recorded by the position module
            q = module._split_heads(module.q_proj(args[0]))  # (B, H, Lq, D)
            k = module._split_heads(module.k_proj(key))  # (B, H, Lk, D)
            logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, Lq, Lk)
            padding = kwargs.get("key_padding_mask")
            if padding is not None:
                logits = logits.masked_fill(padding[:, None, None, :], float("-inf"))
            maps.append((name, logits.softmax(-1)[0].detach().float()))

        return hook

    for name, module in model.named_modules():
        if not isinstance(module, MultiheadAttention):
            continue
        handles.append(module.register_forward_pre_hook(enter(name), with_kwargs=True))
        handles.append(module.register_forward_hook(cross_attention(name), with_kwargs=True))
        position = module.position
        if id(position) not in patched:
            position.attend = self_attention(position, position.attend)
            patched[id(position)] = position
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            forward()
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
        for position in patched.values():
            del position.attend  # back to the class's method
    return maps


def _thinned(labels: list[str], most: int = 32) -> tuple[list[int], list[str]]:
    """Tick positions and labels, every n-th one past ``most`` (49 labels overlap)."""
    step = max(1, math.ceil(len(labels) / most))
    return list(range(0, len(labels), step)), list(labels[::step])


def _shortened(tokens: list[str], most: int = 40) -> str:
    """Tokens for a title: the first ``most``, then how many more (a title sets the width)."""
    shown = " ".join(tokens[:most])
    return shown + (f" … (+{len(tokens) - most})" if len(tokens) > most else "")


def plot_attention(
    maps: list[tuple[str, torch.Tensor]],
    out: str | Path,
    *,
    query_labels: dict[str, list[str]] | None = None,
    key_labels: dict[str, list[str]] | None = None,
    title: str = "",
) -> Path:
    """One heatmap per ``(name, weights (H, Lq, Lk))``: the attention weights, averaged over heads,
    each with its own colour scale (a colour bar beside it).

    ``query_labels`` / ``key_labels`` map a name to the tokens along its axes (optional).
    """
    if not maps:
        raise ValueError("maps is empty: nothing to plot")
    plt = _pyplot()
    columns = min(len(maps), 4)
    rows = math.ceil(len(maps) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 4.2 * rows), squeeze=False)
    for ax in axes.flat[len(maps) :]:
        ax.axis("off")
    query_labels, key_labels = query_labels or {}, key_labels or {}
    for ax, (name, weights) in zip(axes.flat, maps, strict=False):
        if weights.dim() != 3:
            raise ValueError(
                f"attention map {name!r} must be (H, Lq, Lk), got {tuple(weights.shape)}"
            )
        image = ax.imshow(weights.float().mean(0).numpy(), cmap="viridis", vmin=0)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)  # each panel has its own scale
        if query_labels.get(name) is not None:
            ax.set_yticks(*_thinned(query_labels[name]), fontsize=7)
        if key_labels.get(name) is not None:  # vertical: "<bos>" would run into its neighbour
            ax.set_xticks(*_thinned(key_labels[name]), fontsize=7, rotation=90)
        ax.set_title(f"{name} (mean of {weights.shape[0]} heads)", fontsize=9)
        ax.set_xlabel("key")
    for ax in axes[:, 0]:
        ax.set_ylabel("query")
    fig.suptitle(title or "Attention weights")
    fig.tight_layout(rect=(0, 0, 1, 0.93 if rows == 1 else 0.95))  # room for a 2-line title
    return _save(fig, out)


def find_run(run_dir: str | Path, *, scheme: str | None = None, task: str | None = None) -> Path:
    """A training run folder: ``run_dir`` itself, or, for a ``relpos compare`` folder, the
    first variant's (of ``scheme`` if given) lowest-seed run in ``task``'s experiment, else the
    first experiment that has one (:func:`relpos.experiments.predict.find_runs`)."""
    from .predict import find_runs

    return next(iter(find_runs(run_dir, scheme=scheme, task=task).values()))


def _run_title(loaded) -> str:
    config = loaded.config
    options = ", ".join(f"{k}={v}" for k, v in config.model.scheme_options.items())
    scheme = f"{config.model.scheme}({options})" if options else config.model.scheme
    return (
        f"{scheme}, {config.model.arch}, task {config.task}, {loaded.step} steps, "
        f"seed {config.seed}"
    )


def plot_run_vectors(run_dir: str | Path, out: str | Path) -> Path:
    """:func:`plot_vectors` for a trained run (a compare folder: its first Shaw run)."""
    from ..training import load_run

    loaded = load_run(find_run(run_dir, scheme="shaw"))
    return plot_vectors(
        loaded.model,
        out,
        title=f"Cosine similarity of learned relative key vectors w^K — {_run_title(loaded)}",
    )


def plot_run_attention(
    run_dir: str | Path,
    out: str | Path,
    *,
    length: int | None = None,
    seed: int = 0,
    source: str | None = None,
) -> Path:
    """:func:`plot_attention` for a trained run on one evaluation example of ``length``
    (default: the longest evaluated length up to 24), drawn with ``seed``; or on ``source``, an
    input of your own (split as ``relpos predict`` splits it).

    The pass is teacher-forced (the decoder reads the gold target), so every map has the
    example's true shape; the title shows the model's own greedy output as well. A source
    whose target the task cannot give is teacher-forced on the model's own output.
    """
    import random

    from ..tasks import Example, get_task
    from ..training import load_run
    from ..training.data import encode_examples
    from ..training.evaluate import model_logits
    from ..training.precision import autocast
    from ..training.tokenizer import BOS, EOS
    from .predict import char_level, split_source, task_example, task_examples

    loaded = load_run(find_run(run_dir))
    config, model, tokenizer = loaded.config, loaded.model, loaded.tokenizer
    task = get_task(config.task, **config.task_options)
    data = task.generate(config.seed)
    expected = True
    if source is not None:
        if length is not None or seed != 0:
            raise ValueError("source is the example itself: give it without length or seed")
        tokens = split_source(source, tokenizer.vocabulary, char_level=char_level(config))
        example = task_example(task, task_examples(data), tokens)
        if example is None:  # no target known: the decoder reads what the model writes
            expected = False
            (output,) = loaded.predict([tokens])
            example = Example(tokens, tuple(output), len(tokens))
        length = example.length
    else:
        lengths = sorted({ex.length for ex in data.evaluation})
        if length is None:
            length = max([n for n in lengths if n <= 24] or lengths[:1])
        candidates = [ex for ex in data.evaluation if ex.length == length]
        if not candidates:
            raise ValueError(
                f"the task has no evaluation example of length {length}; it has {lengths}"
            )
        example = random.Random(seed).choice(candidates)
    arch = model.arch
    encoded = encode_examples([example], tokenizer, arch)
    batch = encoded.batch(torch.tensor([0]))
    device = next(model.parameters()).device
    with autocast(config.precision, device):  # as the run trained and evaluated
        maps = attention_maps(model, lambda: model_logits(model, batch))

    source, target = list(example.source), list(example.target)
    with torch.no_grad(), autocast(config.precision, device):
        if arch == "encoder-decoder":
            ids = model.generate(
                batch.source,
                batch.source_padding,
                bos=BOS,
                eos=EOS,
                max_new_tokens=len(target) + 1,
            )
        elif arch == "decoder":
            prompt = batch.inputs[:, : len(source) + 1]
            ids = model.generate(prompt, eos=EOS, max_new_tokens=len(target) + 1)
        else:
            ids = model_logits(model, batch).argmax(-1)[:, : len(target)]
    # Teacher-forced on its own output, the model's output is that target (the same budget).
    prediction = tokenizer.decode(ids[0].tolist()) if expected else target
    if arch == "encoder-decoder":
        sequence_labels = {"encoder": source, "decoder": ["<bos>", *target]}
    else:
        sequence_labels = {"decoder": [*source, "<sep>", *target], "encoder": source}
    query_labels, key_labels = {}, {}
    for name, _ in maps:
        stack = "encoder" if name.startswith("encoder") else "decoder"
        query_labels[name] = sequence_labels[stack]
        key_labels[name] = sequence_labels["encoder" if "cross" in name else stack]
    if expected:
        seen = "seen" if data.seen(length) else "UNSEEN"
        where = f"length {length} ({seen} in training)"
        verdict = "correct" if prediction == target else "wrong"
    else:
        where, verdict = "not a task example", "no expected output"
    title = (
        f"Attention weights — {_run_title(loaded)}\n"
        f"{where}: {_shortened(source)} → {_shortened(prediction) or '<empty>'} ({verdict})"
    )
    return plot_attention(maps, out, query_labels=query_labels, key_labels=key_labels, title=title)


# --------------------------------------------------------------------------- compare results


#: what ``plot_accuracy`` can draw: the measures of :mod:`relpos.training.evaluate`.
ACCURACY_METRICS = {
    "exact": "exact-match accuracy",
    "token": "token accuracy",
    "tf_token": "token accuracy, teacher-forced",
}
#: one marker per line, so that lines lying on top of each other stay visible.
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def plot_accuracy(results: dict | str | Path, out: str | Path, *, metric: str = "exact") -> Path:
    """Accuracy against length, one line per variant (mean over seeds, a band of ± one standard
    deviation), training range shaded.

    ``results`` is a ``relpos compare`` results dict, its ``results.json`` or its run folder;
    ``metric`` one of ``exact``, ``token``, ``tf_token``. One panel per experiment (task).
    """
    if metric not in ACCURACY_METRICS:
        raise ValueError(f"metric must be one of {', '.join(ACCURACY_METRICS)}, got {metric!r}")
    if not isinstance(results, dict):
        path = Path(results)
        if path.is_dir():
            path = path / "results.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"no results.json at {str(path)!r}: `plot accuracy` reads a `relpos compare` "
                "folder (a `relpos train` run prints its accuracy per length instead)"
            )
        results = json.loads(path.read_text())
    experiments = results.get("experiments")
    if not experiments:
        raise ValueError("results have no 'experiments': is this a `relpos compare` results.json?")
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    columns = min(len(experiments), 3)
    rows = math.ceil(len(experiments) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6.5 * columns, 4.3 * rows), squeeze=False)
    for ax in axes.flat[len(experiments) :]:
        ax.axis("off")
    for ax, experiment in zip(axes.flat, experiments, strict=False):
        low, high = experiment["train_lengths"]
        ax.axvspan(low - 0.5, high + 0.5, color="0.9", zorder=0)
        ax.text(
            (low + high) / 2,
            1.06,
            f"trained on lengths {low}–{high}",
            ha="center",
            va="bottom",
            fontsize=8,
            color="0.35",
        )
        for index, (label, summary) in enumerate(experiment["summary"].items()):
            by_length = summary["by_length"]
            lengths = sorted(int(length) for length in by_length)
            if f"{metric}_mean" not in by_length[str(lengths[0])]:
                raise ValueError(f"these results hold no {metric!r} accuracy per length")
            mean = [by_length[str(n)][f"{metric}_mean"] for n in lengths]
            std = [by_length[str(n)][f"{metric}_std"] for n in lengths]
            marker = _MARKERS[index % len(_MARKERS)]
            (line,) = ax.plot(lengths, mean, marker=marker, markersize=4, label=label, alpha=0.85)
            ax.fill_between(
                lengths,
                [m - s for m, s in zip(mean, std, strict=True)],
                [m + s for m, s in zip(mean, std, strict=True)],
                color=line.get_color(),
                alpha=0.15,
                linewidth=0,
            )
        seeds = experiment.get("seeds", [])
        name = experiment.get("title") or experiment["task"]
        ax.set_title(f"{name} ({len(seeds)} seed{'s' * (len(seeds) != 1)})", fontsize=10)
        ax.set_xlabel("length")
        ax.set_ylabel(ACCURACY_METRICS[metric])
        ax.set_ylim(-0.03, 1.12)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    several = any(len(experiment.get("seeds", [])) > 1 for experiment in experiments)
    band = "; bands: ± 1 std over seeds" if several else ""
    fig.suptitle(f"Accuracy vs. length: grey = lengths seen in training{band}")
    fig.tight_layout()
    return _save(fig, out)
