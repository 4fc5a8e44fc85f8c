"""Add your own position scheme, then train it next to Shaw's on the reverse task.

The scheme here is the scalar cousin of Shaw et al.'s: the same clipped distance
``clip(j - i, -k, k)`` picks a row of a learned table, but the row is one number per head added to
the logits, ``e_ij = q_i·k_j / sqrt(d) + w[clip(j - i, -k, k) + k, h]``, instead of a vector
that meets the query (Shaw's ``q_i·a^K_ij``) and a second one added to the values (``a^V_ij``).
It is T5's bias (Raffel et al. 2020) with Shaw's clipping in place of T5's log-spaced buckets.

A scheme is two small pieces, written like the built-in ones in ``relpos/schemes/``:

* an :class:`relpos.schemes.AttentionPosition` that lives in each attention layer. A scalar bias
  that depends only on ``j - i`` subclasses :class:`relpos.schemes.DistanceBias` and implements
  one method, ``distance_bias``; the attention kernels (SDPA, FlexAttention) do the rest. A bias
  that also reads the query or key (as Transformer-XL's and DeBERTa's do) subclasses
  :class:`relpos.schemes.PairBias` and implements ``pair_bias`` instead (or, when its relative
  vectors are few, ``relative_scores``, the same bias factored, which FlexAttention can read
  without forming it);
* a :class:`relpos.PositionScheme` dataclass, registered by name with ``@relpos.register_scheme``,
  whose fields are the scheme's options and which builds that module for a model.

Once this file has run, ``ModelConfig(scheme="clipped-bias", scheme_options={"max_distance": 4})``
builds models with it, and ``relpos.experiments.Variant("clipped-bias")`` compares it.

Run: ``.venv/bin/python examples/custom_scheme.py`` (about 20 s on 2 CPU cores). It prints the
new scheme's bias for a short block, then exact-match accuracy of both schemes on lengths seen
in training and on longer ones. ``RELPOS_EXAMPLE_STEPS`` sets the training steps (default 400).
"""

import dataclasses
import os

import torch
from torch import Tensor, nn

import relpos
from relpos.attention import relative_distances
from relpos.models import ModelConfig
from relpos.schemes import DistanceBias
from relpos.training import TrainConfig, train

STEPS = int(os.environ.get("RELPOS_EXAMPLE_STEPS", "400"))


class ClippedDistanceBias(DistanceBias):
    """One learned scalar per head for each clipped distance ``clip(j - i, -k, k)``.

    Parameters: ``distance_weights (2k + 1, H)``; row ``k`` is the token itself.
    """

    def __init__(self, num_heads: int, max_distance: int) -> None:
        super().__init__()
        self.num_heads, self.max_distance = num_heads, max_distance
        # Zeros: training starts from content-only attention, as if there were no positions.
        self.distance_weights = nn.Parameter(torch.zeros(2 * max_distance + 1, num_heads))

    def distance_bias(
        self, query_len: int, key_len: int, *, query_offset: int = 0, key_offset: int = 0
    ) -> Tensor:
        """``(H, Lq + Lk - 1)``: the bias of every distance ``j - i`` the block contains.

        The kernels want one column per distance, smallest first (query row ``r`` and key column
        ``c`` read column ``c - r + Lq - 1``); ``relative_distances`` lists them in that order.
        The offsets matter when decoding with a cache (queries start late).
        """
        distances = relative_distances(
            query_len,
            key_len,
            query_offset=query_offset,
            key_offset=key_offset,
            device=self.distance_weights.device,
        )  # (Lq + Lk - 1,)
        k = self.max_distance
        rows = distances.clamp(-k, k) + k  # Shaw's clipped index
        return self.distance_weights[rows].T  # (H, Lq + Lk - 1)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, max_distance={self.max_distance}"


@relpos.register_scheme
@dataclasses.dataclass
class ClippedBiasScheme(relpos.PositionScheme):
    """``clipped-bias``: a learned scalar per head and clipped distance, added to the logits."""

    name = "clipped-bias"
    paper = "Shaw et al. 2018's clipping with Raffel et al. 2020's scalar bias (this example)"

    max_distance: int = 4

    def __post_init__(self) -> None:
        # Checked when the scheme is built (get_scheme), before any model exists.
        if isinstance(self.max_distance, bool) or not isinstance(self.max_distance, int):
            raise TypeError(f"max_distance must be an int, got {self.max_distance!r}")
        if self.max_distance < 0:
            raise ValueError(f"max_distance must be >= 0, got {self.max_distance}")

    def attention_position(self, num_heads: int, head_dim: int, *, causal: bool):
        # A causal stack only ever reads the rows of j <= i; the others stay at zero.
        return ClippedDistanceBias(num_heads, self.max_distance)


def show_the_bias() -> None:
    scheme = relpos.get_scheme("clipped-bias", max_distance=2)
    module = scheme.attention_position(num_heads=1, head_dim=16, causal=False)
    with torch.no_grad():  # give each row its own value, so that the clipping is visible
        module.distance_weights.copy_(torch.arange(5.0)[:, None])
    print("The new scheme's bias on a 5 x 5 block, k = 2 (entry = row of the table used):")
    print(module.bias(5, 5)[0].long())
    print(f"registered schemes: {', '.join(relpos.available_schemes())}\n")


def train_both() -> None:
    print(f"Reverse a digit string: train on lengths 1-6, test on 1-12, {STEPS} steps each")
    for scheme in ("clipped-bias", "shaw"):
        config = TrainConfig(
            task="reverse",
            task_options={"max_train_length": 6, "max_eval_length": 12, "n_train": 5000},
            model=ModelConfig(scheme=scheme, scheme_options={"max_distance": 4}),
            steps=STEPS,
            lr=2e-3,
            warmup_steps=50,
        )
        result = train(config, progress=False)  # no run_dir: nothing is written to disk
        seen, unseen = result.metrics["seen"], result.metrics["unseen"]
        print(
            f"  {scheme:13s} exact match: seen 1-6 {seen['exact']:.2f}, unseen 7-12 "
            f"{unseen['exact']:.2f} (token accuracy {unseen['token']:.2f}) [{result.seconds:.0f} s]"
        )
        biases = [m for m in result.model.modules() if isinstance(m, ClippedDistanceBias)]
        if biases:
            largest = max(m.distance_weights.abs().max().item() for m in biases)
            print(f"  {'':13s} largest learned bias |w| in any layer: {largest:.2f}")
    # One seed and a short budget: the numbers move with the seed and the step count; compare
    # schemes with relpos.experiments.run_compare over several seeds before drawing conclusions.
    # Two things to keep in mind when reading them. Shaw's vectors meet the query's content
    # (q_i·a^K_ij) and add to the values; a scalar per distance can only make a head look more or
    # less at a distance. And AdamW moves a weight by at most about lr per step, so after a few
    # hundred steps at lr = 2e-3 a scalar bias is still small next to q·k (the line above shows
    # how small): a bias scheme may need more steps, a larger init or its own learning rate.


if __name__ == "__main__":
    show_the_bias()
    train_both()
