#!/usr/bin/env bash
# Create .venv (if needed) and install relpos with everything its tests and demos use.
# Torch is pinned to 2.13.0 here (on this project's machines pip finds its CPU build on disk). Set
# RELPOS_TORCH to choose another, e.g. RELPOS_TORCH="torch --index-url https://download.pytorch.org/whl/cpu"
# for a CPU-only build elsewhere. pyproject.toml itself only asks for torch>=2.6.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    # shellcheck disable=SC2086  # RELPOS_TORCH may carry pip options, so it is split on purpose
    pip install ${RELPOS_TORCH:-torch==2.13.0}
fi
pip install -e ".[dev]"
# triton 3.6 matches the GPU machines' Triton; on the CPU it runs kernels in its interpreter.
# Where no wheel exists (macOS, say) the Triton tests skip themselves.
pip install "triton==3.6.0" || echo "setup: triton 3.6.0 is not installable here; Triton tests will skip" >&2
