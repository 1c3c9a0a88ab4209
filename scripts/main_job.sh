#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the main job: `mmh benchmark mmh` on the built-in synthetic RGB-D data.
#   bash scripts/main_job.sh [--quick] [--seeds N] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh   # the environment setup.sh installs into (active virtualenv/conda environment, else .venv)
bash scripts/setup.sh
exec "$PY" -m mmh.cli benchmark mmh "$@"
