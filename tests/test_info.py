"""``relpos info`` and the reasons ``auto`` gives for passing over the Triton kernel."""

import types

import pytest
import torch

from relpos.attention import api, auto_backend, triton_shaw
from relpos.cli import main


def test_info_names_versions_and_the_backend_auto_runs_on_the_cpu(capsys):
    assert main(["info", "--head-dim", "32"]) == 0
    out = capsys.readouterr().out
    assert f"torch {torch.__version__}" in out
    assert "inputs (2, 16, L, 32)" in out
    assert "cpu float32: eager (not triton: the inputs are on cpu" in out


def test_info_refuses_a_head_size_below_one(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["info", "-D", "0"])
    assert exit_info.value.code == 2
    assert "--head-dim" in capsys.readouterr().err


@pytest.fixture
def hopper(monkeypatch):
    """A faked H100 with Triton 3.6: the stand-in queries below are 'on' it."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: (9, 0))
    monkeypatch.setattr(triton_shaw, "triton_available", lambda: True)
    monkeypatch.setattr(triton_shaw, "triton_version", lambda: (3, 6))
    triton_shaw._cached_capability.cache_clear()
    yield
    triton_shaw._cached_capability.cache_clear()


def stand_in(shape=(2, 16, 8, 64), dtype=torch.bfloat16, cuda=True):
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    return types.SimpleNamespace(is_cuda=cuda, dtype=dtype, shape=shape, device=device)


def test_auto_runs_the_kernel_when_nothing_is_refused(hopper):
    query = stand_in()
    assert triton_shaw.triton_refusal(query=query) is None
    assert triton_shaw.triton_applies(query=query)
    assert auto_backend(query=query, key_query=False, dropout=False, has_mask=True) == "triton"
    assert api._pick_backend("auto", query=query) == "triton"
    # Dropout is drawn in the kernels: it is no reason to pass them over.
    assert auto_backend(query=query, key_query=False, dropout=True, has_mask=False) == "triton"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (dict(query=stand_in(cuda=False)), "on cpu"),
        (dict(key_query=True), "key_query=True"),
        (dict(query=stand_in(dtype=torch.float64)), "torch.float64 inputs"),
        (dict(query=stand_in(shape=(2, 16, 8, 256))), "head size 256 > 128"),
        (dict(value_dim=160), "head size 160 > 128"),
        (dict(query=stand_in(shape=(4096, 16, 8, 64))), "batch × heads = 65536 > 65535"),
    ],
)
def test_each_refusal_names_its_reason_and_auto_runs_eager(hopper, change, reason):
    context = {"query": stand_in(), **change}
    refusal = triton_shaw.triton_refusal(**context)
    assert refusal is not None and reason in refusal
    assert not triton_shaw.triton_applies(**context)
    assert auto_backend(**context) == "eager"


def test_older_cards_and_older_triton_are_refused_with_their_numbers(hopper, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: (7, 5))
    triton_shaw._cached_capability.cache_clear()
    assert "compute capability 7.5 < 8.0" in triton_shaw.triton_refusal(query=stand_in())
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: (8, 6))
    triton_shaw._cached_capability.cache_clear()
    assert triton_shaw.triton_refusal(query=stand_in()) is None
    monkeypatch.setattr(triton_shaw, "triton_version", lambda: (3, 3))
    assert "Triton 3.3 < 3.4" in triton_shaw.triton_refusal(query=stand_in())
    monkeypatch.setattr(triton_shaw, "triton_available", lambda: False)
    assert "not installed" in triton_shaw.triton_refusal(query=stand_in())
