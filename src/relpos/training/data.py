"""Examples as padded id tensors, one layout per architecture, and a resumable batch order.

Layouts (``S`` source ids, ``T`` target ids, ``·`` padding; ``_`` = ``IGNORE``, no loss):

* ``encoder-decoder``: ``source = S ·``, ``inputs = BOS T ·``, ``labels = T EOS _``;
* ``decoder``: ``inputs = S SEP T ·`` (the final EOS is never an input),
  ``labels = _ … _ T EOS _`` — the loss is on the target and its EOS only, not on the source;
* ``encoder``: ``source = inputs = S ·``, ``labels = T _`` (needs ``len(T) == len(S)``).

Every example is encoded once, padded to the longest; a batch gathers rows and trims the padding
columns it does not need, so a training step costs no Python work per token.

The batch order is a pure function of ``(seed, step)``: step ``s`` takes examples ``s·B … s·B+B-1``
of an endless stream made of one seeded permutation per epoch. A resumed run therefore sees
exactly the batches an uninterrupted one would, with no sampler state to save.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..tasks import Example
from .tokenizer import BOS, EOS, PAD, SEP, Tokenizer

__all__ = ["IGNORE", "Batch", "EncodedExamples", "encode_examples", "BatchOrder", "mix_seed"]

#: label value that ``cross_entropy(ignore_index=IGNORE)`` skips.
IGNORE = -100


def mix_seed(*parts: object) -> int:
    """A 63-bit seed from any hashable parts, e.g. ``mix_seed(seed, "epoch", 3)``.

    Hashing (rather than ``seed + step``) keeps the streams for different purposes and steps
    unrelated; 63 bits because ``torch.manual_seed`` takes non-negative 64-bit ints.
    """
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclass
class Batch:
    """One batch in an architecture's layout (see the module docstring).

    ``source (B, Ls)`` or None (decoder), ``inputs (B, L)``, ``labels (B, L)``, ``lengths (B,)``
    the length each example's accuracy is reported under, ``source_lengths`` / ``target_lengths``
    ``(B,)``.
    """

    source: Tensor | None
    inputs: Tensor
    labels: Tensor
    lengths: Tensor
    source_lengths: Tensor
    target_lengths: Tensor

    @property
    def source_padding(self) -> Tensor | None:
        """``(B, Ls)`` bool, True at padding (task tokens are never ``PAD``)."""
        return None if self.source is None else self.source == PAD

    @property
    def num_targets(self) -> int:
        """Number of labelled positions, i.e. tokens that count in the loss."""
        return int((self.labels != IGNORE).sum())

    def to(self, device: torch.device | str) -> Batch:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(*(move(getattr(self, f)) for f in self.__dataclass_fields__))


@dataclass
class EncodedExamples:
    """All examples of a split, encoded and padded: row ``i`` is example ``i``."""

    arch: str
    source: Tensor | None  # (N, Ls_max)
    inputs: Tensor  # (N, L_max)
    labels: Tensor  # (N, L_max)
    lengths: Tensor  # (N,)
    source_lengths: Tensor  # (N,)
    target_lengths: Tensor  # (N,)
    input_lengths: Tensor  # (N,)

    def __len__(self) -> int:
        return self.inputs.shape[0]

    @property
    def longest(self) -> int:
        """The most positions any stack sees (what a learned absolute table must cover)."""
        longest = int(self.input_lengths.max()) if len(self) else 0
        if self.source is not None and len(self):
            longest = max(longest, int(self.source_lengths.max()))
        return longest

    def to(self, device: torch.device | str) -> EncodedExamples:
        def move(t):
            return t.to(device) if isinstance(t, Tensor) else t

        return EncodedExamples(*(move(getattr(self, f)) for f in self.__dataclass_fields__))

    def batch(self, indices: Tensor) -> Batch:
        """Rows ``indices``, with padding columns beyond the batch's longest row trimmed."""
        input_width = int(self.input_lengths[indices].max())
        source = None
        if self.source is not None:
            source_width = int(self.source_lengths[indices].max())
            source = self.source[indices, :source_width]  # (B, Ls)
        return Batch(
            source=source,
            inputs=self.inputs[indices, :input_width],  # (B, L)
            labels=self.labels[indices, :input_width],  # (B, L)
            lengths=self.lengths[indices],
            source_lengths=self.source_lengths[indices],
            target_lengths=self.target_lengths[indices],
        )


def _pad(rows: list[list[int]], value: int) -> Tensor:
    width = max((len(r) for r in rows), default=0)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long).view(
        len(rows), width
    )


