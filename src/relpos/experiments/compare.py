"""Train a grid of position schemes on a task and compare them on seen and unseen lengths.

This is what ``relpos compare`` runs. An :class:`Experiment` is one task, a list of
:class:`Variant` s (a scheme with its options, under a display label) and a list of seeds; every
(variant, seed) pair is one call to :func:`relpos.training.train`. :func:`run_compare` runs a list
of experiments (a preset may hold several tasks) into one run folder::

    OUT/
      results.json        # the configs, every run's metrics, mean ± std over seeds (written
                          # before the first run and after every run, so a compare that was
                          # interrupted or failed can --resume)
      table.md            # the summary table (also printed)
      accuracy.png        # exact-match accuracy vs. length, one line per variant
      runs/<task>/<variant>/seed<S>/   # each training run (config, checkpoint, metrics)

Scoring is free-running greedy decoding, exact match per sequence (and per token), reported by
length; "seen" lengths are those inside the task's training range, "unseen" all others.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import platform
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..devices import available_device

__all__ = [
    "Variant",
    "Experiment",
    "run_compare",
    "summarise",
    "format_table",
    "markdown_table",
    "default_out_dir",
    "default_jobs",
    "validate",
]

RESULTS_FILE = "results.json"
TABLE_FILE = "table.md"
PLOT_FILE = "accuracy.png"


@dataclass
class Variant:
    """One line of a comparison: the scheme ``scheme`` built with ``options``, shown as ``label``.

    ``options`` go to :func:`relpos.get_scheme` (e.g. ``{"max_distance": 4, "value_term": False}``
    for Shaw). The label defaults to the scheme name followed by its options.
    """

    scheme: str
    options: dict = field(default_factory=dict)
    label: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.scheme, str) or not self.scheme:
            raise TypeError(f"scheme must be a scheme name (str), got {self.scheme!r}")
        if not isinstance(self.options, dict):
            raise TypeError(f"options must be a dict, got {type(self.options).__name__}")
        if not self.label:
            shown = " ".join(f"{_SHORT.get(k, k)}={v}" for k, v in self.options.items())
            self.label = f"{self.scheme} {shown}".strip()


#: short names for option keys in default labels ("shaw k=4", not "shaw max_distance=4").
_SHORT = {"max_distance": "k"}


@dataclass
class Experiment:
    """One task, the variants to train on it, and the seeds to repeat each with.

    ``train`` and ``model`` hold :class:`relpos.training.TrainConfig` and
    :class:`relpos.models.ModelConfig` fields that differ from their defaults (e.g.
    ``{"steps": 600}``, ``{"arch": "decoder"}``); the task, scheme and seed are filled in per run.
    """

    task: str
    variants: list[Variant]
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    task_options: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    title: str = ""

    def __post_init__(self) -> None:
        if not self.variants:
            raise ValueError(f"experiment on task {self.task!r} has no variants (schemes) to train")
        labels = [v.label for v in self.variants]
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise ValueError(f"variant labels must be unique, got duplicates: {duplicates}")
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        for seed in self.seeds:
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                raise ValueError(f"seeds must be non-negative ints, got {self.seeds!r}")
        for name, value in (("train", self.train), ("model", self.model)):
            for reserved in ("task", "task_options", "seed", "model", "scheme", "scheme_options"):
                if reserved in value:
                    raise ValueError(
                        f"Experiment.{name} must not set {reserved!r}: compare sets it per run"
                    )
        self.title = self.title or self.task

    def train_config(self, variant: Variant, seed: int):
        """The :class:`relpos.training.TrainConfig` for one run."""
        from ..models import ModelConfig
        from ..training import TrainConfig

        model = ModelConfig(
            **self.model, scheme=variant.scheme, scheme_options=dict(variant.options)
        )
        return TrainConfig(
            **self.train,
            task=self.task,
            task_options=dict(self.task_options),
            model=model,
            seed=seed,
        )


def validate(experiments: Sequence[Experiment]) -> None:
    """Fail fast, before any training: every task, scheme and config field must exist, every
    variant's model must fit the task's lengths, and every run must have a folder of its own
    (``runs/<title>/<label>/seed<S>``, names reduced to :func:`slug`), so no seed may repeat."""
    from .. import get_scheme
    from ..tasks import get_task
    from ..training.loop import prepare_model

    if not experiments:
        raise ValueError("nothing to compare: no experiments given")
    _distinct_slugs([e.title for e in experiments], "experiments", "title")
    for experiment in experiments:
        _distinct_slugs(
            [v.label for v in experiment.variants], f"experiment {experiment.title!r}", "label"
        )
        if len(set(experiment.seeds)) != len(experiment.seeds):
            raise ValueError(
                f"experiment {experiment.title!r}: seeds must not repeat (a run is one variant "
                f"and seed), got {experiment.seeds!r}"
            )
        task = get_task(experiment.task, **experiment.task_options)  # unknown names: listed
        for variant in experiment.variants:
            get_scheme(variant.scheme, **variant.options)
        try:
            configs = [experiment.train_config(v, experiment.seeds[0]) for v in experiment.variants]
        except TypeError as error:  # an unknown TrainConfig/ModelConfig field
            raise ValueError(f"experiment {experiment.title!r}: {error}") from None
        # Every variant's model on the data (a learned table shorter than the lengths fails
        # here, not after the other variants have trained; a resume could not fix it).
        data = task.generate(experiment.seeds[0])
        for variant, config in zip(experiment.variants, configs, strict=True):
            try:
                prepare_model(config, data)
            except ValueError as error:
                raise ValueError(
                    f"experiment {experiment.title!r}, variant {variant.label!r}: {error}"
                ) from None


def default_out_dir(root: str | Path = "runs") -> Path:
    """``runs/compare-<timestamp>``, made unique if two compares start within one second."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(root) / f"compare-{stamp}"
    suffix = 2
    while out.exists():
        out = Path(root) / f"compare-{stamp}-{suffix}"
        suffix += 1
    return out


