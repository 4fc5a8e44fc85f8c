"""Swin's 2D relative bias on a grid, and what becomes of it when the window grows.

The seed post points from Shaw's 1D table to Swin's 2D one (Liu et al. 2021): inside a window of
``Wh × Ww`` patches, token ``i`` attends to token ``j`` through a learned scalar per head for the
offset ``(y_i - y_j, x_i - x_j)``. This script trains a small encoder on a task whose answer sits
at one 2D offset, on 4×4 grids, and then runs it on 6×6, 8×8 and 12×12 grids:

    digits      target (the digit up and to the left; '.' has no target)
    3 1 4 1     . . . .
    5 9 2 6     . 3 1 4
    5 3 5 8     . 5 9 2
    9 7 9 3     . 5 3 5

Five ways to know where a token is, each in the same 2-layer encoder (``relpos.models.Block``):

- ``none``: no positions — a bag of digits; the best it can do is guess a frequent one.
- ``shaw-1d``: Shaw's clipped 1D distance over the flattened grid (``k = 8``). Up-left is
  ``j - i = -(W + 1)``: -5 on the 4-wide training grids, -9 on 8-wide ones — the 1D distance of
  one 2D offset depends on the width, so what it learned points at the wrong cell.
- ``swin``: Swin's table, ``(2·4 - 1)² = 49`` rows; a larger window needs more rows, made by
  :meth:`relpos.WindowRelativeBias.resized` from the trained ones: ``bicubic`` (Swin's own recipe
  for fine-tuning at another window) stretches the table, so offset ``(-1, -1)`` of the 8×8
  window reads what about ``(-0.5, -0.5)`` had learned; ``clip`` keeps every learned offset and
  gives the new, farther ones the value of the nearest old one (Shaw's clipping, per axis).
- ``swin-v2``: Swin V2's continuous bias (Liu et al. 2022), an MLP over log-spaced offsets
  normalised by the training window (:meth:`relpos.ContinuousWindowBias.resized`): offset
  ``(-1, -1)`` keeps its value; the farther offsets are the MLP's extrapolation.

The grid sizes at evaluation are never trained on and no weight changes after training: only the
window biases are rebuilt for the new size. Accuracy is over the cells that have an up-left
neighbour. Run: ``.venv/bin/python examples/swin_windows.py`` (about 2 minutes on 2 CPU cores;
``RELPOS_EXAMPLE_STEPS`` sets the training steps, default 1000; ``RELPOS_EXAMPLE_SEEDS`` the
number of seeds, default 3).
"""

import copy
import os
import statistics

import torch
import torch.nn.functional as F
from torch import nn

import relpos
from relpos.models import Block, ModelConfig

STEPS = int(os.environ.get("RELPOS_EXAMPLE_STEPS", "1000"))
SEEDS = int(os.environ.get("RELPOS_EXAMPLE_SEEDS", "3"))
VOCAB, TRAIN_SIDE, EVAL_SIDES, OFFSET = 10, 4, (4, 6, 8, 12), (-1, -1)
CONFIG = ModelConfig(arch="encoder", d_model=64, num_heads=4, num_layers=2, d_ff=128, dropout=0.0)


