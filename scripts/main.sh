#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the main job: relpos compare on its built-in default.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/relpos compare "$@"
