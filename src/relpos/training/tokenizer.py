"""Token ids for a task: the task's vocabulary after four special tokens.

``PAD = 0`` (padding, never a target), ``BOS = 1`` (first decoder input of an encoder-decoder),
``EOS = 2`` (end of every target), ``SEP = 3`` (between source and target in a decoder-only
sequence). Task tokens follow in ``TaskData.vocabulary`` order, so the same vocabulary always
gives the same ids.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

__all__ = ["Tokenizer", "SPECIAL_TOKENS", "PAD", "BOS", "EOS", "SEP"]

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<sep>")
PAD, BOS, EOS, SEP = range(len(SPECIAL_TOKENS))


class Tokenizer:
    """Maps task tokens (strings) to ids and back."""

    def __init__(self, vocabulary: Sequence[str]) -> None:
        vocabulary = list(vocabulary)
        if not vocabulary:
            raise ValueError("vocabulary is empty; a task needs at least one token")
        counts = Counter(vocabulary)  # list.count per token was quadratic: 2.5 s for 20k tokens
        duplicates = sorted(t for t, n in counts.items() if n > 1)
        if duplicates:
            raise ValueError(f"vocabulary has duplicate tokens: {duplicates}")
        clashes = sorted(set(vocabulary) & set(SPECIAL_TOKENS))
        if clashes:
            raise ValueError(
                f"vocabulary uses reserved special token(s) {clashes}; "
                f"{', '.join(SPECIAL_TOKENS)} are added by the tokenizer"
            )
        self.vocabulary = vocabulary
        self.tokens = [*SPECIAL_TOKENS, *vocabulary]
        self.ids = {token: i for i, token in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        try:
            return [self.ids[t] for t in tokens]
        except KeyError as error:
            shown = ", ".join(map(repr, self.vocabulary[:20]))
            more = f", … ({len(self.vocabulary)} in all)" if len(self.vocabulary) > 20 else ""
            raise ValueError(
                f"token {error.args[0]!r} is not in the task vocabulary: {shown}{more}"
            ) from None

    def decode(self, ids: Sequence[int], *, stop_at_eos: bool = True) -> list[str]:
        out = []
        for i in ids:
            i = int(i)
            if stop_at_eos and i == EOS:
                break
            out.append(self.tokens[i])
        return out
