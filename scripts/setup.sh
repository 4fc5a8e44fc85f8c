#!/usr/bin/env bash
# Create .venv (if needed) and install relpos with everything its tests and demos use.
# Torch is pinned to the 2.13.0 CPU build here (pip finds it on this project's machines); set
# RELPOS_TORCH="torch==X" to choose another. pyproject.toml itself only asks for torch>=2.6.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    pip install "${RELPOS_TORCH:-torch==2.13.0}"
fi
# triton 3.6 matches the GPU machines' Triton; on the CPU it runs kernels in its interpreter.
pip install -e ".[dev]" "triton==3.6.0"
