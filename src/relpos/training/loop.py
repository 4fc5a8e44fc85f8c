"""``train``: AdamW with warmup and cosine decay, checkpoints, exact resume, DDP, evaluation.

Determinism. Everything random is a pure function of the seed and the step:

* the task data come from ``task.generate(seed)``;
* the weights are initialised after ``torch.manual_seed(mix_seed(seed, "init"))`` (with
  ``init_seed`` in place of ``seed`` when it is given);
* step ``s`` trains on :class:`~relpos.training.data.BatchOrder` ``(seed).indices(s)``;
* before step ``s`` the global RNG is re-seeded with ``mix_seed(seed, "step", s, rank)``, so
  dropout masks do not depend on what ran before;
* the learning rate is a function of ``s`` (no scheduler state).

So a run resumed from any checkpoint replays exactly the steps an uninterrupted run takes and ends
with the same weights and metrics (bit for bit on CPU; on CUDA some kernels, e.g. ``scatter_add``,
are not deterministic). The checkpoint also stores the RNG states, the optimizer moments and the
partly accumulated loss of the current logging interval, and ``train`` restores them.

Schedule: linear warmup from 0 to ``lr`` over ``warmup_steps`` (step ``warmup_steps - 1`` is
the first at ``lr``), then cosine decay from ``lr`` at step ``warmup_steps`` to ``min_lr_ratio ·
lr`` at step ``steps`` — one past the last step trained, which therefore runs slightly above the
floor (nanoGPT's formula; kept, since every stored result was trained with it). Weight decay
applies to matrices (projections, embeddings, relative tables), not to biases or LayerNorm gains,
as in nanoGPT.
Gradient norm clipping at ``grad_clip`` (0 disables it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..models import ModelConfig, build_model
from ..models.config import json_options
from ..tasks import Task, TaskData, get_task
from . import checkpoint as ckpt
from .data import IGNORE, BatchOrder, encode_examples, mix_seed
from .distributed import Distributed, check_batch_size, setup, shard, teardown
from .evaluate import evaluate, model_logits
from .precision import PRECISIONS, autocast
from .progress import TrainProgress
from .tokenizer import Tokenizer

__all__ = [
    "TrainConfig",
    "RunResult",
    "train",
    "learning_rate",
    "make_optimizer",
]

#: fields that may differ when resuming: they do not change what is computed — except that
#: another ``device`` or number of ``threads`` sums in another order, so the resumed run then
#: matches an uninterrupted one up to float rounding, not bit for bit.
RESUMABLE_CHANGES = ("device", "eval_batch_size", "checkpoint_every", "threads")


@dataclass
class TrainConfig:
    """One training run. ``TrainConfig.from_dict`` / ``to_dict`` round-trip it through JSON."""

    task: str = "reverse"  # a name in relpos.tasks.available_tasks()
    task_options: dict = field(default_factory=dict)  # get_task(task, **task_options)
    model: ModelConfig = field(default_factory=ModelConfig)
    steps: int = 2000
    batch_size: int = 64  # global: split across processes under torchrun
    lr: float = 1e-3  # peak learning rate, reached after the warmup
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0  # max gradient norm; 0 disables clipping
    seed: int = 0
    # None: the initial weights follow `seed` too. An int draws them from this seed alone, so
    # runs can differ only in their initial weights (same seed) or only in data and order.
    init_seed: int | None = None
    device: str = "cpu"
    eval_batch_size: int = 256
    checkpoint_every: int = 500  # steps; 0 saves only at the end (needs a run folder)
    min_lr_ratio: float = 0.1  # the cosine decay reaches min_lr_ratio * lr at step `steps`
    log_every: int = 50  # steps per history entry (mean loss over the interval)
    # batches per length-sorted window (1 = no bucketing): similar lengths share a batch, so
    # less compute goes into padding; see relpos.training.data.BatchOrder
    bucket_window: int = 8
    # torch intra-op threads (None keeps torch's default). 1 is fastest for d_model=64 models on
    # a small shared CPU: a second thread made a step several times slower there.
    threads: int | None = 1
    # "bf16": forward and backward under torch.autocast in bfloat16 (matmuls in bf16, weights,
    # optimizer state and the loss in float32), evaluation too; on a GPU this runs Shaw's
    # attention through the Triton kernel in bf16. No "fp16": it would need loss scaling.
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = ModelConfig.from_dict(self.model)
        if not isinstance(self.model, ModelConfig):
            raise TypeError(f"model must be a ModelConfig, got {type(self.model).__name__}")
        self.task_options = json_options(self.task_options, "task_options")
        minimum = {
            "batch_size": 1,
            "eval_batch_size": 1,
            "log_every": 1,
            "bucket_window": 1,
            "steps": 0,
            "warmup_steps": 0,
            "checkpoint_every": 0,
            "seed": 0,
        }
        for name, least in minimum.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {value!r}")
            if value < least:
                raise ValueError(f"{name} must be >= {least}, got {value}")
        # `value < 0` alone lets NaN through: lr=nan or weight_decay=nan train to a NaN loss,
        # and grad_clip=nan silently turns clipping off.
        for name in ("lr", "weight_decay", "grad_clip", "min_lr_ratio"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or (isinstance(value, float) and not math.isfinite(value))
                or value < 0
            ):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.min_lr_ratio > 1:
            raise ValueError(
                f"min_lr_ratio must be <= 1 (the decay ends at min_lr_ratio * lr), "
                f"got {self.min_lr_ratio!r}"
            )
        if self.init_seed is not None and (
            isinstance(self.init_seed, bool)
            or not isinstance(self.init_seed, int)
            or self.init_seed < 0
        ):
            raise ValueError(
                f"init_seed must be None (use seed) or an int >= 0, got {self.init_seed!r}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.threads is not None:
            if isinstance(self.threads, bool) or not isinstance(self.threads, int):
                raise TypeError(f"threads must be None or a positive int, got {self.threads!r}")
            if self.threads < 1:
                raise ValueError(f"threads must be None or a positive int, got {self.threads!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"TrainConfig has no field(s) {', '.join(unknown)}; its fields are: "
                f"{', '.join(sorted(known))}"
            )
        return cls(**values)


@dataclass
class RunResult:
    """What ``train`` returns. ``metrics`` is :func:`~relpos.training.evaluate` plus
    ``final_loss`` (the mean training loss of the last logging interval); ``history`` has one
    ``{"step", "loss", "lr"}`` entry per ``log_every`` steps; ``seconds`` is the training and
    evaluation time, summed over resumed sessions."""

    config: TrainConfig
    metrics: dict
    history: list[dict]
    model: nn.Module
    seconds: float


def learning_rate(config: TrainConfig, step: int) -> float:
    """Learning rate of (0-based) ``step``: linear warmup, then cosine towards ``min_lr_ratio·lr``,
    reached at ``step == steps`` (see the module docstring)."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    decay_steps = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / decay_steps)
    floor = config.min_lr_ratio * config.lr
    return floor + 0.5 * (config.lr - floor) * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW (model already on its device); weight decay on tensors with >= 2 dimensions only
    (nanoGPT's rule)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    # The fused kernel is ~5x faster than the per-tensor loop on CPU for ~50 small tensors;
    # betas and eps are Vaswani et al.'s.
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.98), eps=1e-9, fused=fused)


