"""Accuracy per length: exact-match sequences and tokens, from free-running greedy decoding.

``evaluate`` decodes every evaluation example greedily, feeding the model its *own* previous
tokens (batched, with the key/value cache), and scores:

* ``exact`` — the fraction of examples whose output, up to its first EOS, equals the target;
* ``token`` — the fraction of target positions ``t`` at which output token ``t`` equals target
  token ``t`` (the output is cut at its first EOS; a missing token counts as wrong);
* ``tf_token`` — token accuracy under **teacher forcing** (argmax at each position given the
  gold prefix; the target's tokens, the EOS after them not counted, like ``token``), the measure
  Ontañón et al. (2022) score with. Sequence-level exact
  match is the same under both: if every argmax under the gold prefix is right, greedy decoding
  reproduces the gold prefix step by step, and vice versa. Token accuracy is where they differ,
  since free-running decoding is derailed by its own early mistakes.

The encoder-only model is non-autoregressive: its per-position argmax is both its free-running
and its teacher-forced output.

Counts are pooled: ``seen``/``unseen`` average over all their examples (``exact``) or target tokens
(``token``), so a length with more examples weighs more. An empty group has ``None`` values.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..tasks import TaskData
from .data import IGNORE, Batch, EncodedExamples, encode_examples
from .precision import autocast
from .tokenizer import BOS, EOS, PAD, SEP, Tokenizer

__all__ = ["evaluate", "model_logits", "eval_batches"]


def model_logits(model: nn.Module, batch: Batch) -> Tensor:
    """Teacher-forced logits ``(B, L, V)`` for a batch in the model's layout."""
    arch = getattr(model, "module", model).arch
    if arch == "encoder-decoder":
        return model(batch.source, batch.inputs, batch.source_padding)
    if arch == "decoder":
        return model(batch.inputs)
    return model(batch.inputs, batch.source_padding)


def eval_batches(encoded: EncodedExamples, batch_size: int) -> list[Tensor]:
    """Index batches sorted by length, each with ONE source length.

    A decoder-only model needs equal prompt lengths (its generate() takes unpadded prompts); for
    the others it just keeps the padding small.
    """
    key = encoded.source_lengths * (int(encoded.target_lengths.max()) + 1)
    order = torch.argsort(key + encoded.target_lengths, stable=True)
    batches = []
    for source_length in encoded.source_lengths[order].unique().tolist():
        group = order[encoded.source_lengths[order] == source_length]
        batches.extend(group.split(batch_size))
    return batches


def _cut_at_eos(tokens: Tensor) -> Tensor:
    """Replace everything after each row's first EOS with PAD; ``(B, T)``."""
    is_eos = tokens == EOS
    after_first = (is_eos.cumsum(dim=1) - is_eos.long()) > 0
    return tokens.masked_fill(after_first, PAD)


def _fit(tokens: Tensor, width: int) -> Tensor:
    """Pad with PAD or truncate ``(B, T)`` to ``(B, width)``."""
    if tokens.shape[1] >= width:
        return tokens[:, :width]
    return torch.cat((tokens, tokens.new_full((tokens.shape[0], width - tokens.shape[1]), PAD)), 1)