def slug(text: str) -> str:
    """``text`` as one folder name: anything but letters, digits and ``_.=+-`` becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", text).strip("_") or "variant"


def _distinct_slugs(names: list[str], where: str, fix: str) -> None:
    """Two names whose run folders would be one (the same name, or one slug) are an error."""
    first: dict[str, str] = {}
    for name in names:
        folder = slug(name)
        if folder in first:
            other = first[folder]
            how = "are the same" if other == name else f"both become {folder!r}"
            raise ValueError(
                f"{where}: {other!r} and {name!r} would share the same run folder (the names "
                f"{how}); give one of them another {fix}"
            )
        first[folder] = name


def _mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (0 for a single value); ``None`` values are skipped
    (an empty group, e.g. no unseen lengths), and all-``None`` gives ``(None, None)``."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


#: measures of relpos.training.evaluate that every summary has (others it reports, such as the
#: teacher-forced ``tf_token``, are summarised too when present).
MEASURES = ("exact", "token")


def _stats(entries: list[dict]) -> dict:
    keys = list(MEASURES)
    for entry in entries:
        for key, value in entry.items():
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            if key not in keys and key != "count" and (numeric or value is None):
                keys.append(key)
    out = {}
    for key in keys:
        out[f"{key}_mean"], out[f"{key}_std"] = _mean_std([e.get(key) for e in entries])
    return out


def summarise(runs: list[dict]) -> dict:
    """Mean ± std over seeds of each variant's metrics.

    ``runs``: ``{"variant": label, "seed": s, "metrics": <train metrics>, "seconds": t}`` dicts.
    Returns ``{label: {"seeds": n, "seen": {...}, "unseen": {...}, "by_length": {"L": {...}},
    "final_loss_mean": x, "seconds_mean": t}}``; each ``{...}`` has ``<m>_mean`` and ``<m>_std``
    for ``m`` in exact, token and any other measure the metrics hold (e.g. ``tf_token``);
    ``by_length`` entries also have ``seen`` and ``count``.
    The std is the sample standard deviation over seeds.

    How ``by_length`` combines seeds: ``<m>_mean`` is the unweighted mean over seeds of each
    seed's rate at that length (not pooled over examples), while ``count`` is the number of
    examples *summed* over seeds (three seeds that each score the same 10 strings give 30). A
    length present in only some seeds' evaluation data (SCAN's ``n_eval`` subsamples per seed)
    gets its mean and std from those seeds only: from one seed the std is 0, which says nothing
    about the spread. ``seen`` and ``unseen`` are each seed's pooled rate over its own examples,
    then averaged over seeds the same way.
    """
    by_variant: dict[str, list[dict]] = {}
    for run in runs:
        by_variant.setdefault(run["variant"], []).append(run)
    summary = {}
    for label, variant_runs in by_variant.items():
        metrics = [run["metrics"] for run in variant_runs]
        lengths = sorted({int(n) for m in metrics for n in m["by_length"]})
        by_length = {}
        for n in lengths:
            entries = [m["by_length"][str(n)] for m in metrics if str(n) in m["by_length"]]
            by_length[str(n)] = {
                **_stats(entries),
                "seen": bool(entries[0]["seen"]),
                "count": sum(int(e["count"]) for e in entries),
            }
        summary[label] = {
            "seeds": len(variant_runs),
            "seen": _stats([m["seen"] for m in metrics]),
            "unseen": _stats([m["unseen"] for m in metrics]),
            "by_length": by_length,
            "final_loss_mean": _mean_std([m.get("final_loss") for m in metrics])[0],
            "seconds_mean": _mean_std([run["seconds"] for run in variant_runs])[0],
        }
    return summary


def _pm(stats: dict, key: str, spread: bool) -> str:
    """``mean ± std``; with one seed (``spread`` False) the value alone: there is no spread."""
    mean, std = stats.get(f"{key}_mean"), stats.get(f"{key}_std")
    if mean is None:
        return "—"
    return f"{mean:.2f} ± {std:.2f}" if spread else f"{mean:.2f}"


def _span(lengths: list[int]) -> str:
    return f"{min(lengths)}–{max(lengths)}" if min(lengths) != max(lengths) else str(min(lengths))


def _unseen_text(unseen: list[int], low: int, high: int) -> str:
    """The unseen lengths as spans below and above the training range (``"1, 5–6"``), so a
    span never covers the seen lengths; a span may skip lengths the evaluation lacks."""
    groups = [
        [n for n in unseen if n < low],
        [n for n in unseen if low <= n <= high],  # none when seen means "in the range"
        [n for n in unseen if n > high],
    ]
    return ", ".join(_span(group) for group in groups if group) or "none"


def _table_rows(experiment: dict) -> tuple[list[str], list[list[str]]]:
    low, high = experiment["train_lengths"]
    by_length = next(iter(experiment["summary"].values()))["by_length"]
    unseen = [int(n) for n, e in by_length.items() if not e["seen"]]
    # The seen column scores the training lengths the evaluation has (all of them by default).
    seen = [int(n) for n, e in by_length.items() if e["seen"]]
    header = [
        "variant",
        f"seen {_span(seen)}" if seen else "seen (none evaluated)",
        f"unseen {_unseen_text(unseen, low, high)}",
        "unseen token",
        "unseen token, TF",
        "s/run",
    ]
    spread = len(experiment["seeds"]) > 1
    rows = [
        [
            label,
            _pm(s["seen"], "exact", spread),
            _pm(s["unseen"], "exact", spread),
            _pm(s["unseen"], "token", spread),
            _pm(s["unseen"], "tf_token", spread),
            f"{s['seconds_mean']:.0f}",
        ]
        for label, s in experiment["summary"].items()
    ]
    return header, rows


def _experiment_caption(experiment: dict) -> str:
    seeds = experiment["seeds"]
    if len(seeds) > 1:
        over = f"mean ± std over seeds {', '.join(map(str, seeds))}"
    else:
        over = f"seed {seeds[0]}"
    return f"{experiment['title']}: accuracy, greedy decoding (TF: teacher-forced); {over}"


def format_table(results: dict):
    """The summary as ``rich`` renderables (a caption and a table per experiment), ready for
    ``Console.print``."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    tables = []
    for experiment in results["experiments"]:
        if not experiment.get("summary"):
            continue
        header, rows = _table_rows(experiment)
        table = Table()
        for i, column in enumerate(header):
            table.add_column(column, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*row)
        # The caption above the table rather than as its title: a title wraps at the table's width.
        tables.append(Group(Text(_experiment_caption(experiment), style="italic"), table))
    return tables