def check_run_dir(
    run_dir: Path | None, config: TrainConfig, *, resume: bool, overwrite: bool
) -> None:
    """Refuse to clobber an existing run folder unless told to resume or overwrite (read-only)."""
    if run_dir is None:
        if resume:
            raise ValueError("resume=True needs the run_dir of the run to continue")
        return
    if resume and overwrite:
        raise ValueError("pass resume=True or overwrite=True, not both")
    if run_dir.exists() and not run_dir.is_dir():
        raise FileExistsError(f"run_dir {run_dir} exists and is not a folder")
    if not run_dir.exists() or overwrite:
        return
    if resume:
        saved = run_dir / "config.json"
        if not saved.is_file():
            if any(run_dir.iterdir()):
                raise FileExistsError(f"{run_dir} has files but no config.json: not a run folder")
            return
        previous = TrainConfig.from_dict(ckpt.read_json(saved, ckpt.CONFIG_ADVICE)).to_dict()
        current = config.to_dict()
        changed = [
            change
            for key in current
            if key not in RESUMABLE_CHANGES
            for change in _changes(key, previous.get(key), current[key])
        ]
        if changed:
            raise ValueError(
                f"cannot resume {run_dir} with a different config ({'; '.join(changed)}); "
                "resume with the same settings, or start a new run folder"
            )
        return
    if any(run_dir.iterdir()):
        raise FileExistsError(
            f"run folder {run_dir} already exists; pass resume=True (--resume) to continue it, "
            "overwrite=True (--overwrite) to start it again, or choose another folder"
        )


