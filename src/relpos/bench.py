"""Timing and peak memory of the attention backends against SDPA without positions.

A benchmark, not a test: :func:`run_benchmark` returns one row per (length, backend) and
``relpos bench`` prints them and writes JSON. The default setting is issue 2's: float32, B = 1,
H = 4, D = 64, k = 16, tables shared by the heads, key and value terms, forward + backward.

How it measures:

* **time**: each backend runs ``warmup`` untimed calls, then ``repeats`` timed calls (the
  paper-literal reference: one warm-up call and ``reference_repeats`` timed ones), taken in
  turns (one call of every backend per round) so that load from other processes falls on all of
  them alike; the median is reported, and the ratio is to SDPA's median at the same length. A
  "call" is the forward, plus (unless ``backward=False``) ``torch.autograd.grad`` of the output
  against a fixed random upstream gradient with respect to the query, key, value and both tables
  (SDPA: query, key and value). CUDA is synchronised around each call.
* **peak memory**: one extra call per (length, backend). On CUDA, ``max_memory_allocated`` above
  what was allocated before the call. On the CPU, the running total of tensor bytes that
  ``torch.profiler(profile_memory=True)`` records at every allocation and free during the call;
  its maximum is the peak of the tensors the call itself allocates (saved activations, scratch,
  outputs and gradients), not counting the inputs, which exist before it.

**Schemes** (``schemes=...``, ``relpos bench --schemes``): instead of Shaw's backends, the
attention module of each named position scheme, built as a model builds it
(``get_scheme(name, **options).attention_position(H, D, causal=False)``): its ``rotate`` (RoPE)
then its ``attend``, with gradients for the query, key, value and the scheme's parameters; the
``backends`` are then what ``attend`` is asked for (default ``auto``). Schemes that only add to
the input (sinusoidal, learned, integer) have no attention term to time.

On a shared machine: PyTorch's CPU ops run on an OpenMP thread pool, and when other processes
keep the cores busy, OpenMP's default wait (spin, then sleep) can stall each parallel op for a
scheduler tick. That punishes a backend made of many ops (``eager``) far more than a fused one
(SDPA). There, run ``OMP_WAIT_POLICY=passive relpos bench`` (read when torch loads) or
``--threads 1``, and say so next to the numbers (``benchmarks/RESULTS.md`` shows both).
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from .devices import available_device

__all__ = [
    "BenchConfig",
    "BASELINE",
    "DTYPES",
    "run_benchmark",
    "time_steps",
    "default_backends",
    "peak_memory_bytes",
    "machine_info",
    "format_table",
    "name_column",
    "scheme_label",
]

#: the name of the baseline row: SDPA with no position information at all.
BASELINE = "sdpa"

DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


@dataclass
class BenchConfig:
    """What to time. Defaults are issue 2's CPU setting."""

    lengths: tuple[int, ...] = (256, 512, 1024, 2048)  # sequence length L (= Lq = Lk)
    batch: int = 1
    heads: int = 4
    head_dim: int = 64
    max_distance: int = 16  # clipping distance k: tables have 2k + 1 rows
    shared: bool = True  # one table for all heads (the paper's big model), else one per head
    dtype: str = "float32"
    device: str = "cpu"
    repeats: int = 10  # timed calls per backend and length
    reference_repeats: int = 3  # the reference is 50-200x slower: fewer calls keep runs short
    warmup: int = 2  # untimed calls first (allocator, thread pools, kernel caches)
    backends: tuple[str, ...] | None = None  # None: SDPA and every backend that applies
    # (name, options) of position schemes to time instead of Shaw's backends; see the docstring.
    schemes: tuple[tuple[str, dict], ...] | None = None
    backward: bool = True  # forward + backward; False: forward only, under no_grad
    # probability of dropping an attention weight, for SDPA and every Shaw backend alike (the
    # Triton kernels draw it themselves; eager and reference draw an L x L mask)
    dropout: float = 0.0
    # The paper-literal reference gathers (B, H, L, L, D) tensors: 1 GiB each at L = 1024.
    reference_max_length: int = 1024
    memory: bool = True  # also measure peak memory (one extra call each)
    seed: int = 0
    extra: dict = field(default_factory=dict)  # free-form notes copied into the JSON


