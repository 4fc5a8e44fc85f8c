"""Shaw et al.'s relative attention as a drop-in layer in a model you write yourself.

``relpos.MultiheadAttention(embed_dim, num_heads, max_distance=k)`` takes the place of
``torch.nn.MultiheadAttention`` (batch-first by default). Inside, every query ``i`` looks at every
key ``j`` through the clipped distance ``clip(j - i, -k, k)``, one of ``2k + 1`` learned vectors
(Shaw, Uszkoreit & Vaswani 2018, Eq. 3-4). This script shows four things, and prints each:

1. nothing in the layer is sized by the sequence length: a model trained on length 8 runs on
   length 64, with tables of ``2k + 1`` rows;
2. decoding token by token with a ``relpos.KVCache`` gives the outputs of one causal pass;
3. the paper-literal ``reference`` backend and the fast ``eager`` one agree (float64);
4. why *relative*: moving a whole sequence to other absolute positions leaves Shaw's attention
   exactly as it was, while a sinusoidal (absolute) encoding changes it.

Run: ``.venv/bin/python examples/shaw_layer_in_your_model.py`` (a few seconds on a CPU).
``RELPOS_EXAMPLE_STEPS`` sets the training steps of part 1 (default 300; the test uses fewer).
"""

import math
import os

import torch
import torch.nn.functional as F
from torch import nn

import relpos

STEPS = int(os.environ.get("RELPOS_EXAMPLE_STEPS", "300"))
VOCAB, WIDTH, HEADS, K = 10, 32, 4, 4


class TinyModel(nn.Module):
    """Embedding, one causal relative self-attention layer, and a readout — no position input."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.attn = relpos.MultiheadAttention(WIDTH, HEADS, max_distance=K)
        self.readout = nn.Linear(WIDTH, VOCAB)

    def forward(self, tokens: torch.Tensor, cache: relpos.KVCache | None = None) -> torch.Tensor:
        x = self.embed(tokens)  # (B, L, WIDTH)
        # With a cache, the new queries sit after the cached keys, so is_causal still means
        # "see yourself and everything before you".
        return self.readout(x + self.attn(x, is_causal=True, cache=cache))  # (B, L, VOCAB)


def previous_token_batch(batch: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random digits, and as target at each position the digit one step to the left.

    The answer is always at distance -1, a relative position; position 0 has no target.
    """
    tokens = torch.randint(VOCAB, (batch, length))
    targets = torch.roll(tokens, 1, dims=1)
    targets[:, 0] = -100  # cross_entropy's ignore_index
    return tokens, targets


def accuracy(model: nn.Module, length: int) -> float:
    tokens, targets = previous_token_batch(256, length)
    with torch.no_grad():
        predicted = model(tokens).argmax(-1)
    scored = targets != -100
    return (predicted[scored] == targets[scored]).float().mean().item()


