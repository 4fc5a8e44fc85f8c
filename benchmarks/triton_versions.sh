#!/usr/bin/env bash
# Which Triton versions the kernels work with, without a GPU: for each version, a fresh venv
# (torch 2.13.0 CPU + that Triton), then
#   1. the default tiles compiled for sm_90 as a launch would (compile_kernels), bf16 and fp32,
#      D = 64: each kernel lowers to a cubin, and its shared memory per block;
#   2. a causal case with unequal lengths under the interpreter against the eager path
#      (values and the five gradients, float32), without dropout and with the kernels' own
#      (given to eager as the mask triton_dropout_mask writes out); the bf16 dropout kernels
#      are compiled for sm_90 too.
# `auto` picks the kernel from triton_shaw.MIN_TRITON on; this is the evidence for that bound.
#   bash benchmarks/triton_versions.sh                 # 3.4.0 3.5.1 3.6.0 3.9.0
#   bash benchmarks/triton_versions.sh 3.7.1 3.8.0     # others
set -u
cd "$(dirname "$0")/.."
versions=${*:-3.4.0 3.5.1 3.6.0 3.9.0}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
check=$(cat <<'EOF'
import os
import torch, triton
from relpos.attention.eager import eager_attention
from relpos.attention.index import RelativeIndex
from relpos.attention import FusedDropout
from relpos.attention.triton_shaw import compile_kernels, triton_attention, triton_dropout_mask

if os.environ.get("TRITON_INTERPRET") == "1":
    torch.manual_seed(0)
    index = RelativeIndex(37, 45, 3, 3)
    q = torch.randn(1, 2, 37, 16, requires_grad=True)
    k, v = (torch.randn(1, 2, 45, 16, requires_grad=True) for _ in range(2))
    tables = [torch.randn(1, 7, 16, requires_grad=True) for _ in range(2)]
    options = dict(index=index, attn_mask=None, is_causal=True, scale=0.25)
    drop = FusedDropout(0.3, 5)
    for label, kernel_mask, eager_mask in (
        ("", None, None),
        (" with dropout", drop, triton_dropout_mask(drop, 1, 2, 37, 45, "cpu")),
    ):
        outs = [f(q, k, v, key_table=tables[0], value_table=tables[1], dropout_mask=m, **options)
                for f, m in ((triton_attention, kernel_mask), (eager_attention, eager_mask))]
        grads = [torch.autograd.grad(o.sum(), [q, k, v, *tables]) for o in outs]
        value = (outs[0] - outs[1]).abs().max().item()
        grad = max((a - b).abs().max().item() for a, b in zip(*grads))
        print(f"triton {triton.__version__}: interpreter vs eager{label}, max |diff| {value:.1e} "
              f"(output), {grad:.1e} (gradients)")
else:
    for dtype in (torch.bfloat16, torch.float32):
        kernels = compile_kernels(64, dtype, length=1000, arch=90)
        shared = {name: kernel.metadata.shared // 1024 for name, kernel in kernels.items()}
        assert all(kernel.asm["cubin"] for kernel in kernels.values())
        print(f"triton {triton.__version__}: sm_90 {dtype} compiled, shared KiB {shared}")
    kernels = compile_kernels(64, torch.bfloat16, length=1000, arch=90, dropout=True)
    assert all(kernel.asm["cubin"] for kernel in kernels.values())
    print(f"triton {triton.__version__}: sm_90 bf16 with dropout compiled")
EOF
)
for version in $versions; do
    venv="$work/venv-$version"
    python3 -m venv "$venv"
    if ! "$venv/bin/python" -m pip -q --disable-pip-version-check install torch==2.13.0 \
        "triton==$version" numpy >"$work/pip-$version.log" 2>&1; then
        echo "triton $version: not installable here"; tail -n 3 "$work/pip-$version.log"; continue
    fi
    PYTHONPATH=src "$venv/bin/python" -c "$check" 2>&1 | tail -n 3
    TRITON_INTERPRET=1 PYTHONPATH=src "$venv/bin/python" -c "$check" 2>&1 | tail -n 3
done