def check_config(config: BenchConfig) -> tuple[torch.device, list[str]]:
    """``ValueError`` for a setting :func:`run_benchmark` cannot run, before any timing; else
    the device and the backends it will time."""
    _check_fields(config)
    device = available_device(config.device)
    if config.schemes is not None:
        backends = _check_schemes(config)
    else:
        backends = _check_backends(config, device)
    if config.dropout and config.schemes is not None:
        raise ValueError(
            "dropout is timed for Shaw's backends and SDPA; the schemes' attention is timed "
            "without it (leave dropout at 0 with schemes)"
        )
    if config.dropout and "flex" in backends:
        raise ValueError(
            "backend 'flex' has no dropout (FlexAttention has none; with dropout it would run "
            "the eager path): leave it out, or time it without dropout"
        )
    if "flex" in backends and config.backward and device.type == "cpu":
        raise ValueError(
            "backend 'flex' has no backward on the CPU (FlexAttention's limit): time its forward "
            "with backward=False (relpos bench --fwd-only), or run on CUDA"
        )
    if "triton" in backends:  # before the table's header, not at the first timed call
        from .attention.triton_shaw import check_triton_device

        check_triton_device(device)
    return device, backends


def _check_backends(config: BenchConfig, device: torch.device) -> list[str]:
    """The backends to time (the device's defaults if none are named); unknown names fail."""
    backends = list(
        config.backends
        or default_backends(device, DTYPES[config.dtype], dropout=config.dropout > 0)
    )
    from .attention import available_backends

    unknown = [b for b in backends if b != BASELINE and b not in available_backends()]
    if unknown:
        valid = ", ".join([BASELINE, *available_backends()])
        raise ValueError(f"unknown backend(s) {', '.join(unknown)}; valid names: {valid}")
    return backends


def _check_schemes(config: BenchConfig) -> list[str]:
    """Build every scheme once (bad names and options fail here); the backends given to them."""
    from .schemes import get_scheme

    if not config.schemes:
        raise ValueError("schemes must name at least one scheme, got none")
    for name, options in config.schemes:
        scheme = get_scheme(name, **options)
        if scheme.attention_position(config.heads, config.head_dim, causal=False) is None:
            raise ValueError(
                f"scheme {name!r} adds its positions to the input: its attention is SDPA's, "
                "with nothing of its own to time"
            )
    backends = list(config.backends or ("auto",))
    return backends


def scheme_label(name: str, options: dict, backend: str = "auto") -> str:
    """``"deberta k=4"``, ``"t5 num_buckets=64 / sdpa"``: a row's name in a schemes table."""
    words = [
        name,
        *(f"{'k' if key == 'max_distance' else key}={value}" for key, value in options.items()),
    ]
    label = " ".join(words)
    return label if backend == "auto" else f"{label} / {backend}"