@torch.no_grad()
def _score_batch(model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
    """Per example: (exact bool, correct target tokens, teacher-forced correct tokens).

    Token counts exclude EOS; teacher-forced exactness is not returned because it equals
    free-running exactness (module docstring).
    """
    arch = model.arch
    labelled = batch.labels != IGNORE  # (B, L)
    teacher_forced = model_logits(model, batch).argmax(dim=-1)  # (B, L)
    tf_right = (teacher_forced == batch.labels) & labelled
    if arch != "encoder":  # drop each row's last labelled position, the EOS
        last = labelled.long().cumsum(dim=1) == labelled.sum(dim=1, keepdim=True)
        tf_right = tf_right & ~(last & labelled)
    tf_correct = tf_right.sum(dim=1)

    if arch == "encoder":
        exact = (tf_right | ~labelled).all(dim=1)
        return exact, tf_correct, tf_correct

    if arch == "encoder-decoder":
        gold = batch.labels.masked_fill(~labelled, PAD)  # (B, Lt+1): target EOS PAD…
        output = model.generate(
            batch.source,
            batch.source_padding,
            bos=BOS,
            eos=EOS,
            max_new_tokens=gold.shape[1],
        )
    else:
        prompt_length = int(batch.source_lengths[0]) + 1  # source SEP, equal in the batch
        prompt = batch.inputs[:, :prompt_length]  # (B, Ls + 1)
        gold = batch.labels[:, prompt_length - 1 :]  # (B, Lt + 1)
        gold = gold.masked_fill(gold == IGNORE, PAD)
        if not bool((prompt[:, -1] == SEP).all()):
            raise AssertionError("eval_batches must group decoder prompts by source length")
        output = model.generate(prompt, eos=EOS, max_new_tokens=gold.shape[1])
    output = _fit(_cut_at_eos(output), gold.shape[1])  # (B, Lt + 1)
    exact = (output == gold).all(dim=1)
    positions = torch.arange(gold.shape[1], device=gold.device)
    is_target = positions[None, :] < batch.target_lengths[:, None]  # (B, Lt + 1), EOS excluded
    correct = ((output == gold) & is_target).sum(dim=1)
    return exact, correct, tf_correct


def _summary(exact: Tensor, correct: Tensor, targets: Tensor, tf_correct: Tensor) -> dict:
    count = int(exact.numel())
    if count == 0:
        return {"exact": None, "token": None, "tf_token": None, "count": 0}
    exact_rate = int(exact.sum()) / count  # in Python: 4/50 is 0.08, not float32's 0.0799...
    total = int(targets.sum())
    return {
        "exact": exact_rate,
        "token": float(correct.sum()) / total if total else exact_rate,
        "tf_token": float(tf_correct.sum()) / total if total else exact_rate,
        "count": count,
    }


def evaluate(
    model: nn.Module,
    data: TaskData,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
    tokenizer: Tokenizer | None = None,
    precision: str = "fp32",
) -> dict:
    """Score ``model`` on ``data.evaluation`` (see the module docstring for the measures), its
    forward passes in ``precision`` (``"fp32"`` or ``"bf16"``, as the run trained).

    Returns ``{"by_length": {"<L>": {"exact", "token", "tf_token", "count", "seen"}},
    "seen": {...}, "unseen": {...}}`` with lengths as strings (JSON keys), in increasing order.
    The tokenizer defaults to ``Tokenizer(data.vocabulary)``, the one training used.
    """
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    if not data.evaluation:
        raise ValueError("the task has no evaluation examples")
    tokenizer = tokenizer or Tokenizer(data.vocabulary)
    encoded = encode_examples(data.evaluation, tokenizer, model.arch).to(device)
    was_training = model.training
    model.eval()
    exact, correct, tf_correct = (
        torch.zeros(len(encoded), dtype=torch.long, device=device) for _ in range(3)
    )
    try:
        with autocast(precision, device):
            for indices in eval_batches(encoded, batch_size):
                indices = indices.to(device)
                batch_exact, batch_correct, batch_tf = _score_batch(model, encoded.batch(indices))
                exact[indices], correct[indices] = batch_exact.long(), batch_correct
                tf_correct[indices] = batch_tf.long()
    finally:
        model.train(was_training)

    exact, correct, tf_correct = exact.cpu(), correct.cpu(), tf_correct.cpu()
    lengths, targets = encoded.lengths.cpu(), encoded.target_lengths.cpu()
    seen = torch.tensor([data.seen(int(length)) for length in lengths], dtype=torch.bool)
    by_length = {}
    for length in lengths.unique().tolist():
        here = lengths == length
        summary = _summary(exact[here], correct[here], targets[here], tf_correct[here])
        by_length[str(length)] = {**summary, "seen": data.seen(length)}
    return {
        "by_length": by_length,
        "seen": _summary(exact[seen], correct[seen], targets[seen], tf_correct[seen]),
        "unseen": _summary(exact[~seen], correct[~seen], targets[~seen], tf_correct[~seen]),
    }
