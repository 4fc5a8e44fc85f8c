"""Set before any test module is imported."""

import os

import torch

# Without a GPU the Triton kernels run under Triton's interpreter (tests/test_triton.py). Once
# Triton has been imported without this variable, the interpreter refuses the kernels ("Cannot
# call @triton.jit'd outside of the scope of a kernel"), and any module may import Triton first
# (torch.compile does), so the choice is made here, before every test module.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
