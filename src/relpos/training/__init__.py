"""Training and evaluation: tokenizer, batching, AdamW loop, checkpoints, resume, DDP.

``train(TrainConfig(...), run_dir)`` trains one model on one task and returns a
:class:`RunResult`; ``evaluate(model, task_data)`` gives accuracy per length; ``load_run(run_dir)``
reads a run folder back.
"""

from .checkpoint import LoadedRun, load_checkpoint, load_run, save_checkpoint
from .data import IGNORE, Batch, BatchOrder, EncodedExamples, encode_examples, mix_seed
from .evaluate import evaluate, model_logits
from .loop import RunResult, TrainConfig, learning_rate, make_optimizer, train
from .tokenizer import BOS, EOS, PAD, SEP, SPECIAL_TOKENS, Tokenizer

__all__ = [
    "TrainConfig",
    "RunResult",
    "train",
    "evaluate",
    "learning_rate",
    "make_optimizer",
    "model_logits",
    "load_run",
    "LoadedRun",
    "load_checkpoint",
    "save_checkpoint",
    "Tokenizer",
    "SPECIAL_TOKENS",
    "PAD",
    "BOS",
    "EOS",
    "SEP",
    "IGNORE",
    "Batch",
    "BatchOrder",
    "EncodedExamples",
    "encode_examples",
    "mix_seed",
]
