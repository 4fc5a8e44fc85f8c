"""``torch.compile`` of a whole model: the same outputs and gradients as eager.

Shaw's ``eager`` fast path runs outside the compiled graph (Inductor cannot compile its in-place
softmax; see :func:`relpos.attention.eager.eager_attention`); it once failed inside Inductor with
``KeyError: 'buf1'``. T5 stands for the schemes whose bias goes through SDPA. Compiling takes
~10 s per model on the CPU, so two schemes are checked, not the whole family. Each runs in a
process of its own, so that what Dynamo and Inductor set up stays out of the other tests (Triton
imported early once broke the interpreter runs of ``tests/test_triton.py``; see conftest.py).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = """
import sys, torch
from relpos.models import ModelConfig, build_model
scheme, k = sys.argv[1], int(sys.argv[2])
options = {"max_distance": k} if k else {}
torch.manual_seed(0)
model = build_model(ModelConfig(scheme=scheme, scheme_options=options), vocab_size=16).eval()
source, target = torch.randint(3, 16, (4, 9)), torch.randint(3, 16, (4, 7))
padding = torch.zeros(4, 9, dtype=torch.bool)
padding[0, 6:] = True
params = list(model.parameters())
expected = model(source, target, padding)
expected_grads = torch.autograd.grad(expected.sum(), params)
actual = torch.compile(model)(source, target, padding)
grads = torch.autograd.grad(actual.sum(), params)
torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)
for grad, expected_grad in zip(grads, expected_grads, strict=True):
    torch.testing.assert_close(grad, expected_grad, rtol=1e-3, atol=1e-4)
print("compiled == eager")
"""


@pytest.mark.slow
@pytest.mark.parametrize("scheme, k", [("shaw", 4), ("t5", 0)])
def test_compiled_model_matches_eager(scheme, k):
    done = subprocess.run(
        [sys.executable, "-c", CHECK, scheme, str(k)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "compiled == eager" in done.stdout