def _changes(name: str, before: object, after: object) -> list[str]:
    """``name: before -> after`` for each setting that differs, looking inside dicts (``model``,
    ``task_options``), so that a changed ``-k`` reads ``model.scheme_options.max_distance``."""
    if before == after:
        return []
    if isinstance(before, dict) and isinstance(after, dict):
        return [
            change
            for key in dict.fromkeys([*before, *after])
            for change in _changes(f"{name}.{key}", before.get(key), after.get(key))
        ]
    return [f"{name}: {before!r} -> {after!r}"]


def _digest(data: TaskData) -> str:
    """A fingerprint of a run's examples: a resumed run must train on the same data (a task
    file edited between the two would otherwise mix two datasets in one run)."""
    text = repr((data.train, data.evaluation, data.vocabulary))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check_resumable(
    saved: dict, run_dir: Path, tokenizer: Tokenizer, data_digest: str, context: Distributed
) -> None:
    """Refuse to resume a run whose checkpoint came from other data or another process count."""
    if saved["vocabulary"] != tokenizer.vocabulary:
        raise ValueError(f"the task's vocabulary differs from the one {run_dir} was trained on")
    if saved.get("data", data_digest) != data_digest:
        raise ValueError(
            f"the task's examples differ from those {run_dir} was trained on (was its task file "
            "edited?); resume with the same data, or start a new run folder"
        )
    # Checkpoints from before world_size was saved came from one process or were not resumed
    # across counts; each process draws its own dropout masks, so another count is another run.
    trained_by = saved.get("world_size", context.world_size)
    if trained_by != context.world_size:
        how = (
            "plain `relpos train`" if trained_by == 1 else f"torchrun --nproc_per_node={trained_by}"
        )
        raise ValueError(
            f"{run_dir} was trained by {trained_by} process(es) and this is {context.world_size}: "
            f"each draws its own dropout masks and batch share, so resuming would give another "
            f"run; resume it with {how}"
        )


def prepare_model(config: TrainConfig, data: TaskData) -> tuple[Tokenizer, object, nn.Module]:
    """The tokenizer, the encoded training set and the (freshly initialised) model of a run on
    ``data``; a ``ValueError`` if the data do not fit the model (a learned table too short).
    ``relpos.experiments`` calls it for every variant of a compare before any of them trains."""
    tokenizer = Tokenizer(data.vocabulary)
    train_set = encode_examples(data.train, tokenizer, config.model.arch)
    longest_eval = encode_examples(data.evaluation, tokenizer, config.model.arch).longest
    model = build_model(config.model, len(tokenizer))
    _positions_fit(model, max(train_set.longest, longest_eval))
    return tokenizer, train_set, model


def _positions_fit(model: nn.Module, longest: int) -> None:
    """Fail before training, not after, if a learned absolute table is shorter than the data."""
    for module in model.modules():
        max_len = getattr(getattr(module, "input_encoding", None), "max_len", None)
        if max_len is not None and longest > max_len:
            raise ValueError(
                f"the data need {longest} positions but this model's learned absolute table has "
                f"max_len={max_len}; raise ModelConfig.max_len (positions never seen in training "
                "then keep their random initial vectors, which is the point of the comparison)"
            )