def encode_examples(
    examples: Sequence[Example], tokenizer: Tokenizer, arch: str
) -> EncodedExamples:
    """Encode ``examples`` in the layout of ``arch`` (encoder-decoder, decoder, encoder)."""
    if arch not in ("encoder-decoder", "decoder", "encoder"):
        raise ValueError(f"arch must be encoder-decoder, decoder or encoder; got {arch!r}")
    sources, inputs, labels = [], [], []
    for number, example in enumerate(examples):
        source, target = tokenizer.encode(example.source), tokenizer.encode(example.target)
        if arch == "encoder-decoder":
            sources.append(source)
            inputs.append([BOS, *target])
            labels.append([*target, EOS])
        elif arch == "decoder":
            inputs.append([*source, SEP, *target])
            labels.append([IGNORE] * len(source) + [*target, EOS])
        else:
            if len(source) != len(target):
                raise ValueError(
                    f"the encoder-only model predicts one target token per source token, but "
                    f"example {number} has a source of {len(source)} and a target of "
                    f"{len(target)} tokens; use arch='encoder-decoder' or 'decoder' for this task"
                )
            sources.append(source)
            inputs.append(source)
            labels.append(target)
    as_long = lambda values: torch.tensor(values, dtype=torch.long)  # noqa: E731
    source_lengths = as_long([len(ex.source) for ex in examples])
    return EncodedExamples(
        arch=arch,
        source=_pad(sources, PAD) if arch != "decoder" else None,
        inputs=_pad(inputs, PAD),
        labels=_pad(labels, IGNORE),
        lengths=as_long([ex.length for ex in examples]),
        source_lengths=source_lengths,
        target_lengths=as_long([len(ex.target) for ex in examples]),
        input_lengths=as_long([len(row) for row in inputs]),
    )


class BatchOrder:
    """Which examples step ``s`` trains on: a pure function of ``(seed, s)``.

    Epoch ``e`` is ``randperm(N)`` seeded by ``mix_seed(seed, "epoch", e)``; the epochs are
    concatenated into one stream and step ``s`` takes items ``[s·B, (s+1)·B)`` of it (a batch may
    straddle two epochs).

    With ``lengths`` and ``window > 1``, the stream is cut into windows of ``window`` batches;
    each window is sorted by length, split into batches, and the batches are visited in a seeded
    order. Batches then hold similar lengths, so less compute goes into padding (the bucketing of
    tensor2tensor and fairseq); every example is still seen once per epoch.
    """

    def __init__(
        self,
        num_examples: int,
        batch_size: int,
        seed: int,
        *,
        lengths: Tensor | None = None,
        window: int = 1,
    ) -> None:
        if num_examples <= 0:
            raise ValueError("the task has no training examples")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if lengths is not None and len(lengths) != num_examples:
            raise ValueError(f"lengths has {len(lengths)} entries for {num_examples} examples")
        self.num_examples, self.batch_size, self.seed = num_examples, batch_size, seed
        self.lengths = None if lengths is None else lengths.cpu()
        self.window = window if lengths is not None else 1
        self._permutations: dict[int, Tensor] = {}
        self._window: tuple[int, list[Tensor]] | None = None

    def permutation(self, epoch: int) -> Tensor:
        if epoch not in self._permutations:
            if len(self._permutations) > 4:
                self._permutations.pop(min(self._permutations))
            generator = torch.Generator().manual_seed(mix_seed(self.seed, "epoch", epoch))
            self._permutations[epoch] = torch.randperm(self.num_examples, generator=generator)
        return self._permutations[epoch]

    def stream(self, start: int, stop: int) -> Tensor:
        """Items ``[start, stop)`` of the endless stream of epoch permutations."""
        positions = torch.arange(start, stop)
        epochs, offsets = positions // self.num_examples, positions % self.num_examples
        out = torch.empty_like(positions)
        for epoch in epochs.unique().tolist():
            here = epochs == epoch
            out[here] = self.permutation(epoch)[offsets[here]]
        return out

    def indices(self, step: int) -> Tensor:
        """``(batch_size,)`` example indices of global step ``step``."""
        if self.window == 1:
            return self.stream(step * self.batch_size, (step + 1) * self.batch_size)
        number, slot = divmod(step, self.window)
        if self._window is None or self._window[0] != number:
            size = self.window * self.batch_size
            items = self.stream(number * size, (number + 1) * size)
            items = items[torch.argsort(self.lengths[items], stable=True)]
            batches = list(items.split(self.batch_size))
            generator = torch.Generator().manual_seed(mix_seed(self.seed, "window", number))
            visit = torch.randperm(self.window, generator=generator).tolist()
            self._window = (number, [batches[i] for i in visit])
        return self._window[1][slot]