def _check_fields(config: BenchConfig) -> None:
    if config.dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {config.dtype!r}")
    for name in ("batch", "heads", "head_dim", "repeats", "reference_repeats"):
        value = getattr(config, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if config.max_distance < 0:
        raise ValueError(f"max_distance must be >= 0, got {config.max_distance}")
    if not config.lengths or any(length < 1 for length in config.lengths):
        raise ValueError(f"lengths must be positive ints, got {config.lengths}")
    if config.warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {config.warmup}")
    dropout = config.dropout
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")


def _applies(name: str, query: Tensor, dropout: bool = False) -> bool:
    from .attention.api import backend_applies

    return backend_applies(
        name,
        query=query,
        key_query=False,
        dropout=dropout,
        has_mask=False,
        value_dim=query.shape[-1],
    )


def default_backends(
    device: str | torch.device, dtype: torch.dtype = torch.float32, *, dropout: bool = False
) -> list[str]:
    """SDPA, then every registered Shaw backend that applies to inputs on ``device`` (with
    attention dropout, if ``dropout``)."""
    from .attention import BACKENDS

    probe = torch.empty(1, 1, 1, 8, device=device, dtype=dtype)
    return [BASELINE, *(name for name in BACKENDS if _applies(name, probe, dropout))]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_bytes(step: Callable[[], object], device: torch.device) -> int | None:
    """Peak bytes of tensors allocated by one ``step()`` above what existed before it.

    CUDA: the allocator's peak statistic. CPU: the maximum of the running allocation total that
    the profiler records with every allocation event. ``None`` where neither is available.
    """
    if device.type == "cuda":
        _synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        _synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    if device.type != "cpu":
        return None
    from torch.profiler import ProfilerActivity, profile

    try:
        from torch._C._profiler import _EventType
    except ImportError:  # the event tree is experimental API; report "n/a" rather than fail
        return None
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    allocations = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            allocations.append((node.start_time_ns, node.extra_fields.alloc_size))
        stack.extend(node.children)
    # Only bytes allocated during the profile are counted, so the running total starts at 0.
    total = peak = 0
    for _, size in sorted(allocations, key=lambda pair: pair[0]):
        total += size
        peak = max(peak, total)
    return peak


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2: some torch builds' profiler logs every start and stop there."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def machine_info(device: str | torch.device) -> dict:
    """What the numbers were measured on."""
    info = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    device = torch.device(device)
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _make_step(name: str, config: BenchConfig, tensors: dict, upstream: Tensor):
    """One forward (+ backward) of backend ``name``, as a no-argument callable."""
    from .attention import shaw_attention

    query, key, value = tensors["query"], tensors["key"], tensors["value"]
    if name == BASELINE:
        leaves = [query, key, value]

        def forward():
            return F.scaled_dot_product_attention(query, key, value, dropout_p=config.dropout)
    else:
        leaves = [query, key, value, tensors["key_table"], tensors["value_table"]]

        def forward():
            return shaw_attention(
                query,
                key,
                value,
                tensors["key_table"],
                tensors["value_table"],
                max_distance=config.max_distance,
                dropout_p=config.dropout,
                backend=name,
            )

    if not config.backward:

        def step():
            with torch.no_grad():
                return forward()

        return step

    def step():
        return torch.autograd.grad(forward(), leaves, upstream)

    return step


def time_steps(
    steps: dict[str, Callable[[], object]],
    *,
    repeats: int | dict[str, int],
    warmup: int | dict[str, int] = 2,
    device: str | torch.device = "cpu",
) -> dict[str, list[float]]:
    """Milliseconds of ``repeats`` calls of every step, taken in turns (one call each per round).

    Taking turns spreads slow phases of a shared machine over all steps alike, which keeps their
    ratios meaningful even when the absolute times are not. ``repeats`` and ``warmup`` may give
    a count per step; a step with fewer repeats sits out the last rounds.
    """
    device = torch.device(device)

    def count(setting, name):
        return setting[name] if isinstance(setting, dict) else setting

    for name, step in steps.items():
        for _ in range(count(warmup, name)):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_ in range(max(count(repeats, name) for name in steps)):
        for name, step in steps.items():
            if round_ >= count(repeats, name):
                continue
            _synchronize(device)
            start = time.perf_counter()
            step()
            _synchronize(device)
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def _inputs(config: BenchConfig, length: int, device: torch.device) -> tuple[dict, Tensor]:
    dtype = DTYPES[config.dtype]
    gen = torch.Generator(device="cpu").manual_seed(config.seed + length)
    rows = 2 * config.max_distance + 1
    shape = (config.batch, config.heads, length, config.head_dim)
    table_shape = (
        (rows, config.head_dim) if config.shared else (config.heads, rows, config.head_dim)
    )

    def leaf(*size):
        return torch.randn(*size, generator=gen).to(device, dtype).requires_grad_(config.backward)

    tensors = {
        "query": leaf(*shape),
        "key": leaf(*shape),
        "value": leaf(*shape),
        "key_table": leaf(*table_shape),
        "value_table": leaf(*table_shape),
    }
    upstream = torch.randn(*shape, generator=gen).to(device, dtype)
    return tensors, upstream


def _scheme_steps(
    config: BenchConfig, backends: list[str], tensors: dict, upstream: Tensor, device
) -> dict[str, Callable[[], object]]:
    """One step per (scheme, backend): the scheme's rotate + attend, as in a model's layer."""
    from .schemes import get_scheme

    query, key, value = tensors["query"], tensors["key"], tensors["value"]
    steps = {BASELINE: _make_step(BASELINE, config, tensors, upstream)}
    for name, options in config.schemes:
        module = get_scheme(name, **options).attention_position(
            config.heads, config.head_dim, causal=False
        )
        module = module.to(device=device, dtype=DTYPES[config.dtype])
        leaves = [query, key, value, *(p for p in module.parameters() if p.requires_grad)]
        for backend in backends:
            if backend == "reference" and tensors["query"].shape[-2] > config.reference_max_length:
                continue  # Shaw's literal reference gathers (B, H, L, L, D) tensors

            def forward(module=module, backend=backend):
                rotated_query, rotated_key = module.rotate(query, key)
                return module.attend(rotated_query, rotated_key, value, backend=backend)

            if config.backward:

                def step(forward=forward, leaves=leaves):
                    return torch.autograd.grad(forward(), leaves, upstream)
            else:

                def step(forward=forward):
                    with torch.no_grad():
                        return forward()

            steps[scheme_label(name, options, backend)] = step
    return steps


def run_benchmark(
    config: BenchConfig | None = None, *, progress: Callable[[str], None] | None = None
) -> dict:
    """Time every backend of ``config`` at every length.

    Returns ``{"config", "machine", "load_average", "rows"}`` where each row is a dict with
    ``length, backend, median_ms, min_ms, ratio_to_sdpa, peak_mib, times_ms`` (``ratio_to_sdpa``
    is ``None`` when SDPA was not run; ``peak_mib`` is ``None`` when memory was not measured).
    """
    config = config or BenchConfig()
    device, backends = check_config(config)
    say = progress or (lambda message: None)
    load_before = _load_average()
    rows = []
    for length in config.lengths:
        names = [b for b in backends if b != "reference" or length <= config.reference_max_length]
        tensors, upstream = _inputs(config, length, device)
        if config.schemes is not None:
            steps = _scheme_steps(config, backends, tensors, upstream, device)
            names = list(steps)
        else:
            steps = {name: _make_step(name, config, tensors, upstream) for name in names}
        # The reference takes seconds a call at L = 1024: one warm-up call, fewer repeats.
        slow = {"reference"}
        warmups = {name: min(config.warmup, 1) if name in slow else config.warmup for name in names}
        repeats = {
            name: config.reference_repeats if name in slow else config.repeats for name in names
        }
        times = time_steps(steps, repeats=repeats, warmup=warmups, device=device)
        medians = {name: statistics.median(times[name]) for name in names}
        for name in names:
            peak = peak_memory_bytes(steps[name], device) if config.memory else None
            ratio = medians[name] / medians[BASELINE] if BASELINE in medians else None
            row = {
                "length": length,
                "backend": name,
                "median_ms": round(medians[name], 3),
                "min_ms": round(min(times[name]), 3),
                "ratio_to_sdpa": None if ratio is None else round(ratio, 3),
                "peak_mib": None if peak is None else round(peak / 2**20, 2),
                "times_ms": [round(t, 3) for t in times[name]],
            }
            rows.append(row)
            say(format_table([row], header=False, column=name_column(config)))
        del tensors, upstream, steps
    return {
        "config": asdict(config),
        "machine": machine_info(device),
        "load_average": {"before": load_before, "after": _load_average()},
        "rows": rows,
    }


def name_column(config: BenchConfig) -> tuple[str, int]:
    """The name column's title and width: backends are short, scheme labels carry options."""
    return ("backend", 10) if config.schemes is None else ("scheme", 30)


def format_table(
    rows: Sequence[dict], *, header: bool = True, column: tuple[str, int] = ("backend", 10)
) -> str:
    """Rows of :func:`run_benchmark` as an aligned text table (``column``: the name column's
    title and width)."""
    title, width = column
    lines = []
    if header:
        lines.append(
            f"{'L':>6}  {title:<{width}} {'median ms':>10} {'min ms':>9} {'x SDPA':>8} "
            f"{'peak MiB':>9}"
        )
    for row in rows:
        ratio = "-" if row["ratio_to_sdpa"] is None else f"{row['ratio_to_sdpa']:.2f}"
        peak = "n/a" if row["peak_mib"] is None else f"{row['peak_mib']:.1f}"
        lines.append(
            f"{row['length']:>6}  {row['backend']:<{width}} {row['median_ms']:>10.2f} "
            f"{row['min_ms']:>9.2f} {ratio:>8} {peak:>9}"
        )
    return "\n".join(lines)