def train(
    config: TrainConfig,
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    task: Task | None = None,
) -> RunResult:
    """Train ``config.model`` on ``config.task``; evaluate per length; return a :class:`RunResult`.

    Args:
        config: the run's settings.
        run_dir: folder for ``config.json``, checkpoints and ``metrics.json``; None keeps
            everything in memory. An existing non-empty folder is an error unless ``resume`` or
            ``overwrite`` is given (``overwrite`` deletes only the files a run writes).
        resume: continue the run in ``run_dir`` from its newest checkpoint (a fresh start if it
            has none); the config must match the saved one except for :data:`RESUMABLE_CHANGES`.
        progress: show a rich progress bar (rank 0 only).
        task: a :class:`~relpos.tasks.Task` object to use instead of ``get_task(config.task,
            **config.task_options)``; ``config.task`` is then only a label.

    Under ``torchrun`` the global batch is split across processes; see
    :mod:`relpos.training.distributed`.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if task is not None and not isinstance(task, Task):
        raise TypeError(f"task must implement the Task protocol (name, generate), got {task!r}")
    run_dir = None if run_dir is None else Path(run_dir)
    if config.checkpoint_every and run_dir is None:
        config = dataclasses.replace(config, checkpoint_every=0)  # nowhere to save them
    context = setup(config.device)
    threads_before = torch.get_num_threads()
    try:
        result = _train(config, run_dir, context, resume, overwrite, progress, task)
        # Every rank past its last collective before any tears the group down: a gloo rank
        # whose peer closed the connections under it could abort at exit.
        context.barrier()
        return result
    finally:
        torch.set_num_threads(threads_before)  # the caller's setting, not ours, after the run
        teardown(context)


def _train(
    config: TrainConfig,
    run_dir: Path | None,
    context: Distributed,
    resume: bool,
    overwrite: bool,
    progress: bool,
    task: Task | None,
) -> RunResult:
    began = time.perf_counter()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    device = context.device
    # Everything that can fail on a bad config (names, options, lengths beyond a learned table)
    # runs before anything is written into the run folder.
    task = task if task is not None else get_task(config.task, **config.task_options)
    data: TaskData = task.generate(config.seed)
    init_seed = config.seed if config.init_seed is None else config.init_seed
    torch.manual_seed(mix_seed(init_seed, "init"))
    tokenizer, train_set, model = prepare_model(config, data)
    model = model.to(device)
    check_batch_size(config.batch_size, context)
    data_digest = _digest(data)

    if run_dir is not None:
        config.model.to_dict()  # refuses a scheme object that config.json could not name
    check_run_dir(run_dir, config, resume=resume, overwrite=overwrite)
    context.barrier()  # every rank has checked the folder before rank 0 writes into it
    if run_dir is not None and context.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if overwrite:
            for name in ckpt.RUN_FILES:
                path = run_dir / name
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    optimizer = make_optimizer(model, config)

    start, history, seconds_before = 0, [], 0.0
    interval_loss, interval_tokens = 0.0, 0.0  # the current logging interval, so far
    saved = None
    if resume and run_dir is not None:
        saved = ckpt.load_checkpoint(run_dir, model, optimizer, device=device)
    if saved is not None:
        _check_resumable(saved, run_dir, tokenizer, data_digest, context)
        start, history, seconds_before = saved["step"], saved["history"], saved["seconds"]
        interval_loss, interval_tokens = saved["interval_loss"], saved["interval_tokens"]
        ckpt.set_rng_state(saved["rng"])
    # Written once the checkpoint has loaded: a resume that fails leaves the saved settings
    # (a device that cannot run would otherwise become the run's setting).
    if run_dir is not None and context.is_main:
        ckpt.atomic_write_json(run_dir / "config.json", config.to_dict())
    if saved is not None:
        metrics_path = run_dir / "metrics.json"
        if start >= config.steps and metrics_path.is_file():
            metrics = ckpt.read_json(metrics_path, ckpt.METRICS_ADVICE)
            return RunResult(config, metrics, history, model.eval(), saved["seconds"])

    train_set = train_set.to(device)
    trained = model
    if context.world_size > 1:
        trained = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    order = BatchOrder(
        len(train_set),
        config.batch_size,
        config.seed,
        lengths=train_set.input_lengths + train_set.source_lengths,
        window=config.bucket_window,
    )
    # This rank's loss sum and target-token count since the last history entry; a resumed
    # interval's saved (global) part goes to rank 0 only, so that the all-reduce counts it once.
    running = torch.zeros(2, dtype=torch.float64, device=device)
    if context.is_main:
        running += torch.tensor(
            [interval_loss, interval_tokens], dtype=torch.float64, device=device
        )

    def state(step: int) -> dict:
        total = context.all_sum(running.clone()).tolist() if context.world_size > 1 else None
        loss, tokens = total if total is not None else running.tolist()
        return {
            "step": step,
            "history": history,
            "seconds": seconds_before + time.perf_counter() - began,
            "interval_loss": loss,
            "interval_tokens": tokens,
            "rng": ckpt.rng_state(),
            "vocabulary": tokenizer.vocabulary,
            "data": data_digest,
            "world_size": context.world_size,
        }

    model.train()
    with TrainProgress(config.steps, start, enabled=progress and context.is_main) as bar:
        for step in range(start, config.steps):
            torch.manual_seed(mix_seed(config.seed, "step", step, context.rank))
            global_indices = order.indices(step)
            batch = train_set.batch(shard(global_indices, context).to(device))
            # The mean over the GLOBAL batch's target tokens, times world_size because DDP
            # averages gradients over ranks (see relpos.training.distributed).
            global_tokens = int((train_set.labels[global_indices.to(device)] != IGNORE).sum())
            with autocast(config.precision, device):
                logits = model_logits(trained, batch)  # (B, L, V)
            loss_sum = F.cross_entropy(  # in float32 whatever the precision
                logits.float().flatten(0, 1),
                batch.labels.flatten(),
                ignore_index=IGNORE,
                reduction="sum",
            )
            # max(1, ·): a batch without target tokens (empty examples) gives no gradient.
            (loss_sum * (context.world_size / max(1, global_tokens))).backward()
            if config.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            lr = learning_rate(config, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

            running[0] += loss_sum.detach().double()
            running[1] += batch.num_targets
            done = step + 1
            logged = None
            if done % config.log_every == 0 or done == config.steps:
                loss_total, tokens_total = context.all_sum(running.clone()).tolist()
                logged = loss_total / tokens_total
                history.append({"step": done, "loss": logged, "lr": lr})
                running.zero_()
            checkpoint_due = config.checkpoint_every and done % config.checkpoint_every == 0
            if run_dir is not None and (checkpoint_due or done == config.steps):
                snapshot = state(done)
                if context.is_main:
                    ckpt.save_checkpoint(run_dir, model, optimizer, snapshot)
            bar.update(done, logged)

    if run_dir is not None and start == config.steps and saved is None:
        # steps == 0: still leave a checkpoint, so the folder can be loaded and resumed
        snapshot = state(0)
        if context.is_main:
            ckpt.save_checkpoint(run_dir, model, optimizer, snapshot)

    metrics = None
    if context.is_main:
        metrics = evaluate(
            model,
            data,
            device=device,
            batch_size=config.eval_batch_size,
            tokenizer=tokenizer,
            precision=config.precision,
        )
        metrics["final_loss"] = history[-1]["loss"] if history else None
        if run_dir is not None:
            ckpt.atomic_write_json(run_dir / "metrics.json", metrics)
    metrics = context.broadcast(metrics)
    seconds = seconds_before + time.perf_counter() - began
    return RunResult(config, metrics, history, model.eval(), seconds)
