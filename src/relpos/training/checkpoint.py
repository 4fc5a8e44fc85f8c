"""Run folders and checkpoints that survive being killed at any point.

A run folder holds::

    config.json             TrainConfig (written when the run starts)
    checkpoint/
        model.safetensors   model weights (shared modules stored once: safetensors' save_model)
        optimizer.safetensors  AdamW moments and step counts
        state.json          step, optimizer hyper-parameters, RNG states, loss history, tokenizer
    metrics.json            evaluation results (written when the run ends)

Every JSON file is written to a temporary file, fsynced and moved into place with ``os.replace``.
A checkpoint is several files, so it is written whole into ``checkpoint.tmp/`` (each file
fsynced) and then swapped in by two renames: ``checkpoint → checkpoint.old``,
``checkpoint.tmp → checkpoint``. A kill between the two leaves ``checkpoint.old``, which
:func:`load_checkpoint` falls back to; a kill while ``checkpoint.tmp`` is being written leaves the
previous checkpoint untouched. Resuming from an older checkpoint is always safe: training is a
pure function of the seed and the step, so it replays to the same result.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..devices import available_device

__all__ = [
    "atomic_write_json",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint_state",
    "rng_state",
    "set_rng_state",
    "load_run",
    "LoadedRun",
    "RUN_FILES",
]

#: what a run folder may contain; ``overwrite=True`` removes these and nothing else.
RUN_FILES = ("config.json", "metrics.json", "checkpoint", "checkpoint.tmp", "checkpoint.old")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open a directory; the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def atomic_write_json(path: str | Path, obj) -> None:
    """Write ``obj`` as JSON to ``path`` so that readers see the old file or the new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would hide results from other users
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(obj, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _bytes_to_text(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.cpu().numpy().tobytes()).decode("ascii")


def _text_to_bytes(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


def rng_state() -> dict:
    """Every global RNG state training touches, as JSON-able values."""
    import numpy as np

    numpy_state = np.random.get_state()
    state = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *map(float, numpy_state[2:])],
        "torch": _bytes_to_text(torch.get_rng_state()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [_bytes_to_text(s) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    import numpy as np

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state(
        (name, np.array(keys, dtype=np.uint32), int(position), int(has_gauss), cached)
    )
    torch.set_rng_state(_text_to_bytes(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [_text_to_bytes(s) for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Split an optimizer state dict into flat tensors and JSON-able rest."""
    full = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, per_param in full["state"].items():
        for name, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": full["param_groups"], "scalars": scalars}


def _optimizer_state_dict(tensors: dict, rest: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in [*tensors.items(), *rest["scalars"].items()]:
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    # JSON turned tuples (AdamW's betas) into lists; "params" is the one list that is a list.
    groups = [
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in group.items()}
        for group in rest["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def save_checkpoint(
    run_dir: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict
) -> None:
    """Write ``run_dir/checkpoint`` atomically (module docstring); ``state`` is JSON-able.

    ``state`` is stored as ``state.json`` beside the optimizer's own non-tensor state, which
    takes the key ``"optimizer"``; a ``state`` that is not a dict of JSON values, or that uses
    that key, is refused before anything is written.
    """
    from safetensors.torch import save_file, save_model

    _check_state(state)
    run_dir = Path(run_dir)
    tmp, final, old = (
        run_dir / name for name in ("checkpoint.tmp", "checkpoint", "checkpoint.old")
    )
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(model, str(tmp / "model.safetensors"))
    tensors, optimizer_rest = _optimizer_tensors(optimizer)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    for name in ("model.safetensors", "optimizer.safetensors"):
        _fsync_file(tmp / name)
    atomic_write_json(tmp / "state.json", {**state, "optimizer": optimizer_rest})
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(run_dir)
    shutil.rmtree(old, ignore_errors=True)


def _check_state(state: object) -> None:
    if not isinstance(state, dict):
        raise TypeError(
            f"state must be a dict of JSON values, e.g. {{'step': 100}}, "
            f"got {type(state).__name__} {state!r}"
        )
    if "optimizer" in state:
        raise ValueError(
            "state must not have the key 'optimizer': the checkpoint stores the optimizer's "
            "own state under it (pass the optimizer as the optimizer argument)"
        )
    try:
        json.dumps(state)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"state must hold only JSON values (dict, list, str, number): {error}"
        ) from None


def _complete_checkpoint(run_dir: Path) -> Path | None:
    for name in ("checkpoint", "checkpoint.old"):  # .old only exists if killed mid-swap
        folder = run_dir / name
        if (folder / "state.json").is_file():
            return folder
    return None


def read_checkpoint_state(run_dir: str | Path) -> dict | None:
    """``state.json`` of the newest complete checkpoint, or None if there is none."""
    folder = _complete_checkpoint(Path(run_dir))
    if folder is None:
        return None
    return read_json(folder / "state.json", CHECKPOINT_ADVICE)


def load_checkpoint(
    run_dir: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    device: str | torch.device = "cpu",
) -> dict | None:
    """Load the newest complete checkpoint into ``model`` (and ``optimizer``); return its state.

    Returns None when the run folder has no complete checkpoint yet.
    """
    from safetensors.torch import load_file, load_model

    folder = _complete_checkpoint(Path(run_dir))
    if folder is None:
        return None
    with _damaged(folder / "state.json"):
        state = json.loads((folder / "state.json").read_text())
    with _damaged(folder / "model.safetensors"):
        load_model(model, str(folder / "model.safetensors"), strict=True, device=str(device))
    if optimizer is not None:
        with _damaged(folder / "optimizer.safetensors"):
            tensors = load_file(str(folder / "optimizer.safetensors"), device=str(device))
        optimizer.load_state_dict(_optimizer_state_dict(tensors, state["optimizer"]))
    return state


#: What to do about a damaged run file.
CONFIG_ADVICE = "it holds the run's settings: restore it, or start a new run folder"
METRICS_ADVICE = "delete it: resuming the finished run evaluates it again"
CHECKPOINT_ADVICE = (
    "delete that checkpoint folder to resume from an older one (or from the start), or start "
    "the run again with --overwrite"
)


@contextlib.contextmanager
def _damaged(path: Path, advice: str = CHECKPOINT_ADVICE):
    """Turn a file that cannot be parsed (truncated, emptied) into one line naming it."""
    from safetensors import SafetensorError

    try:
        yield
    except (SafetensorError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is damaged ({error}); {advice}") from error


def read_json(path: str | Path, advice: str) -> object:
    """``path``'s JSON; a damaged file is a ``ValueError`` naming it and saying ``advice``."""
    path = Path(path)
    with _damaged(path, advice):
        return json.loads(path.read_text())


@dataclass
class LoadedRun:
    """A finished (or interrupted) run read back from its folder."""

    config: object  # TrainConfig
    model: nn.Module
    tokenizer: object  # Tokenizer
    step: int
    metrics: dict | None

    @torch.no_grad()
    def predict(
        self, sources: Sequence[Sequence[str]], *, max_new_tokens: int | None = None
    ) -> list[list[str]]:
        """The model's greedy output for each source, as the evaluation decodes it.

        ``sources``: token sequences (a string is a sequence of one-character tokens, as the
        digit tasks use). Encoder-decoder: the sources padded into one batch, decoded from BOS;
        decoder-only: each source then SEP as the prompt; encoder-only: one token per source
        token. Decoding stops at EOS or after ``max_new_tokens`` (default: ``max_len``; for a
        decoder-only model what its ``max_len`` positions leave after the prompt).
        """
        from .precision import autocast

        if isinstance(sources, str) or not all(isinstance(s, (str, list, tuple)) for s in sources):
            raise TypeError("sources must be a list of token sequences, e.g. ['12345', '907']")
        device = next(self.model.parameters()).device
        with autocast(self.config.precision, device):  # as the run's evaluation computed
            return self._decode(sources, max_new_tokens, device)

    def _decode(self, sources, max_new_tokens: int | None, device) -> list[list[str]]:
        from .tokenizer import BOS, EOS, PAD, SEP

        encoded = [self.tokenizer.encode(list(source)) for source in sources]
        arch, max_len = self.config.model.arch, self.config.model.max_len
        budget = max_len if max_new_tokens is None else max_new_tokens
        if arch == "decoder":  # one prompt at a time: generate takes prompts of one length
            outputs = []
            for ids in encoded:
                # The prompt and what follows share one sequence of positions: by default,
                # decode only as far as max_len reaches (a learned table has no row beyond).
                room = max(1, max_len - len(ids) - 1)
                prompt = torch.tensor([[*ids, SEP]], device=device)
                limit = room if max_new_tokens is None else max_new_tokens
                outputs.append(self.model.generate(prompt, eos=EOS, max_new_tokens=limit)[0])
            return [self.tokenizer.decode(out.tolist()) for out in outputs]
        width = max((len(ids) for ids in encoded), default=0)
        batch = torch.full((len(encoded), width), PAD, dtype=torch.long, device=device)
        for row, ids in enumerate(encoded):
            batch[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        padding = batch == PAD
        if arch == "encoder":
            best = self.model(batch, padding).argmax(-1)  # (B, L): one output per source token
            return [
                self.tokenizer.decode(best[row, : len(ids)].tolist(), stop_at_eos=False)
                for row, ids in enumerate(encoded)
            ]
        out = self.model.generate(batch, padding, bos=BOS, eos=EOS, max_new_tokens=budget)
        return [self.tokenizer.decode(row.tolist()) for row in out]


def load_run(run_dir: str | Path, *, device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild the model of ``run_dir`` from its config and newest checkpoint (in eval mode)."""
    from ..models import build_model
    from .loop import TrainConfig
    from .tokenizer import Tokenizer

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: it has no config.json")
    config = TrainConfig.from_dict(read_json(run_dir / "config.json", CONFIG_ADVICE))
    state = read_checkpoint_state(run_dir)
    if state is None:
        raise FileNotFoundError(f"run folder {run_dir} has no complete checkpoint yet")
    tokenizer = Tokenizer(state["vocabulary"])
    model = build_model(config.model, len(tokenizer))
    load_checkpoint(run_dir, model, device="cpu")
    metrics_path = run_dir / "metrics.json"
    metrics = read_json(metrics_path, METRICS_ADVICE) if metrics_path.is_file() else None
    device = available_device(device)
    return LoadedRun(config, model.to(device).eval(), tokenizer, state["step"], metrics)