def markdown_table(results: dict) -> str:
    """The same summary as Markdown (``table.md``, and for the docs)."""
    blocks = []
    for experiment in results["experiments"]:
        if not experiment.get("summary"):
            continue
        header, rows = _table_rows(experiment)
        lines = [f"**{_experiment_caption(experiment)}**", ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        lines.extend("| " + " | ".join(row) + " |" for row in rows)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _machine() -> dict:
    import torch

    processor = platform.processor() or platform.machine()
    try:  # Linux names the CPU model here; platform.processor() often says only "x86_64"
        with open("/proc/cpuinfo") as cpuinfo:
            names = [
                line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")
            ]
        processor = names[0] if names else processor
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "processor": processor,
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _write_json(path: Path, payload: dict) -> None:
    """Write atomically, so a compare killed mid-write leaves the previous results intact."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(tmp, path)


def _check_out(out: Path, resume: bool) -> dict | None:
    """Check ``out`` can be used (never a non-empty folder unless resuming); the prior results."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {str(out)!r} exists and is not a folder")
    existing = out.is_dir() and any(out.iterdir())
    if resume:
        if not (out / RESULTS_FILE).is_file():
            raise FileNotFoundError(f"cannot resume: no {RESULTS_FILE} in {str(out)!r}")
        return json.loads((out / RESULTS_FILE).read_text())
    if existing:
        raise FileExistsError(
            f"run folder {str(out)!r} already exists and is not empty; choose another --out, "
            "or pass --resume to continue an interrupted compare there"
        )
    return None