def grid_batch(batch: int, side: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """``digits (B, side²)`` row-major, and as target at each cell the digit at ``OFFSET`` from
    it (-100, cross_entropy's ignore_index, where that cell is outside the grid)."""
    digits = torch.randint(VOCAB, (batch, side, side), generator=generator)
    dy, dx = OFFSET
    targets = torch.full_like(digits, -100)
    # The cells (y, x) whose (y + dy, x + dx) lies inside the grid, and those source cells.
    ys, xs = slice(max(-dy, 0), side - max(dy, 0)), slice(max(-dx, 0), side - max(dx, 0))
    source_ys, source_xs = slice(ys.start + dy, ys.stop + dy), slice(xs.start + dx, xs.stop + dx)
    targets[:, ys, xs] = digits[:, source_ys, source_xs]
    return digits.flatten(1), targets.flatten(1)


def make_position(scheme: str, side: int) -> relpos.AttentionPosition | None:
    heads, head_dim = CONFIG.num_heads, CONFIG.d_model // CONFIG.num_heads
    if scheme == "none":
        return None
    if scheme == "shaw-1d":
        return relpos.ShawRelativePosition(head_dim, 8, num_heads=heads)
    if scheme == "swin":
        return relpos.WindowRelativeBias(side, heads)
    return relpos.ContinuousWindowBias(side, heads, hidden_dim=128)


class GridEncoder(nn.Module):
    """Digit embedding, ``CONFIG.num_layers`` pre-LN blocks with the given attention positions,
    a per-cell readout. No position enters anywhere else."""

    def __init__(self, scheme: str, side: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, CONFIG.d_model)
        self.blocks = nn.ModuleList(
            Block(CONFIG, make_position(scheme, side), causal=False, cross=False)
            for _ in range(CONFIG.num_layers)
        )
        self.norm = nn.LayerNorm(CONFIG.d_model)
        self.readout = nn.Linear(CONFIG.d_model, VOCAB)

    def forward(self, digits: torch.Tensor) -> torch.Tensor:
        x = self.embed(digits)  # (B, N, E): one window of N = side² tokens per grid
        for block in self.blocks:
            x = block(x)
        return self.readout(self.norm(x))  # (B, N, VOCAB)


def for_side(model: GridEncoder, side: int, mode: str) -> GridEncoder:
    """A copy of ``model`` whose window biases are rebuilt for ``side × side`` windows."""
    moved = copy.deepcopy(model)
    for block in moved.blocks:
        position = block.self_attn.position
        if isinstance(position, relpos.WindowRelativeBias):
            block.self_attn.position = position.resized(side, mode=mode)
        elif isinstance(position, relpos.ContinuousWindowBias):
            block.self_attn.position = position.resized(side)
    return moved


def train(scheme: str, seed: int) -> GridEncoder:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(1000 + seed)
    model = GridEncoder(scheme, TRAIN_SIDE)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    for _ in range(STEPS):
        digits, targets = grid_batch(64, TRAIN_SIDE, generator)
        loss = F.cross_entropy(model(digits).flatten(0, 1), targets.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


@torch.no_grad()
def accuracy(model: GridEncoder, side: int, generator: torch.Generator) -> float:
    digits, targets = grid_batch(200, side, generator)
    predictions = model.eval()(digits).argmax(-1)
    has_target = targets != -100
    return (predictions[has_target] == targets[has_target]).float().mean().item()


@torch.no_grad()
def bias_share(model: GridEncoder, side: int) -> float | None:
    """How much of a centre cell's attention the first layer's window bias *alone* puts on the
    up-left cell (softmax of the bias row, mean over heads); None without a window bias. A larger
    window adds cells that compete for the same softmax: this is what their biases leave."""
    position = model.blocks[0].self_attn.position
    if not isinstance(position, (relpos.WindowRelativeBias, relpos.ContinuousWindowBias)):
        return None
    centre = (side // 2) * side + side // 2
    up_left = centre + OFFSET[0] * side + OFFSET[1]
    weights = torch.softmax(position.bias()[:, centre], dim=-1)  # (H, N): one query's row
    return weights[:, up_left].mean().item()


def main() -> None:
    variants = [("none", "none", None), ("shaw-1d", "shaw-1d", None)]
    variants += [("swin, bicubic", "swin", "bicubic"), ("swin, clip", "swin", "clip")]
    variants += [("swin-v2", "swin-v2", None)]
    trained = {}  # one trained model per (scheme, seed), shared by the two swin transfers
    scores = {name: {side: [] for side in EVAL_SIDES} for name, _, _ in variants}
    shares = {name: {} for name, _, _ in variants}  # seed 0's bias_share per side
    for name, scheme, mode in variants:
        for seed in range(SEEDS):
            if (scheme, seed) not in trained:
                trained[scheme, seed] = train(scheme, seed)
            for side in EVAL_SIDES:
                model = for_side(trained[scheme, seed], side, mode or "bicubic")
                generator = torch.Generator().manual_seed(side)
                scores[name][side].append(accuracy(model, side, generator))
                if seed == 0:
                    shares[name][side] = bias_share(model, side)
    print(f"trained on {TRAIN_SIDE}x{TRAIN_SIDE} grids, {STEPS} steps, seeds 0-{SEEDS - 1}")
    print("accuracy on the cells with an up-left neighbour (mean ± std over seeds):\n")
    header = " | ".join(
        f"{side}x{side}" + (" (trained)" if side == TRAIN_SIDE else "") for side in EVAL_SIDES
    )
    print(f"| scheme | {header} |")
    print("|---|" + "---|" * len(EVAL_SIDES))
    for name, _, _ in variants:
        cells = []
        for side in EVAL_SIDES:
            values = scores[name][side]
            spread = statistics.pstdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.fmean(values):.2f} ± {spread:.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nfirst layer, window bias alone: share of a centre cell's attention on its up-left")
    print("cell (seed 0, mean over heads; uniform would be 1/N):\n")
    print(f"| scheme | {header} |")
    print("|---|" + "---|" * len(EVAL_SIDES))
    for name, _, _ in variants:
        if shares[name][TRAIN_SIDE] is not None:
            cells = [f"{shares[name][side]:.3f} (1/N = {1 / side**2:.3f})" for side in EVAL_SIDES]
            print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