def part1_train_short_run_long() -> TinyModel:
    print("1. Train on length 8, run on length 64")
    model = TinyModel()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(STEPS):
        tokens, targets = previous_token_batch(64, 8)
        loss = F.cross_entropy(model(tokens).flatten(0, 1), targets.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    shaw = model.attn.position  # the layer's relpos.ShawRelativePosition
    key_shape, value_shape = tuple(shaw.key_table.shape), tuple(shaw.value_table.shape)
    print(f"   key_table {key_shape}, value_table {value_shape}")
    print(f"   (2k+1 = {2 * K + 1} rows of head_dim {WIDTH // HEADS}, shared by the {HEADS} heads)")
    print(f"   after {STEPS} steps, previous-token accuracy:")
    # Distance -1 means the same at position 7 and at position 63, so what was learned on length
    # 8 still applies. Not necessarily perfectly: at length 64 some 60 far keys share the row of
    # distance -k, and however little attention each gets, together they may draw some away.
    for length in (8, 64):
        print(f"     length {length:2d}: {accuracy(model, length):.3f}")
    # A learned absolute table, by contrast, has no row for a position it was not built with.
    learned = relpos.LearnedPositionEmbedding(max_len=8, d_model=WIDTH)
    try:
        learned(torch.zeros(1, 64, WIDTH))
    except ValueError as error:
        print(f"   a learned absolute table of 8 rows, on length 64:\n     ValueError: {error}")
    return model


def part2_kv_cache(model: TinyModel) -> None:
    print("2. Token-by-token decoding with a KVCache vs one causal pass")
    model = model.double()  # float64, so that only a real mismatch could show above ~1e-12
    tokens = torch.randint(VOCAB, (2, 20))
    with torch.no_grad():
        full = model(tokens)  # (2, 20, VOCAB)
        cache = relpos.KVCache()  # one cache per attention layer (the model has one)
        steps = [model(tokens[:, t : t + 1], cache=cache) for t in range(tokens.shape[1])]
    stepwise = torch.cat(steps, dim=1)
    difference = (full - stepwise).abs().max()
    print(f"   cache length {cache.length}; max |full - stepwise| = {difference:.2e} (float64)")


def part3_backends() -> None:
    print("3. Backends 'reference' (the paper's equations) and 'eager' agree, float64")
    batch, heads, length, head_dim, k = 2, 4, 33, 16, 5
    q, key, v = (torch.randn(batch, heads, length, head_dim, dtype=torch.float64) for _ in "qkv")
    key_table = torch.randn(heads, 2 * k + 1, head_dim, dtype=torch.float64)  # a^K, per head
    value_table = torch.randn(heads, 2 * k + 1, head_dim, dtype=torch.float64)  # a^V, per head
    outputs = {
        backend: relpos.shaw_attention(
            q, key, v, key_table, value_table, max_distance=k, is_causal=True, backend=backend
        )
        for backend in ("reference", "eager")
    }
    difference = (outputs["reference"] - outputs["eager"]).abs().max()
    shape = tuple(outputs["eager"].shape)
    print(f"   output (B, H, L, D) = {shape}; max |reference - eager| = {difference:.2e}")


def part4_shift() -> None:
    print("4. Move the same sequence from positions 0..15 to 1000..1015")
    length, k = 16, K
    head_dim = WIDTH // HEADS
    torch.manual_seed(1)
    x = torch.randn(1, length, WIDTH, dtype=torch.float64)  # token embeddings, no positions
    w_q, w_k, w_v = (
        torch.randn(WIDTH, WIDTH, dtype=torch.float64) / math.sqrt(WIDTH) for _ in "qkv"
    )  # projections, shared by both models
    key_table = torch.randn(2 * k + 1, head_dim, dtype=torch.float64)
    value_table = torch.randn(2 * k + 1, head_dim, dtype=torch.float64)

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.view(1, length, HEADS, head_dim).transpose(1, 2)  # (1, H, L, D)

    def shaw(start: int) -> torch.Tensor:
        # Positions enter only as the offsets of the first query and first key; the kernel turns
        # them into distances j - i, so a common start cancels.
        q, key, v = heads(x @ w_q), heads(x @ w_k), heads(x @ w_v)
        return relpos.shaw_attention(
            q, key, v, key_table, value_table, max_distance=k, query_offset=start, key_offset=start
        )

    def sinusoidal(start: int) -> torch.Tensor:
        # Vaswani et al.: add PE(start + r) to the embeddings, then content-only attention.
        positions = torch.arange(length) + start
        h = x + relpos.sinusoidal_encoding(positions, WIDTH).double()
        return F.scaled_dot_product_attention(heads(h @ w_q), heads(h @ w_k), heads(h @ w_v))

    for name, attention in (("shaw", shaw), ("sinusoidal", sinusoidal)):
        difference = (attention(0) - attention(1000)).abs().max()
        print(f"   {name:10s}  max |out(start=0) - out(start=1000)| = {difference:.2e}")
    # Shaw's invariance holds by construction, for any weights, trained or not. It is why a
    # relative model cannot tell a string at positions 100.. from one at 0..; and clipping at k
    # is why a distance longer than any seen in training reuses the trained row k (or 0).


if __name__ == "__main__":
    torch.manual_seed(0)
    model = part1_train_short_run_long()
    part2_kv_cache(model)
    part3_backends()
    part4_shift()