def run_compare(
    experiments: Sequence[Experiment],
    out: str | Path | None = None,
    *,
    device: str | None = None,
    progress: bool = True,
    resume: bool = False,
    command: str = "",
    preset: str | None = None,
    log: Callable[[str], None] | None = print,
    plot: bool = True,
    jobs: int | None = None,
) -> dict:
    """Train and evaluate every (experiment, variant, seed); write the run folder; return results.

    Args:
        experiments: what to train (see :mod:`relpos.experiments.presets` for the named ones).
        out: the run folder (default ``runs/compare-<timestamp>``); an existing, non-empty folder
            raises ``FileExistsError`` unless ``resume``.
        device: overrides every experiment's ``train["device"]`` (``"cpu"``, ``"cuda"``, …).
        progress: show progress: each run's bar with one job, a bar over runs with several.
        resume: continue a compare in ``out`` that was interrupted or failed: finished runs are
            kept, an interrupted one continues from its last checkpoint, the others start. The
            experiments must be the ones saved in ``results.json`` (``ValueError`` naming each
            difference otherwise), except for settings that do not change what a run computes
            (``relpos.training``'s ``RESUMABLE_CHANGES``: device, eval batch size, checkpoint
            interval, threads). A finished run whose folder no longer holds its
            ``metrics.json`` (deleted by hand) is trained again, so every recorded run keeps the
            files the plots read; training is deterministic, so it gets the same metrics.
        command: the command line, recorded in ``results.json``.
        log: where one-line status messages go (``None``: nowhere).
        plot: write ``accuracy.png`` (needs matplotlib).
        jobs: training runs at a time, each in its own process (default
            :func:`default_jobs`). Every run is deterministic given its seed, so the results do
            not depend on ``jobs``. If a run fails, no further run starts; the runs in progress
            finish and are recorded, and the first error is raised (``--resume`` continues).
    """
    from ..tasks import get_task

    experiments = list(experiments)
    validate(experiments)
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ValueError(f"jobs must be a positive int or None, got {jobs!r}")
    workers = jobs or default_jobs(device or experiments[0].train.get("device", "cpu"))
    for experiment in experiments:  # before the run folder exists, like validate()'s checks
        available_device(device or experiment.train.get("device", "cpu"))
    out = Path(out) if out is not None else default_out_dir()
    previous = _check_out(out, resume)
    if previous is not None:
        _check_resume(previous, experiments, out)
    say = log or (lambda message: None)

    results = {
        "command": command,
        "preset": preset,
        "out": str(out),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": _machine(),
        "seconds": 0.0,
        "complete": False,
        "experiments": [],
    }
    for experiment in experiments:
        # The training range (for the table and the plot's shading) comes from the data itself:
        # an evaluation set need not contain every seen length (SCAN's test set has none).
        data = get_task(experiment.task, **experiment.task_options).generate(experiment.seeds[0])
        low, high = data.train_lengths
        if all(low <= ex.length <= high for ex in data.evaluation):
            say(
                f"{experiment.title}: every evaluation length lies in the training range "
                f"{low}–{high}, so the unseen columns will be empty (evaluate longer lengths: "
                "--eval-lengths, or the task's max_eval_length option)"
            )
        train_options = dict(experiment.train)
        if device is not None:
            train_options["device"] = device
        results["experiments"].append(
            {
                "title": experiment.title,
                "task": experiment.task,
                "task_options": experiment.task_options,
                "seeds": list(experiment.seeds),
                "train": train_options,
                "model": experiment.model,
                "variants": [dataclasses.asdict(v) for v in experiment.variants],
                "train_lengths": list(data.train_lengths),
                "train_examples": len(data.train),
                # seeds[0]'s data: a task that subsamples per seed (SCAN's n_eval) may evaluate
                # other seeds on other lengths; the summary's by_length has them all
                "eval_lengths": sorted({ex.length for ex in data.evaluation}),
                "runs": [],
                "summary": {},
            }
        )
    if previous is not None:
        for old, new in zip(previous["experiments"], results["experiments"], strict=True):
            for run in old["runs"]:
                if (out / run["run_dir"] / "metrics.json").is_file():
                    new["runs"].append(run)
                else:
                    say(
                        f"{new['title']} · {run['variant']} · seed {run['seed']}: finished, but "
                        f"{out / run['run_dir'] / 'metrics.json'} is gone; training it again"
                    )
        results["started"] = previous.get("started", results["started"])

    start = time.perf_counter()
    spent_before = previous.get("seconds", 0.0) if previous else 0.0
    # Written before any run, so a compare killed or failing before its first run finishes
    # can still --resume (and a plain rerun is not refused for a folder without results).
    out.mkdir(parents=True, exist_ok=True)
    _update(results, out, spent_before)

    pending = []
    for index, experiment in enumerate(experiments):
        record = results["experiments"][index]
        for variant in experiment.variants:
            for seed in experiment.seeds:
                if any(r["variant"] == variant.label and r["seed"] == seed for r in record["runs"]):
                    continue  # finished before an interruption (--resume)
                config = experiment.train_config(variant, seed)
                if device is not None:
                    config.device = device
                if workers > 1 and config.threads is None:
                    # Small models gain little from intra-op threads; one per worker process
                    # keeps the workers from fighting over the cores.
                    config.threads = max(1, (os.cpu_count() or 1) // workers)
                run_dir = out / "runs" / slug(experiment.title) / slug(variant.label)
                run_dir = run_dir / f"seed{seed}"
                label = f"{experiment.title} · {variant.label} · seed {seed}"
                pending.append((index, variant.label, seed, config, run_dir, label))

    total = sum(len(e.variants) * len(e.seeds) for e in experiments)
    finished = total - len(pending)

    def record_run(index, label, seed, run_dir, metrics, seconds) -> None:
        results["experiments"][index]["runs"].append(
            {
                "variant": label,
                "seed": seed,
                "run_dir": str(run_dir.relative_to(out)),
                "seconds": seconds,
                "metrics": metrics,
            }
        )
        _update(results, out, spent_before + time.perf_counter() - start)

    def done_message(label: str, metrics: dict, seconds: float) -> str:
        def fmt(group: str) -> str:
            value = metrics[group].get("exact")
            return "—" if value is None else f"{value:.2f}"

        return f"{label}: seen {fmt('seen')}, unseen {fmt('unseen')} exact ({seconds:.0f} s)"

    def failed(error: BaseException, title: str, waiting: int = 0) -> None:
        recorded = sum(len(e["runs"]) for e in results["experiments"])
        note = (
            f"relpos compare: run {title} failed; {recorded} of {total} runs are recorded in "
            f"{out / RESULTS_FILE} (rerun with --resume to continue)"
        )
        if waiting:
            note += (
                f"; no new run starts, and the {waiting} in progress will finish and be recorded"
            )
        say(f"{note}: {type(error).__name__}: {error}")
        # BaseException.add_note is Python 3.11+; the attribute it sets works on 3.10 too.
        error.__notes__ = [*getattr(error, "__notes__", []), note]

    if workers == 1:
        for number, (index, label, seed, config, run_dir, title) in enumerate(pending, 1):
            say(f"[{finished + number}/{total}] {title}")
            interrupted = resume and run_dir.is_dir() and any(run_dir.iterdir())
            try:
                metrics, seconds = _train_one(config, run_dir, interrupted, progress)
            except Exception as error:
                failed(error, title)
                raise
            say("  " + done_message(title, metrics, seconds))
            record_run(index, label, seed, run_dir, metrics, seconds)
    elif pending:
        from concurrent.futures import FIRST_COMPLETED, wait

        say(f"{len(pending)} runs, {workers} at a time (--jobs)")
        queue = iter(pending)
        running = {}  # future -> job
        first_error = None

        def submit_next() -> None:
            job = next(queue, None)
            if job is not None:
                run_dir = job[4]
                interrupted = resume and run_dir.is_dir() and any(run_dir.iterdir())
                running[pool.submit(_train_one, job[3], run_dir, interrupted, False)] = job

        with _RunsProgress(total, finished, enabled=progress) as bar:
            pool = _executor(workers)
            try:
                # One run per worker at a time, not all at once: after a failure no new run
                # starts (a process pool hands queued runs to its workers early, and those
                # can no longer be cancelled).
                for _ in range(workers):
                    submit_next()
                while running:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        index, label, seed, config, run_dir, title = running.pop(future)
                        try:
                            metrics, seconds = future.result()
                        except Exception as error:
                            if first_error is None:
                                first_error = error
                                failed(error, title, len(running))
                            else:
                                say(f"run {title} failed too: {type(error).__name__}: {error}")
                            continue
                        message = done_message(title, metrics, seconds)
                        bar.advance(message) if bar.enabled else say(message)
                        record_run(index, label, seed, run_dir, metrics, seconds)
                        if first_error is None:
                            submit_next()
            finally:
                # On Ctrl-C as well: start nothing more, wait for the runs in progress.
                pool.shutdown(wait=True, cancel_futures=True)
        if first_error is not None:
            raise first_error

    results["complete"] = True
    _update(results, out, spent_before + time.perf_counter() - start)
    (out / TABLE_FILE).write_text(markdown_table(results))
    if plot:
        from .plots import plot_accuracy

        plot_accuracy(results, out / PLOT_FILE)
    return results


def _executor(workers: int):
    """The pool that trains runs in parallel (a seam: tests swap in threads)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # "spawn": a fresh interpreter per worker; forking a process that has already used torch's
    # thread pools is not safe.
    context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=context)


def _settings(experiment: Experiment) -> dict[str, object]:
    """What an experiment's runs compute with, as ``{"train.steps": 800, ...}``: defaults filled
    in and options as JSON gives them back (as ``TrainConfig.to_dict`` does for a run's resume),
    without the settings a run may resume with changed (``RESUMABLE_CHANGES``)."""
    from ..models.config import json_options
    from ..training.loop import RESUMABLE_CHANGES

    config = experiment.train_config(experiment.variants[0], experiment.seeds[0]).to_dict()
    model = config.pop("model")
    settings: dict[str, object] = {
        "task": experiment.task,
        "title": experiment.title,  # it names the run folders
        "seeds": list(experiment.seeds),
        "variants": [v.label for v in experiment.variants],
    }
    for variant in experiment.variants:
        options = json_options(variant.options, f"variant {variant.label!r} options")
        settings[f"variant {variant.label!r}"] = {"scheme": variant.scheme, "options": options}
    for key, value in config.pop("task_options").items():
        settings[f"task_options.{key}"] = value
    for key, value in config.items():
        if key not in ("task", "seed", *RESUMABLE_CHANGES):
            settings[f"train.{key}"] = value
    for key, value in model.items():
        if key not in ("scheme", "scheme_options"):  # per variant, above
            settings[f"model.{key}"] = value
    return settings


def _check_resume(previous: dict, experiments: list[Experiment], out: Path) -> None:
    """Refuse to resume with experiments other than the saved ones: the finished runs would be
    mixed with runs trained on other settings in one table."""
    saved = previous.get("experiments", [])
    if len(saved) != len(experiments):
        raise ValueError(
            f"cannot resume {str(out)!r}: its {RESULTS_FILE} was written for different "
            f"experiments ({[e.get('title') for e in saved]} → {[e.title for e in experiments]}); "
            "resume with the same command, or start a new run folder"
        )
    unset = object()

    def shown(value: object) -> str:
        return "(not set)" if value is unset else repr(value)

    for record, experiment in zip(saved, experiments, strict=True):
        try:
            old = _settings(
                Experiment(
                    task=record["task"],
                    variants=[Variant(**v) for v in record["variants"]],
                    seeds=record["seeds"],
                    task_options=record["task_options"],
                    train=record["train"],
                    model=record["model"],
                    title=record["title"],
                )
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"cannot resume {str(out)!r}: experiment {record.get('title')!r} in its "
                f"{RESULTS_FILE} cannot be read back ({type(error).__name__}: {error})"
            ) from None
        new = _settings(experiment)
        changed = [
            f"{key}: {shown(old.get(key, unset))} → {shown(new.get(key, unset))}"
            for key in dict.fromkeys([*old, *new])
            if old.get(key, unset) != new.get(key, unset)
        ]
        if changed:
            raise ValueError(
                f"cannot resume {str(out)!r}: experiment {record['title']!r} differs from the "
                f"saved one its finished runs were trained with ({'; '.join(changed)}); resume "
                "with the same settings, or start a new run folder"
            )


def default_jobs(device: str = "cpu") -> int:
    """Parallel runs: one per CPU core (at most 8) on the CPU, one on an accelerator."""
    if not str(device).startswith("cpu"):
        return 1
    return max(1, min(8, os.cpu_count() or 1))


def _train_one(config, run_dir: Path, resume: bool, progress: bool) -> tuple[dict, float]:
    """One training run (in this process or a worker): its metrics and seconds."""
    from .. import training

    result = training.train(config, run_dir, resume=resume, progress=progress)
    return result.metrics, result.seconds


class _RunsProgress:
    """A rich progress bar over the runs of a compare (nothing if disabled or without rich)."""

    def __init__(self, total: int, done: int, *, enabled: bool) -> None:
        self.total, self.done, self.enabled = total, done, enabled
        self._progress = None

    def __enter__(self) -> _RunsProgress:
        if not self.enabled:
            return self
        try:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
        except ImportError:
            self.enabled = False
            return self
        self._progress = Progress(
            TextColumn("runs"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        self._progress.__enter__()
        self._task = self._progress.add_task("runs", total=self.total, completed=self.done)
        return self

    def advance(self, message: str) -> None:
        if self._progress is not None:
            self._progress.console.print(message, highlight=False)
            self._progress.advance(self._task)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)


def _update(results: dict, out: Path, seconds: float) -> None:
    results["seconds"] = round(seconds, 1)
    for record in results["experiments"]:
        order = {v["label"]: i for i, v in enumerate(record["variants"])}
        record["runs"].sort(key=lambda r: (order[r["variant"]], r["seed"]))
        record["summary"] = summarise(record["runs"]) if record["runs"] else {}
    _write_json(out / RESULTS_FILE, results)
